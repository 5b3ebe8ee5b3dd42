"""The leave-benchmarks-out protocol on a small synthetic trace set, and its written report."""

import json
import math
from itertools import combinations

import numpy as np
import pytest
from entropy_sentinel.estimator.estimators import ATC, LogisticEstimator, TransferLogistic
from entropy_sentinel.evaluation.protocol import (
    group_by_benchmark,
    read_traces,
    run_protocol,
    trace_features,
    training_compositions,
)
from entropy_sentinel.evaluation.report_eval import write_evaluation
from entropy_sentinel.signal.features import FEATURE_NAMES
from sklearn.base import BaseEstimator, ClassifierMixin

ACCURACY = {"arc": 0.8, "gsm8k": 0.35, "math": 0.2, "mmlu": 0.65, "truthfulqa": 0.5}
N_PER_BENCHMARK = 60


class Oracle(ClassifierMixin, BaseEstimator):
    """Perfect information: its one column is the label itself, so its estimates are exact."""

    def __init__(self, features=("oracle",)):
        self.features = features

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])


def make_traces(seed: int = 0) -> list[dict]:
    """Exactly round(acc * n) correct responses per benchmark; entropy lower when correct."""
    rng = np.random.default_rng(seed)
    traces = []
    for bench, acc in ACCURACY.items():
        labels = np.zeros(N_PER_BENCHMARK, dtype=int)
        labels[: round(acc * N_PER_BENCHMARK)] = 1
        rng.shuffle(labels)
        for i, label in enumerate(labels):
            level = float(np.exp(rng.normal(-0.8 * label, 0.5)))
            feats = {name: level * float(np.exp(rng.normal(0, 0.2))) for name in FEATURE_NAMES}
            feats.update(oracle=float(label), topk_mass_mean=1 / (1 + level))
            renorm = {name: 2 * v for name, v in feats.items() if name in ("mean", "max", "q50")}
            traces.append(
                {
                    "request_id": f"{bench}-{i}",
                    "benchmark": bench,
                    "item_id": str(i),
                    "slice": {"benchmark": bench},
                    "model": "synthetic",
                    "entropy_variant": "topk",
                    "k": 20,
                    "features": feats,
                    "features_by_variant": {"topk": dict(feats), "renormalized": renorm},
                    "label": int(label),
                }
            )
    return traces


@pytest.fixture(scope="module")
def traces():
    return make_traces()


def n_rows(n_benchmarks: int, per_k: dict[int, int]) -> int:
    """Compositions x held-out benchmarks."""
    return sum(c * (n_benchmarks - k) for k, c in per_k.items())


def test_compositions_all_and_capped():
    names = list(ACCURACY)
    every = training_compositions(names)
    assert len(every) == 5 + 10 + 10 + 5
    assert every[:5] == [(n,) for n in sorted(names)]
    capped = training_compositions(names, max_combinations=3, seed=7)
    assert [len(c) for c in capped] == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert capped == training_compositions(list(reversed(names)), max_combinations=3, seed=7)  # deterministic
    assert set(capped) <= set(every)
    for k in (1, 2, 3):
        drawn = [c for c in capped if len(c) == k]
        assert drawn == sorted(drawn)
    assert training_compositions(names, ks=(4, 5, 9)) == list(combinations(sorted(names), 4))  # k=5 holds none out


def test_protocol_rows_oracle_and_summary(traces):
    result = run_protocol(
        traces,
        {"oracle": Oracle(), "atc": ATC(), "logistic": LogisticEstimator(features=("mean", "max", "q90"))},
        n_jobs=1,
        progress=False,
    )
    per_estimator = n_rows(5, {1: 5, 2: 10, 3: 10, 4: 5})
    assert per_estimator == 75
    assert len(result.rows) == 3 * per_estimator
    oracle = [r for r in result.rows if r["estimator"] == "oracle"]
    assert len(oracle) == per_estimator
    for r in oracle:
        assert r["aee"] == pytest.approx(0.0, abs=1e-12)
        assert r["true_acc"] == pytest.approx(ACCURACY[r["heldout"]], abs=1 / N_PER_BENCHMARK)
        assert r["heldout"] not in r["train"].split("+")
        assert r["auroc"] == 1.0 and r["ece"] == 0.0
        if r["k"] <= 3:  # at least two held-out benchmarks of distinct accuracy
            assert r["spearman"] == pytest.approx(1.0)
        else:
            assert math.isnan(r["spearman"])
    # every (composition, held-out) pair appears once per estimator
    assert len({(r["composition"], r["heldout"]) for r in oracle}) == per_estimator
    summary = {(s["estimator"], s["k"]): s for s in result.summary}
    assert len(summary) == 3 * 4
    assert [s["estimator"] for s in result.summary[:4]] == ["oracle"] * 4  # the caller's order
    assert summary[("oracle", 2)]["median_aee"] == pytest.approx(0.0, abs=1e-12)
    assert summary[("oracle", 2)]["n_compositions"] == 10 and summary[("oracle", 2)]["n_heldout"] == 30
    # a real estimator on this easy signal: ranks benchmarks right, errs but not absurdly
    assert summary[("logistic", 3)]["median_spearman"] > 0.5
    assert 0 < summary[("atc", 4)]["median_aee"] < 0.3
    assert summary[("logistic", 1)]["mean_auroc"] > 0.7
    rel = result.reliability[("oracle", 4)]
    assert rel.count.sum() == 5 * N_PER_BENCHMARK and rel.ece == 0.0


