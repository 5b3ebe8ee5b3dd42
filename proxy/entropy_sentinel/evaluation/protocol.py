"""The paper's evaluation protocol: train on k benchmarks, estimate accuracy on the others.

For every k in ``ks`` and every combination of k training benchmarks (at most ``max_combinations``
of them per k, drawn deterministically from ``seed`` when there are more), each estimator is fit on
the pooled training responses and predicts P(correct) for every response of each held-out
benchmark. Per held-out benchmark: the estimate Â = mean P, its true accuracy A, AEE = |Â - A|
and the per-response AUROC / ECE; per composition: Spearman ρ of Â vs A across its held-out
benchmarks and AUROC / ECE of the pooled held-out responses. Rows are tidy dicts, one per
(estimator, composition, held-out benchmark); :func:`summarize` reduces them per (estimator, k).

Compositions run in a process pool (``n_jobs``); each worker holds the feature columns once (sent
by the pool initializer) and caps BLAS / OpenMP at one thread so two workers use two cores.
Results (all but the ``fit_seconds`` timing column) do not depend on ``n_jobs`` or on completion
order: estimators carry their own seeds and rows are sorted before they are returned.
"""

from __future__ import annotations

import inspect
import itertools
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from entropy_sentinel.estimator.estimators import make_estimator
from entropy_sentinel.stats import scores as metrics
from entropy_sentinel.traces.format import Trace, group_by_benchmark, read_traces, trace_features

__all__ = [
    "BenchmarkData",
    "ProtocolResult",
    "benchmark_data",
    "fit_on",
    "group_by_benchmark",
    "read_traces",
    "run_protocol",
    "summarize",
    "trace_features",
    "training_compositions",
]

@dataclass(frozen=True)
class BenchmarkData:
    """One benchmark's labels and the feature columns any estimator asks for."""

    name: str
    y: np.ndarray
    columns: dict[str, np.ndarray] = field(repr=False)

    def matrix(self, features: Sequence[str]) -> np.ndarray:
        return np.column_stack([self.columns[f] for f in features]) if features else np.empty((self.y.size, 0))


def benchmark_data(
    traces_by_benchmark: Mapping[str, Sequence[Trace]], features: Iterable[str], variant: str | None = None
) -> dict[str, BenchmarkData]:
    """Column-wise feature arrays per benchmark; a feature absent from a whole benchmark is an error."""
    names = sorted(set(features))
    out: dict[str, BenchmarkData] = {}
    for bench, traces in traces_by_benchmark.items():
        if not traces:
            raise ValueError(f"benchmark {bench!r} has no traces")
        rows = [trace_features(t, variant) for t in traces]
        y = np.array([int(t["label"]) for t in traces], dtype=np.int64)
        columns = {}
        for name in names:
            col = np.array([float(r[name]) if r.get(name) is not None else np.nan for r in rows])
            if np.isnan(col).all():
                raise ValueError(f"feature {name!r} is missing from every trace of benchmark {bench!r}")
            columns[name] = col
        out[bench] = BenchmarkData(bench, y, columns)
    return out


def training_compositions(
    benchmarks: Sequence[str], ks: Iterable[int] = (1, 2, 3, 4), max_combinations: int | None = None, seed: int = 0
) -> list[tuple[str, ...]]:
    """Every k-subset of ``benchmarks`` (sorted) for each k that leaves one to hold out.

    With more than ``max_combinations`` subsets for some k, that many are drawn without
    replacement by ``numpy.random.default_rng([seed, k])`` and kept in lexicographic order.
    """
    names = sorted(benchmarks)
    out: list[tuple[str, ...]] = []
    for k in ks:
        if not 1 <= k < len(names):
            continue
        combos = list(itertools.combinations(names, k))
        if max_combinations is not None and len(combos) > max_combinations:
            rng = np.random.default_rng([seed, k])
            picked = np.sort(rng.choice(len(combos), size=max_combinations, replace=False))
            combos = [combos[i] for i in picked]
        out.extend(combos)
    return out


