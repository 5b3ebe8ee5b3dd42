#!/usr/bin/env python3
"""Cost of each estimator on the committed study traces: training time, and the latency of scoring
one response (what the proxy adds, in a worker thread, at the end of each response).

    .venv/bin/python bench/scoring.py [--estimators monotone_boost,transfer_logistic,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from entropy_sentinel.estimator.estimators import ESTIMATORS
from entropy_sentinel.estimator.scorer import ArtifactScorer
from entropy_sentinel.evaluation.protocol import read_traces
from entropy_sentinel.evaluation.training import train

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces" / "gemma-3-270m.jsonl.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    row = read_traces(TRACES)[0]["features_by_variant"]
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.estimators.split(","):
            artifact = Path(tmp) / f"{method}.skops"
            t0 = time.perf_counter()
            train([TRACES], artifact, method=method, progress=False)
            trained = time.perf_counter() - t0
            scorer = ArtifactScorer.load(artifact)
            scorer([row])  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.calls):
                scorer([row])
            per_call = (time.perf_counter() - t0) / args.calls
            print(f"{method:>18}: train (with leave-one-benchmark-out validation) {trained:6.1f} s, "
                  f"score one response {per_call * 1e3:6.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
