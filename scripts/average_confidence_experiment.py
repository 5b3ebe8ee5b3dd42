#!/usr/bin/env python3
"""Can a learnt estimator keep what average confidence gets right and fix its top end? (issue 9)

``average_confidence`` (the model's own probability of its answer, exp(-nll_sum), nothing learnt)
has the lowest family-out median AEE of the study but under-estimates every slice at >= 0.5. This
offline experiment on the committed traces tries the obvious learnt repairs, each fitted with
benchmark-balanced weights on the study's 28 default-prompt slices:

* ``ac_logit``: logistic regression on logit(AC) alone (a two-parameter recalibration of AC);
* ``ac_logit+levels``: the same plus the entropy levels mean / max / q90 (standardized);
* ``ac_logit+nll``: plus nll_mean / nll_max;
* ``blend``: the mean of the default (``monotone_boost``) and ``ac_logit``;

next to ``average_confidence`` and the default itself, under leave one family out (each family
estimated by a model fitted on the other families). With ``--holdout`` it also prints each fitted
on all 28 slices and scored on the out-of-sample slices (reported once, after the family-out
comparison; nothing here is chosen on them). Its 90 % interval is in the study itself
(``StudyConfig.interval_baselines``). Prints tables; changes nothing that ships.

    .venv/bin/python scripts/average_confidence_experiment.py [--holdout]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.estimator.registry import make_estimator
from entropy_sentinel.estimator.transfer import MONOTONE_BOOST_FEATURES
from entropy_sentinel.evaluation.protocol import BenchmarkData, benchmark_data, fit_on, group_by_benchmark, read_traces
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"
HOLDOUT = ROOT / "data" / "traces" / "gemma-3-270m-holdout.jsonl.gz"
COLUMNS = {*MONOTONE_BOOST_FEATURES, "nll_max"}


def average_confidence(d: BenchmarkData) -> np.ndarray:
    return np.exp(-d.columns["nll_sum"])


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


Model = Callable[[BenchmarkData], np.ndarray]


def fit_ac_logistic(train: Sequence[BenchmarkData], extra: tuple[str, ...]) -> Model:
    def design(d: BenchmarkData) -> np.ndarray:
        return np.column_stack([logit(average_confidence(d))] + [d.columns[e] for e in extra])

    X = np.concatenate([design(d) for d in train])
    y = np.concatenate([d.y for d in train])
    w = np.concatenate([np.full(d.y.size, 1.0 / d.y.size) for d in train])
    scaler = StandardScaler().fit(X)
    model = LogisticRegression().fit(scaler.transform(X), y, sample_weight=w * len(w) / w.sum())
    return lambda d: model.predict_proba(scaler.transform(design(d)))[:, 1]


def fit_default(train: Sequence[BenchmarkData], data: Mapping[str, BenchmarkData]) -> Model:
    est = fit_on(make_estimator("monotone_boost"), data, [d.name for d in train])
    return lambda d: est.predict_proba(d.matrix(est.features))[:, 1]


def methods(data: Mapping[str, BenchmarkData]) -> dict[str, Callable[[Sequence[BenchmarkData]], Model]]:
    def blend(train: Sequence[BenchmarkData]) -> Model:
        a, b = fit_default(train, data), fit_ac_logistic(train, ())
        return lambda d: 0.5 * (a(d) + b(d))

    return {
        "average_confidence": lambda train: average_confidence,
        "monotone_boost (default)": lambda train: fit_default(train, data),
        "ac_logit": lambda train: fit_ac_logistic(train, ()),
        "ac_logit+levels": lambda train: fit_ac_logistic(train, ("mean", "max", "q90")),
        "ac_logit+nll": lambda train: fit_ac_logistic(train, ("nll_mean", "nll_max")),
        "blend": blend,
    }


def summary(estimates: Mapping[str, float], truth: Mapping[str, float]) -> str:
    names = sorted(estimates)
    est = np.array([estimates[n] for n in names])
    true = np.array([truth[n] for n in names])
    aee = np.abs(est - true)
    bands = [("< 0.1", true < 0.1), ("0.1-0.5", (true >= 0.1) & (true < 0.5)), (">= 0.5", true >= 0.5)]
    cells = [f"{np.median(aee):.3f}", f"{aee.mean():.3f}"]
    cells += [f"{np.median(aee[m]):.3f}" if m.any() else "-" for _, m in bands]
    cells.append(f"{spearmanr(est, true)[0]:.3f}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", action="store_true", help="also score on the out-of-sample slices")
    args = parser.parse_args()
    study = benchmark_data(group_by_benchmark(read_traces([STUDY])), COLUMNS, "topk")
    default = {n: d for n, d in study.items() if "@" not in n}  # the study's claims: packaged prompts
    truth = {n: float(d.y.mean()) for n, d in default.items()}
    head = (
        "| estimator | median AEE | mean AEE | median AEE < 0.1 | 0.1-0.5 | >= 0.5 | Spearman rho |\n"
        "|---|---|---|---|---|---|---|"
    )
    families = sorted({family_of(n) for n in default})
    print(f"leave one family out, {len(default)} slices in {len(families)} families\n{head}", flush=True)
    for name, make in methods(default).items():
        estimates: dict[str, float] = {}
        for fam in families:
            model = make([d for n, d in default.items() if family_of(n) != fam])
            estimates |= {n: float(model(d).mean()) for n, d in default.items() if family_of(n) == fam}
        print(f"| {name} | {summary(estimates, truth)} |", flush=True)
    if args.holdout:
        held = benchmark_data(group_by_benchmark(read_traces([HOLDOUT])), COLUMNS, "topk")
        truth_h = {n: float(d.y.mean()) for n, d in held.items()}
        print(f"\nfitted on the {len(default)} study slices, scored on {len(held)} out-of-sample slices\n{head}")
        for name, make in methods(default).items():
            model = make(list(default.values()))
            print(f"| {name} | {summary({n: float(model(d).mean()) for n, d in held.items()}, truth_h)} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
