"""``entropy-sentinel train``: fit an estimator on labelled traces, validate it across benchmarks,
write a skops artifact that records what it was trained on and how well it transferred."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.estimator.artifact import save_artifact
from entropy_sentinel.estimator.estimators import make_estimator
from entropy_sentinel.evaluation.protocol import benchmark_data, fit_on, group_by_benchmark, read_traces
from entropy_sentinel.evaluation.study_shift import holdout_predictions
from entropy_sentinel.stats.scores import auroc, spearman

#: the estimator `train` fits unless told otherwise (see docs/results.md for the study behind it)
DEFAULT_METHOD = "monotone_boost"


#: how the shipped artifact's transfer error is validated, and the τ shape the proxy applies to it
#: (chosen by the study: docs/results.md, "Intervals under shift")
DEFAULT_HOLDOUT = "family"
DEFAULT_TAU_SHAPE = "binomial"


def validate_across_benchmarks(
    grouped: dict[str, list[dict[str, Any]]],
    estimator: Any,
    variant: str,
    progress: bool = True,
    holdout: str = DEFAULT_HOLDOUT,
    tau_shape: str = DEFAULT_TAU_SHAPE,
) -> dict[str, Any]:
    """Each benchmark estimated by a model that never saw it (``holdout="slice"``) or never saw its
    whole task family (``"family"``, :func:`~entropy_sentinel.benchmarks.registry.family_of`):
    the errors the proxy's τ is computed from (in ``tau_shape``)."""
    if len(grouped) < 2:
        return {"note": "one benchmark only: no cross-benchmark validation possible"}
    data = benchmark_data(grouped, tuple(estimator.features), variant)
    if holdout == "family" and len({family_of(b) for b in data}) < 2:
        holdout = "slice"  # one family only: hold out benchmarks instead
    preds = holdout_predictions(clone(estimator), data, family_of, holdout)
    per = {}
    for b, p in preds.items():
        y = data[b].y
        per[b] = {
            "est_acc": float(p.mean()),
            "true_acc": float(y.mean()),
            "aee": float(abs(p.mean() - y.mean())),
            "auroc": auroc(p, y) if 0 < y.mean() < 1 else float("nan"),
            "family": family_of(b),
        }
    est = np.array([v["est_acc"] for v in per.values()])
    true = np.array([v["true_acc"] for v in per.values()])
    return {
        "protocol": f"leave-one-{'family' if holdout == 'family' else 'benchmark'}-out",
        "tau_shape": tau_shape,
        "per_benchmark": per,
        "median_aee": float(np.median(np.abs(est - true))),
        "spearman": float(spearman(est, true)) if len(per) > 2 else float("nan"),
        "mean_auroc": _nanmean([v["auroc"] for v in per.values()]),
    }


def _nanmean(values: Sequence[float]) -> float:
    """The mean of the values that are not nan; nan (without numpy's warning) when none is: a
    benchmark all right or all wrong has no AUROC, and a small calibration budget can give only those."""
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def study_record(results_path: str | Path, trace_paths: Sequence[str | Path], method: str) -> dict[str, Any]:
    """What an artifact records of the study behind it: the verdict, and the traces it ran on.

    Refuses a study run on other traces, or one whose default estimator (the one its verdict, its
    nested selection and its intervals are about) is not ``method``. Whether the default met each
    target is in the verdict itself.
    """
    results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in trace_paths]
    if results.get("traces_sha256") not in digests:
        raise ValueError(f"{results_path} was computed on other traces than {', '.join(map(str, trace_paths))}")
    verdict = results["verdict"]
    if verdict["estimator"] != method:
        raise ValueError(f"the study's default estimator is {verdict['estimator']!r}, not {method!r}")
    return {
        "results": str(results_path),
        "traces_sha256": results["traces_sha256"],
        "verdict": verdict,
        "median_aee": {name: o["median_aee"] for name, o in results["overall"].items()},
        "median_aee_family_holdout": {name: o["median_aee"] for name, o in results["holdout"]["family"].items()},
    }


def train(
    trace_paths: Sequence[str | Path],
    out: str | Path,
    method: str = DEFAULT_METHOD,
    variant: str = "topk",
    params: dict[str, Any] | None = None,
    progress: bool = True,
    extra_metadata: dict[str, Any] | None = None,
    holdout: str = DEFAULT_HOLDOUT,
    tau_shape: str = DEFAULT_TAU_SHAPE,
) -> dict[str, Any]:
    """Fit ``method`` on every trace, save the artifact; returns its metadata."""
    traces = [t for t in read_traces(trace_paths) if t.get("label") is not None]
    if not traces:
        raise ValueError("no labelled traces in " + ", ".join(map(str, trace_paths)))
    grouped = group_by_benchmark(traces)
    estimator = make_estimator(method, **(params or {}))
    features = tuple(estimator.features)
    data = benchmark_data(grouped, features, variant)
    validation = validate_across_benchmarks(grouped, estimator, variant, progress, holdout, tau_shape)
    estimator = fit_on(estimator, data, list(data))
    models = Counter(str(t.get("model")) for t in traces)
    ks = [t["k"] for t in traces if isinstance(t.get("k"), int)]
    metadata = {
        "estimator": method,
        "params": estimator.get_params(),
        "features": list(features),
        "entropy_variant": variant,
        "k": min(ks) if ks else None,
        "model": models.most_common(1)[0][0],
        "training_benchmarks": {name: {"n": int(d.y.size), "accuracy": float(d.y.mean())} for name, d in data.items()},
        "validation": validation,
        **(extra_metadata or {}),
    }
    save_artifact(out, estimator, metadata)
    return metadata