@dataclass
class ProtocolResult:
    """Tidy per-(estimator, composition, held-out benchmark) rows, their summary, and reliability.

    ``reliability[(estimator, k)]`` pools the held-out responses of every composition of that k.
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    reliability: dict[tuple[str, int], metrics.ReliabilityBins]


# --- workers -----------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    _STATE.clear()
    _STATE.update(state)


def _accepts_groups(estimator: Any) -> bool:
    try:
        return "groups" in inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False


def fit_on(template: Any, data: Mapping[str, BenchmarkData], train: Sequence[str]) -> Any:
    """A clone of ``template`` fitted on the pooled responses of the ``train`` benchmarks (their
    names as ``groups`` when its ``fit`` takes them)."""
    features = tuple(template.features)
    est = clone(template)
    X = np.vstack([data[b].matrix(features) for b in train])
    y = np.concatenate([data[b].y for b in train])
    if _accepts_groups(est):
        est.fit(X, y, groups=np.concatenate([np.full(data[b].y.size, b, dtype=object) for b in train]))
    else:
        est.fit(X, y)
    return est


def _evaluate(task: tuple[int, tuple[str, ...]]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    return _evaluate_with(_STATE, task)


def _evaluate_with(
    state: Mapping[str, Any], task: tuple[int, tuple[str, ...]]
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Fit every estimator on one composition; rows plus per-estimator reliability sums."""
    index, train = task
    data: dict[str, BenchmarkData] = state["data"]
    estimators: dict[str, Any] = state["estimators"]
    bins: int = state["bins"]
    heldout = [b for b in data if b not in train]
    rows: list[dict[str, Any]] = []
    sums: dict[str, np.ndarray] = {}
    for name, template in estimators.items():
        start = time.perf_counter()
        est = fit_on(template, data, train)
        fit_seconds = time.perf_counter() - start
        features = tuple(template.features)
        preds = {b: est.predict_proba(data[b].matrix(features))[:, 1] for b in heldout}
        est_acc = np.array([preds[b].mean() for b in heldout])
        true_acc = np.array([data[b].y.mean() for b in heldout])
        pooled_p = np.concatenate([preds[b] for b in heldout])
        pooled_y = np.concatenate([data[b].y for b in heldout])
        rel = metrics.reliability_bins(pooled_p, pooled_y, bins)
        sums[name] = np.stack(
            [rel.count, np.nan_to_num(rel.confidence) * rel.count, np.nan_to_num(rel.accuracy) * rel.count]
        )
        rho = metrics.spearman(est_acc, true_acc) if len(heldout) >= 2 else math.nan
        pooled_auroc = metrics.auroc(pooled_p, pooled_y)
        pooled_ece = rel.ece
        for b, e, a in zip(heldout, est_acc, true_acc, strict=True):
            rows.append(
                {
                    "estimator": name,
                    "k": len(train),
                    "composition": index,
                    "train": "+".join(train),
                    "heldout": b,
                    "n": int(data[b].y.size),
                    "est_acc": float(e),
                    "true_acc": float(a),
                    "error": float(e - a),
                    "aee": float(abs(e - a)),
                    "auroc": metrics.auroc(preds[b], data[b].y),
                    "ece": metrics.ece(preds[b], data[b].y, bins),
                    "spearman": rho,
                    "pooled_auroc": pooled_auroc,
                    "pooled_ece": pooled_ece,
                    "fit_seconds": fit_seconds,
                }
            )
    return rows, sums


# --- driver ------------------------------------------------------------------------------------