def test_parallel_run_matches_serial_and_caps_combinations(traces):
    estimators = {"atc": ATC(), "transfer_logistic": TransferLogistic(C_grid=(0.1, 1.0))}
    kwargs = {"ks": (1, 2, 3), "max_combinations": 2, "seed": 3, "progress": False}
    serial = run_protocol(group_by_benchmark(traces), estimators, n_jobs=1, **kwargs)
    parallel = run_protocol(traces, estimators, n_jobs=2, **kwargs)
    assert len(serial.rows) == 2 * n_rows(5, {1: 2, 2: 2, 3: 2})

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "fit_seconds"} for r in rows]

    assert strip(serial.rows) == strip(parallel.rows)


def test_entropy_variant_selects_features(traces):
    t = traces[0]
    assert trace_features(t)["mean"] == t["features"]["mean"]
    renorm = trace_features(t, "renormalized")
    assert renorm["mean"] == 2 * t["features"]["mean"]
    assert renorm["nll_mean"] == t["features"]["nll_mean"]  # variant-free names fall back
    with pytest.raises(KeyError):
        trace_features(t, "tail_uniform")
    a = run_protocol(traces, {"atc": ATC()}, ks=(1,), variant="renormalized", n_jobs=1, progress=False)
    b = run_protocol(traces, {"atc": ATC()}, ks=(1,), n_jobs=1, progress=False)
    # ATC is invariant to scaling its statistic by 2: same estimates either way
    assert [r["est_acc"] for r in a.rows] == [r["est_acc"] for r in b.rows]
    with pytest.raises(ValueError, match="missing from every trace"):
        run_protocol(traces, {"atc": ATC(features=("nope",))}, n_jobs=1, progress=False)


def test_read_traces_and_write_evaluation(traces, tmp_path):
    path = tmp_path / "traces.jsonl"
    path.write_text("\n".join(json.dumps(t) for t in traces[:130]) + "\n\n", encoding="utf-8")
    loaded = read_traces(path)
    assert loaded == traces[:130]
    assert list(group_by_benchmark(loaded)) == ["arc", "gsm8k", "math"]

    result = run_protocol(
        traces, {"oracle": Oracle(), "atc": ATC()}, ks=(1, 2), max_combinations=2, n_jobs=1, progress=False
    )
    paths = write_evaluation(result.rows, result.summary, tmp_path / "eval", reliability=result.reliability)
    assert set(paths) == {"rows_csv", "summary_csv", "summary_md", "aee_vs_k", "est_vs_true", "reliability"}
    for p in paths.values():
        assert p.stat().st_size > 0
    assert paths["aee_vs_k"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = paths["rows_csv"].read_text().splitlines()
    assert len(lines) == 1 + len(result.rows) and lines[0].startswith("estimator,k,composition,train,heldout")
    md = paths["summary_md"].read_text()
    assert "| oracle | 1 | 2 | 0.000 |" in md and "Median AEE per held-out benchmark at k = 2" in md


def test_registry_names_and_degenerate_inputs(traces):
    result = run_protocol(traces, ["atc", "logistic"], ks=(4,), n_jobs=1, progress=False)
    assert [s["estimator"] for s in result.summary] == ["atc", "logistic"]
    assert len(result.rows) == 2 * 5  # 5 compositions of 4, one held out each
    with pytest.raises(ValueError, match="no training compositions"):
        run_protocol(traces, ["atc"], ks=(5,), n_jobs=1, progress=False)
    with pytest.raises(ValueError, match="no estimators"):
        run_protocol(traces, {}, n_jobs=1, progress=False)
