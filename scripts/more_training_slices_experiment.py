#!/usr/bin/env python3
"""Does training on more slices help on tasks nobody has seen? (issue 9)

The shipped recipe (``monotone_boost``) fitted on the study traces as shipped (default prompts and
``@alt-qa``), on the default prompts only, and on the study plus the first out-of-sample set
(``gemma-3-270m-holdout``), each scored on the fresh user-style slices (``gemma-3-270m-fresh``), which
none of them saw. Prints one table (median AEE, mean AEE, median AEE < 0.1 / 0.1-0.5 / >= 0.5,
Spearman rho); changes nothing that ships.

    .venv/bin/python scripts/more_training_slices_experiment.py
"""

from __future__ import annotations

import sys

from average_confidence_experiment import COLUMNS, HOLDOUT, ROOT, STUDY, fit_default, summary
from entropy_sentinel.evaluation.protocol import benchmark_data, group_by_benchmark, read_traces

FRESH = ROOT / "data" / "traces" / "gemma-3-270m-fresh.jsonl.gz"


def main() -> None:
    def load(path):
        return benchmark_data(group_by_benchmark(read_traces([path])), COLUMNS, "topk")

    study, held, fresh = load(STUDY), load(HOLDOUT), load(FRESH)
    truth = {n: float(d.y.mean()) for n, d in fresh.items()}
    everything = {**study, **held, **fresh}
    pools = {
        "study, default prompts only": {n: d for n, d in study.items() if "@" not in n},
        "study as shipped (+ @alt-qa)": study,
        "study + first out-of-sample set": {**study, **held},
    }
    print(f"scored on the {len(fresh)} fresh slices")
    print("| trained on | median AEE | mean AEE | < 0.1 | 0.1-0.5 | >= 0.5 | Spearman rho |")
    print("|---|---|---|---|---|---|---|")
    for name, pool in pools.items():
        model = fit_default(list(pool.values()), everything)
        estimates = {n: float(model(d).mean()) for n, d in fresh.items()}
        print(f"| {name} | {summary(estimates, truth)} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
