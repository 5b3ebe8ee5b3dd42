"""The study's shift sections (hold-outs, interval coverage, bootstrap verdict, nested selection,
prompt shift), the binomial τ shape as the monitor uses it, and slices keyed by prompt set.

Synthetic :class:`BenchmarkData` only, with a fake estimator that records what it was fitted on
and refuses to predict a slice it was trained on."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
from entropy_sentinel.benchmarks import registry as benchmark_registry
from entropy_sentinel.evaluation.protocol import BenchmarkData, fit_on
from entropy_sentinel.evaluation.study_shift import (
    bootstrap_verdict,
    holdout_estimates,
    holdout_predictions,
    interval_coverage,
    nested_selection,
    prompt_shift,
)
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.stats.intervals import (
    TAU_SHAPES,
    TransferSpread,
    label_free,
    predictive_tau,
    spread_from_errors,
    transfer_tau,
    z_value,
)
from entropy_sentinel.traces.format import group_by_benchmark, slice_name
from sklearn.base import BaseEstimator


def family(b: str) -> str:
    return b.split("_")[0]


class Recorder(BaseEstimator):
    """Predicts P(correct) = column ``p`` + ``bias`` (clipped); records the benchmarks (``groups``)
    of every fit in :attr:`fits` and raises if asked to predict a row whose ``id`` it was fitted on."""

    fits: ClassVar[list[tuple[str, tuple[str, ...]]]] = []

    def __init__(self, features: tuple[str, ...] = ("p", "id"), bias: float = 0.0, tag: str = "r") -> None:
        self.features = features
        self.bias = bias
        self.tag = tag

    def fit(self, X, y, groups=None):
        X = np.asarray(X, dtype=float)
        self.seen_ids_ = set(np.unique(X[:, list(self.features).index("id")]).tolist())
        self.groups_ = tuple(sorted(set(groups))) if groups is not None else None
        self.classes_ = np.array([0, 1])
        Recorder.fits.append((self.tag, self.groups_))
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=float)
        ids = X[:, list(self.features).index("id")]
        leaked = sorted(set(ids.tolist()) & self.seen_ids_)
        if leaked:
            raise AssertionError(f"predicting rows of slices {leaked} this model was fitted on")
        p = np.clip(X[:, list(self.features).index("p")] + self.bias, 0.0, 1.0)
        return np.column_stack([1.0 - p, p])


@pytest.fixture(autouse=True)
def _clear_fits():
    Recorder.fits.clear()
    yield
    Recorder.fits.clear()


def bench(name: str, idx: int, acc: float, p, n: int = 200, seed: int = 0) -> BenchmarkData:
    """``n`` responses, ``round(acc * n)`` of them correct; column ``p`` (a scalar: constant) and
    column ``id`` = ``idx`` (the slice's identity for the leak check)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[: round(acc * n)] = 1
    rng.shuffle(y)
    p_col = np.full(n, float(p)) if np.isscalar(p) else np.asarray(p, dtype=float)
    return BenchmarkData(name, y, {"p": p_col, "id": np.full(n, float(idx))})


def six_slices() -> dict[str, BenchmarkData]:
    """Three families of two slices; ``p`` is varied within each slice."""
    rng = np.random.default_rng(7)
    spec = [  # name, accuracy, centre of p
        ("a_1", 0.30, 0.32),
        ("a_2", 0.55, 0.60),
        ("b_1", 0.00, 0.005),  # estimate near 0: the interval's lower bound clips at 0
        ("b_2", 0.80, 0.50),  # estimated 0.3 too low: the one slice no interval should cover
        ("c_1", 0.50, 0.46),
        ("c_2", 0.97, 0.95),
    ]
    out = {}
    for i, (name, acc, centre) in enumerate(spec):
        spread = 0.002 if centre < 0.01 else 0.05
        p = np.clip(centre + rng.uniform(-spread, spread, 200), 0.0, 1.0)
        out[name] = bench(name, i, acc, p, seed=i)
    return out


# --- holdout_predictions / holdout_estimates ------------------------------------------------------


def test_slice_holdout_fits_every_other_slice_and_never_the_held_out_one():
    data = six_slices()
    preds = holdout_predictions(Recorder(), data, family, "slice", n_jobs=1)
    assert list(preds) == list(data)
    names = list(data)
    assert [g for _, g in Recorder.fits] == [tuple(sorted(o for o in names if o != b)) for b in names]
    for b in names:  # the fake passes its column through: the predictions are that slice's own rows
        np.testing.assert_array_equal(preds[b], data[b].columns["p"])


def test_family_holdout_fits_exactly_the_other_families():
    data = six_slices()
    holdout_predictions(Recorder(), data, family, "family", n_jobs=1)
    assert [g for _, g in Recorder.fits] == [
        ("b_1", "b_2", "c_1", "c_2"),
        ("a_1", "a_2", "c_1", "c_2"),
        ("a_1", "a_2", "b_1", "b_2"),
    ]


def test_holdout_predictions_in_worker_processes_never_see_the_held_out_slice():
    # the fake raises on a leak inside the worker; with two jobs the fits run elsewhere
    data = six_slices()
    for holdout in ("slice", "family"):
        preds = holdout_predictions(Recorder(), data, family, holdout, n_jobs=2)
        assert {b: float(p.mean()) for b, p in preds.items()} == pytest.approx(
            {b: float(d.columns["p"].mean()) for b, d in data.items()}
        )
    with pytest.raises(ValueError, match="holdout must be one of"):
        holdout_predictions(Recorder(), data, family, "benchmark", n_jobs=1)


def test_the_leak_check_itself_fires():
    # a model fitted on a slice and asked about it: the guard every hold-out test relies on
    data = six_slices()
    model = fit_on(Recorder(), data, ["a_1", "a_2"])
    with pytest.raises(AssertionError, match="fitted on"):
        model.predict_proba(data["a_1"].matrix(("p", "id")))


def test_holdout_estimates_by_hand():
    def d(y):
        return BenchmarkData("x", np.array(y), {})

    data = {"x": d([0, 1]), "y": d([1, 1, 1]), "z": d([0, 0, 0, 1]), "w": d([0, 0])}
    preds = {
        "x": np.array([0.1, 0.3]),  # est 0.2, true 0.5, AUROC 1
        "y": np.array([0.9, 0.9, 0.9]),  # est 0.9, true 1.0: one class, no AUROC
        "z": np.array([0.1, 0.1, 0.1, 0.1]),  # est 0.1, true 0.25, all tied: AUROC 0.5
        "w": np.array([0.01, 0.01]),  # est 0.01, true 0.0
    }
    out = holdout_estimates(preds, data)
    per = out["per_slice"]
    assert per["x"] == {"true_acc": 0.5, "estimate": 0.2, "error": -0.3, "auroc": 1.0}
    assert per["y"] == {"true_acc": 1.0, "estimate": 0.9, "error": pytest.approx(-0.1), "auroc": None}
    assert per["z"]["auroc"] == 0.5 and per["z"]["error"] == pytest.approx(-0.15)
    assert per["w"]["auroc"] is None and per["w"]["error"] == pytest.approx(0.01)
    # AEE: x 0.3, y 0.1, z 0.15, w 0.01
    assert out["median_aee"] == pytest.approx(0.125)
    assert out["mean_aee"] == pytest.approx(0.14)
    assert out["median_aee_acc_ge_0.1"] == pytest.approx(0.15)  # x, y, z
    assert out["median_aee_acc_ge_0.5"] == pytest.approx(0.2)  # x, y
    assert out["spearman"] == pytest.approx(1.0)


# --- interval_coverage ----------------------------------------------------------------------------


def _expected_spread(data, held_out: set[str], shape: str) -> TransferSpread:
    """What the τ of a held-out unit must be for the pass-through fake: its predictions do not
    depend on training, so the nested validation errors are those of every slice outside the unit."""
    errors, estimates = [], []
    for b, d in data.items():
        if b not in held_out:
            errors.append(float(d.columns["p"].mean() - d.y.mean()))
            estimates.append(float(d.columns["p"].mean()))
    return spread_from_errors(errors, estimates, 0.9, shape)


@pytest.mark.parametrize("holdout", ["slice", "family"])
@pytest.mark.parametrize("recipe", ["slice", "family"])
def test_interval_coverage_tau_is_estimated_without_the_held_out_unit(holdout, recipe):
    data = six_slices()
    out = interval_coverage(Recorder(), data, family, holdout, recipe, subslice_draws=20, n_jobs=1)
    assert (out["holdout"], out["tau_recipe"], out["level"], out["subslice_n"]) == (holdout, recipe, 0.9, 100)
    assert set(TAU_SHAPES) == {"constant", "binomial"} and set(TAU_SHAPES) <= set(out)
    for shape in TAU_SHAPES:
        for b, d in data.items():
            unit = {b} if holdout == "slice" else {o for o in data if family(o) == family(b)}
            spread = _expected_spread(data, unit, shape)
            p = d.columns["p"]
            iv = label_free(p.size, p.sum(), (p**2).sum(), 0.9, spread)
            row = out[shape]["per_slice"][b]
            assert row["tau0"] == pytest.approx(spread.tau0, abs=1e-6), (shape, b)
            assert (row["estimate"], row["lower"], row["upper"]) == pytest.approx(
                (iv.estimate, iv.lower, iv.upper), abs=1e-6
            ), (shape, b)
            assert out["_taus"][shape][b].shape == shape
            assert out["_taus"][shape][b].tau0 == pytest.approx(spread.tau0)
    for b in data:
        np.testing.assert_array_equal(out["_preds"][b], data[b].columns["p"])
    # no fit ever saw the slice it was then asked about (the fake would have raised), and the
    # outer fits (the last of each unit's batch) never hold the held-out slice
    assert all(g for _, g in Recorder.fits)


def test_interval_coverage_summaries_are_means_of_the_per_slice_flags():
    data = six_slices()
    out = interval_coverage(Recorder(), data, family, "slice", "slice", subslice_draws=40, n_jobs=1)
    for shape in TAU_SHAPES:
        s = out[shape]
        per = s["per_slice"]
        assert list(per) == list(data)
        for v in per.values():
            assert v["clipped"] == (v["lower"] <= 0.0 or v["upper"] >= 1.0)
            assert v["covered"] == (v["lower"] <= v["true_acc"] <= v["upper"])
            assert 0.0 <= v["subslice_coverage"] <= 1.0
        # b_1 (estimate ~0.005, truth 0): its lower bound is exactly 0, clipped, and covers for free
        assert per["b_1"]["lower"] == 0.0 and per["b_1"]["clipped"] and per["b_1"]["covered"]
        # b_2 is estimated 0.3 too low and its τ comes from the others' small errors: missed
        assert not per["b_2"]["covered"] and not per["b_2"]["clipped"]
        assert not per["a_2"]["clipped"] and per["a_2"]["covered"]  # its τ includes b_2's big error
        # c_2 (estimate 0.95): the upper bound is exactly 1, which counts as clipped too
        assert per["c_2"]["upper"] == 1.0 and per["c_2"]["lower"] > 0.0 and per["c_2"]["clipped"]
        flags = [v["covered"] for v in per.values()]
        unclipped = [v["covered"] for v in per.values() if not v["clipped"]]
        assert 0 < len(unclipped) < len(per)
        assert s["whole_slice"] == pytest.approx(np.mean(flags))
        assert s["whole_slice_unclipped"] == pytest.approx(np.mean(unclipped))
        assert s["unclipped_slices"] == len(unclipped)
        assert s["whole_slice_unclipped"] < s["whole_slice"]  # the clipped slice covered for free
        assert s["subslices"] == pytest.approx(np.mean([v["subslice_coverage"] for v in per.values()]), abs=1e-6)
        assert s["mean_width"] == pytest.approx(np.mean([v["upper"] - v["lower"] for v in per.values()]), abs=1e-6)
        assert s["median_tau0"] == pytest.approx(np.median([v["tau0"] for v in per.values()]), abs=1e-6)
    # the binomial shape is narrower than the constant one where the estimate is near 0
    b1 = {shape: out[shape]["per_slice"]["b_1"] for shape in TAU_SHAPES}
    assert b1["binomial"]["upper"] < 0.5 * b1["constant"]["upper"]
    # a_1 (estimate 0.32) clips at 0 under the constant τ only
    assert out["constant"]["per_slice"]["a_1"]["clipped"] and not out["binomial"]["per_slice"]["a_1"]["clipped"]
    assert out["constant"]["unclipped_slices"] == 3 and out["binomial"]["unclipped_slices"] == 4


def test_interval_coverage_whole_slice_unclipped_is_none_when_every_bound_clips():
    # every slice estimated near 0 with a large spread of errors: every lower bound clips at 0
    data = {f"{f}_{i}": bench(f"{f}_{i}", k, acc, 0.01) for k, (f, i, acc) in enumerate(
        [("a", 1, 0.1), ("a", 2, 0.0), ("b", 1, 0.2), ("b", 2, 0.0), ("c", 1, 0.15), ("c", 2, 0.05)]
    )}
    out = interval_coverage(Recorder(), data, family, "family", "family", subslice_draws=5, n_jobs=1)
    for shape in TAU_SHAPES:
        assert all(v["clipped"] for v in out[shape]["per_slice"].values())
        assert out[shape]["unclipped_slices"] == 0 and out[shape]["whole_slice_unclipped"] is None


# --- bootstrap_verdict ----------------------------------------------------------------------------


def test_bootstrap_an_estimator_with_uniformly_lower_aee_wins_every_resample():
    slices = [f"s{i}" for i in range(12)]
    rng = np.random.default_rng(3)
    worse = {s: float(v) for s, v in zip(slices, rng.uniform(0.05, 0.3, 12), strict=True)}
    better = {s: v - 0.01 for s, v in worse.items()}
    out = bootstrap_verdict({"worse": worse, "better": better}, draws=500, seed=1)
    assert out["draws"] == 500 and out["slices"] == 12
    assert out["win_share"] == {"worse": 0.0, "better": 1.0}
    lo, hi = out["median_aee_5_95"]["better"]
    assert min(better.values()) <= lo <= hi <= max(better.values())
    assert out["median_aee_5_95"]["worse"] == pytest.approx([lo + 0.01, hi + 0.01], abs=1e-6)


def test_bootstrap_ties_split_the_share_and_shares_sum_to_one():
    a = {"s1": 0.1, "s2": 0.2, "s3": 0.05, "s4": 0.3}
    out = bootstrap_verdict({"a": a, "twin": dict(a), "bad": {s: v + 0.5 for s, v in a.items()}}, draws=300)
    assert out["win_share"] == {"a": 0.5, "twin": 0.5, "bad": 0.0}
    # two estimators that each win on half the slices: both win some resamples, shares sum to 1
    x = {"s1": 0.0, "s2": 0.0, "s3": 1.0, "s4": 1.0, "s5": 0.5}
    y = {"s1": 1.0, "s2": 1.0, "s3": 0.0, "s4": 0.0, "s5": 0.5}
    out = bootstrap_verdict({"x": x, "y": y}, draws=1000, seed=2)
    share = out["win_share"]
    assert share["x"] + share["y"] == pytest.approx(1.0, abs=1e-4)
    assert 0.3 < share["x"] < 0.7 and 0.3 < share["y"] < 0.7
    # constant AEE: every resample's median is that constant
    flat = bootstrap_verdict({"f": {"s1": 0.1, "s2": 0.1}, "g": {"s1": 0.2, "s2": 0.2, "s3": 0.0}}, draws=50)
    assert flat["slices"] == 2  # only the slices every estimator has
    assert flat["median_aee_5_95"]["f"] == pytest.approx([0.1, 0.1])
    assert flat["win_share"] == {"f": 1.0, "g": 0.0}


# --- nested_selection -----------------------------------------------------------------------------


def _selection_data() -> dict[str, BenchmarkData]:
    """Families a and b (two slices each) whose ``p`` is exact, family c (three slices) whose ``p``
    is 0.25 too low: bias 0 is right on a and b, bias +0.25 on c."""
    spec = [("a_1", 0.3), ("a_2", 0.5), ("b_1", 0.4), ("b_2", 0.6), ("c_1", 0.45), ("c_2", 0.55), ("c_3", 0.65)]
    return {
        name: bench(name, i, acc, acc - (0.25 if name.startswith("c") else 0.0), n=100, seed=i)
        for i, (name, acc) in enumerate(spec)
    }


def test_nested_selection_picks_on_the_other_families_only():
    data = _selection_data()
    candidates = {"exact": Recorder(tag="exact"), "shifted": Recorder(bias=0.25, tag="shifted")}
    out = nested_selection(candidates, data, family, n_jobs=1)
    # held out a: chosen on b (exact wins) + c (shifted wins), c has more slices -> shifted.
    # Had a's own slices been scored, exact would win (4 zeros against 3 errors).
    assert out["chosen_by_family"] == {"a": "shifted", "b": "shifted", "c": "exact"}
    per = out["per_slice"]
    assert list(per) == list(data)
    assert per["a_1"] == {"true_acc": 0.3, "estimate": pytest.approx(0.55), "chosen": "shifted", "family": "a"}
    assert per["c_2"] == {"true_acc": 0.55, "estimate": pytest.approx(0.30), "chosen": "exact", "family": "c"}
    assert out["median_aee"] == pytest.approx(0.25)


def test_nested_selection_never_fits_the_held_out_family():
    data = _selection_data()
    candidates = {"exact": Recorder(tag="exact"), "shifted": Recorder(bias=0.25, tag="shifted")}
    out = nested_selection(candidates, data, family, n_jobs=1)
    # per held-out family, in order: each candidate's inner leave-one-family-out (two fits, one on
    # each other family), then the pick fitted on both other families
    fams = ["a", "b", "c"]
    members = {f: tuple(sorted(b for b in data if family(b) == f)) for f in fams}
    assert len(Recorder.fits) == 3 * 5
    for k, f in enumerate(fams):
        batch = Recorder.fits[5 * k : 5 * k + 5]
        others = [g for g in fams if g != f]
        for _, groups in batch:
            assert not set(groups) & set(members[f]), (f, groups)
        assert [tag for tag, _ in batch[:4]] == ["exact", "exact", "shifted", "shifted"]
        # inner: held out others[0] -> trained on others[1], and the reverse
        assert [g for _, g in batch[:4]] == [members[others[1]], members[others[0]]] * 2
        assert batch[4] == (out["chosen_by_family"][f], tuple(sorted(members[others[0]] + members[others[1]])))


# --- prompt_shift ---------------------------------------------------------------------------------


def test_prompt_shift_maps_alt_keys_to_their_base_and_fits_without_it():
    data = six_slices()
    # the alt slice carries the same id as a_1: the fake raises if a_1 was in the training set
    alt_p = np.full(200, 0.2)
    alt = {
        "a_1@alt-qa": BenchmarkData(
            "a_1@alt-qa", bench("x", 0, 0.1, 0.2, n=50).y, {"p": alt_p[:50], "id": np.zeros(50)}
        ),
        "gone@alt-qa": bench("gone@alt-qa", 99, 0.5, 0.5, n=20),  # no default slice: skipped
    }
    out = prompt_shift(Recorder(), data, alt)
    assert list(out["per_slice"]) == ["a_1@alt-qa"]
    row = out["per_slice"]["a_1@alt-qa"]
    assert Recorder.fits == [("r", ("a_2", "b_1", "b_2", "c_1", "c_2"))]
    est_default = float(data["a_1"].columns["p"].mean())
    assert row["slice"] == "a_1" and row["prompts"] == "alt-qa" and row["n"] == 50
    assert row["true_default"] == pytest.approx(0.3) and row["true_alt"] == pytest.approx(0.1)
    assert row["estimate_default"] == pytest.approx(est_default, abs=1e-6)
    assert row["estimate_alt"] == pytest.approx(0.2)
    assert row["true_shift"] == pytest.approx(-0.2)
    assert row["estimate_shift"] == pytest.approx(0.2 - est_default, abs=1e-6)
    assert row["aee_default"] == pytest.approx(abs(est_default - 0.3), abs=1e-6)
    assert row["aee_alt"] == pytest.approx(0.1)


# --- the binomial τ shape in the monitor ----------------------------------------------------------

VALIDATION = {
    "tau_shape": "binomial",
    "per_benchmark": {
        "a": {"est_acc": 0.5, "true_acc": 0.45},  # scale 1
        "b": {"est_acc": 0.1, "true_acc": 0.16},  # scale 2 sqrt(0.09) = 0.6
        "c": {"est_acc": 0.9, "true_acc": 0.85},  # scale 0.6
        "d": {"est_acc": 0.01, "true_acc": 0.0},  # scale max(2 sqrt(0.0099), 0.2) = 0.2
        "e": {"est_acc": None, "true_acc": 0.3},  # no estimate: left out
    },
}


def test_transfer_tau_binomial_scales_each_error_at_its_own_estimate():
    spread = transfer_tau(VALIDATION)
    assert spread.shape == "binomial" and spread.floor == 0.2
    scaled = [0.05, -0.06 / 0.6, 0.05 / 0.6, 0.01 / 0.2]
    assert spread.tau0 == pytest.approx(predictive_tau(scaled, 0.9))
    constant = transfer_tau({**VALIDATION, "tau_shape": "constant"})
    assert constant.shape == "constant"
    assert constant.tau0 == pytest.approx(predictive_tau([0.05, -0.06, 0.05, 0.01], 0.9))
    assert transfer_tau(None) == TransferSpread(0.0, "constant")


def _feed(reg: SliceRegistry, key: str, p: float, n: int, now: float) -> dict:
    reg.admit(key)
    for _ in range(n):
        reg.record_score(key, p, now)
    return reg.summary(key, now)["windows"]["lifetime"]


def test_slice_registry_with_a_binomial_spread_is_narrower_near_zero():
    now = 1_000_000.0
    spread = transfer_tau(VALIDATION)
    reg = SliceRegistry(tau=spread)
    low = _feed(reg, "s=low", 0.05, 400, now)
    mid = _feed(reg, "s=mid", 0.5, 400, now)
    z = z_value(0.9)
    tau_low = spread.tau0 * 2 * math.sqrt(0.05 * 0.95)
    tau_mid = spread.tau0
    assert low["estimate"] == pytest.approx(0.05) and mid["estimate"] == pytest.approx(0.5)
    half_low = z * math.sqrt(0.05 * 0.95 / 400 + tau_low**2)
    half_mid = z * math.sqrt(0.25 / 400 + tau_mid**2)
    assert (low["lower"], low["upper"]) == pytest.approx((max(0.0, 0.05 - half_low), 0.05 + half_low))
    assert (mid["lower"], mid["upper"]) == pytest.approx((0.5 - half_mid, 0.5 + half_mid))
    assert (low["upper"] - low["lower"]) < 0.6 * (mid["upper"] - mid["lower"])
    # a constant τ of the same τ0 gives the 0.05 slice (nearly) the 0.5 slice's width
    flat = SliceRegistry(tau=TransferSpread(spread.tau0, "constant"))
    flat_low = _feed(flat, "s=low", 0.05, 400, now)
    assert (flat_low["upper"] - flat_low["estimate"]) > 1.5 * (low["upper"] - low["estimate"])


# --- slices keyed by prompt set -------------------------------------------------------------------


def test_slice_name_and_grouping_by_prompt_set():
    traces = [
        {"benchmark": "bench", "prompts": "alt-qa:v1", "label": 1},
        {"benchmark": "bench", "label": 0},
        {"benchmark": "bench", "prompts": "default:v1", "label": 1},
        {"benchmark": "bench", "prompts": None, "label": 1},
        {"benchmark": "abc", "prompts": "alt-qa:v2", "label": 0},
    ]
    assert [slice_name(t) for t in traces] == ["bench@alt-qa", "bench", "bench", "bench", "abc@alt-qa"]
    grouped = group_by_benchmark(traces)
    assert list(grouped) == ["abc@alt-qa", "bench", "bench@alt-qa"]
    assert [len(v) for v in grouped.values()] == [1, 3, 1]
    assert grouped["bench@alt-qa"] == [traces[0]]


def test_family_of_an_alt_prompt_slice_is_its_benchmarks_family():
    assert benchmark_registry.family_of("ling_plural@alt-qa") == "word_forms"
    assert benchmark_registry.family_of("ling_plural") == "word_forms"
    assert benchmark_registry.family_of("no_such_bench@alt-qa") == "no_such_bench"