def run_protocol(
    traces: Mapping[str, Sequence[Trace]] | Iterable[Trace],
    estimators: Mapping[str, Any] | Sequence[str],
    *,
    ks: Iterable[int] = (1, 2, 3, 4),
    max_combinations: int | None = None,
    variant: str | None = None,
    n_jobs: int = 2,
    seed: int = 0,
    bins: int = 10,
    progress: bool = True,
) -> ProtocolResult:
    """Run the leave-benchmarks-out protocol.

    ``traces``: traces grouped by benchmark, or a flat iterable of traces to group.
    ``estimators``: unfitted estimators by display name (each with a ``features`` attribute naming
    its columns; cloned per composition), or registry names for :func:`make_estimator` defaults.
    ``variant``: entropy variant whose statistics to use (None: each trace's own ``features``).
    """
    grouped = dict(traces) if isinstance(traces, Mapping) else group_by_benchmark(traces)
    if isinstance(estimators, Mapping):
        templates = dict(estimators)
    else:
        templates = {name: make_estimator(name) for name in estimators}
    if not templates:
        raise ValueError("no estimators to evaluate")
    needed = {f for est in templates.values() for f in est.features}
    data = benchmark_data(grouped, needed, variant)
    combos = training_compositions(list(data), ks, max_combinations, seed)
    if not combos:
        raise ValueError(f"no training compositions: {len(data)} benchmarks and ks={tuple(ks)}")
    tasks = list(enumerate(combos))
    state = {"data": data, "estimators": templates, "bins": bins}

    from tqdm import tqdm

    results: list[tuple[list[dict[str, Any]], dict[str, np.ndarray]]] = []
    bar = tqdm(total=len(tasks), desc="compositions", unit="fit", file=sys.stderr, disable=not progress)
    try:
        if n_jobs <= 1:
            for task in tasks:
                results.append(_evaluate_with(state, task))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=n_jobs, initializer=_init_worker, initargs=(state,)) as pool:
                futures = [pool.submit(_evaluate, task) for task in tasks]
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update()
    finally:
        bar.close()

    order = {name: i for i, name in enumerate(templates)}
    rows = [row for chunk, _ in results for row in chunk]
    rows.sort(key=lambda r: (order[r["estimator"]], r["k"], r["composition"], r["heldout"]))
    reliability = _pool_reliability(results, bins, order)
    return ProtocolResult(rows, summarize(rows, order), reliability)


def _pool_reliability(
    results: list[tuple[list[dict[str, Any]], dict[str, np.ndarray]]], bins: int, order: Mapping[str, int]
) -> dict[tuple[str, int], metrics.ReliabilityBins]:
    totals: dict[tuple[str, int], np.ndarray] = {}
    for chunk, sums in results:
        if not chunk:
            continue
        k = chunk[0]["k"]
        for name, s in sums.items():
            key = (name, k)
            totals[key] = totals[key] + s if key in totals else s.copy()
    out = {}
    for key in sorted(totals, key=lambda kk: (order[kk[0]], kk[1])):
        count, sum_p, sum_y = totals[key]
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(count > 0, sum_p / count, np.nan)
            acc = np.where(count > 0, sum_y / count, np.nan)
        out[key] = metrics.ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), count, conf, acc)
    return out


def _nan_stat(fn: Any, values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(fn(v)) if v.size else math.nan


def summarize(rows: Sequence[Mapping[str, Any]], order: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Per (estimator, k): median / IQR / mean AEE over held-out benchmarks, median Spearman over
    compositions, mean per-benchmark and pooled AUROC, mean pooled ECE. nan entries are skipped."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["estimator"], int(row["k"])), []).append(row)
    rank = order or {}
    out = []
    for (name, k), rs in sorted(groups.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0][0], kv[0][1])):
        per_comp: dict[int, Mapping[str, Any]] = {}
        for r in rs:
            per_comp.setdefault(int(r["composition"]), r)
        aees = [r["aee"] for r in rs]
        comps = list(per_comp.values())
        out.append(
            {
                "estimator": name,
                "k": k,
                "n_compositions": len(per_comp),
                "n_heldout": len(rs),
                "median_aee": _nan_stat(np.median, aees),
                "aee_q25": _nan_stat(lambda v: np.quantile(v, 0.25), aees),
                "aee_q75": _nan_stat(lambda v: np.quantile(v, 0.75), aees),
                "mean_aee": _nan_stat(np.mean, aees),
                "median_spearman": _nan_stat(np.median, [c["spearman"] for c in comps]),
                "mean_auroc": _nan_stat(np.mean, [r["auroc"] for r in rs]),
                "mean_pooled_auroc": _nan_stat(np.mean, [c["pooled_auroc"] for c in comps]),
                "mean_ece": _nan_stat(np.mean, [c["pooled_ece"] for c in comps]),
                "mean_fit_seconds": _nan_stat(np.mean, [c["fit_seconds"] for c in comps]),
            }
        )
    return out
