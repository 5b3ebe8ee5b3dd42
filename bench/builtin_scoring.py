#!/usr/bin/env python3
"""The shipped estimator's scoring cost: scikit-learn's own predict (as the proxy called it before,
inside ``threadpool_limits``) against the compiled trees (``estimator/compiled_trees.py``), measured
in the same run on the same rows; prints medians and the ratio for batches of 1, 8 and 64 responses.

    .venv/bin/python bench/builtin_scoring.py [--calls 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from entropy_sentinel.estimator.compiled_trees import compiled_for
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, ArtifactScorer
from entropy_sentinel.evaluation.protocol import read_traces
from threadpoolctl import threadpool_limits

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces" / "gemma-3-270m.jsonl.gz"


def _median_seconds(fn, calls: int) -> float:
    fn()  # warm
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    scorer = ArtifactScorer.load(BUILTIN_ARTIFACT)
    estimator = scorer.estimator
    traces = read_traces(TRACES)[:64]
    X_all = np.asarray([[t["features_by_variant"][scorer.variant][f] for f in scorer.features] for t in traces])
    compiled = compiled_for(estimator.model_)
    assert compiled is not None

    def sklearn_path(X: np.ndarray) -> np.ndarray:
        with threadpool_limits(limits=estimator.n_threads, user_api="openmp"):
            return estimator.model_.predict_proba(X)[:, 1]

    print(f"{'batch':>6} {'scikit-learn ms':>16} {'compiled ms':>12} {'ratio':>8} {'max |diff|':>11}")
    for batch in (1, 8, 64):
        X = X_all[:batch]
        base = _median_seconds(lambda X=X: sklearn_path(X), args.calls)
        fast = _median_seconds(lambda X=X: compiled.predict_proba1(X), args.calls)
        diff = float(np.max(np.abs(sklearn_path(X) - compiled.predict_proba1(X))))
        print(f"{batch:>6} {base * 1e3:>16.3f} {fast * 1e3:>12.3f} {base / fast:>7.1f}x {diff:>11.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
