"""Estimators' scikit-learn contract, ATC's threshold rule by hand, and skops artifacts."""

import numpy as np
import pytest
import skops.io as sio
from entropy_sentinel.estimator.artifact import (
    ArtifactError,
    UntrustedArtifactError,
    load_artifact,
    save_artifact,
)
from entropy_sentinel.estimator.estimators import (
    ATC,
    ESTIMATORS,
    MonotoneBoost,
    PaperForest,
    TransferLogistic,
    benchmark_weights,
    feature_matrix,
    make_estimator,
)
from entropy_sentinel.signal.features import FEATURE_NAMES
from entropy_sentinel.stats.scores import auroc
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

FEATURES = (*FEATURE_NAMES, "topk_mass_mean")
FAST = {"paper_forest": {"n_estimators": 10}}  # keep the grid's 21 forest fits cheap
LABEL_FREE = {"average_confidence"}  # estimators that read no label: no fallback, no fitted level


def synthetic(n: int, seed: int, shift: float = 0.0):
    """Responses whose entropy is low when they are correct: a latent skill z sets P(correct) and,
    with noise, every entropy level; three 'benchmarks' of different difficulty."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 3, n)
    z = rng.normal(size=n) + 0.6 * (groups - 1) + shift
    y = (rng.random(n) < 1 / (1 + np.exp(-2.0 * z))).astype(np.int64)
    level = np.exp(-0.8 * z)[:, None] * np.exp(0.3 * rng.normal(size=(n, len(FEATURES))))
    X = level.copy()
    idx = {f: i for i, f in enumerate(FEATURES)}
    X[:, idx["skewness"]] = rng.normal(size=n)  # shape statistics: pure noise here
    X[:, idx["kurtosis"]] = 3 + rng.exponential(size=n)
    X[:, idx["n_tokens"]] = rng.integers(5, 200, n)
    X[:, idx["topk_mass_mean"]] = 1 / (1 + level[:, 0])
    return X, y, groups


def build(name: str, **params):
    return make_estimator(name, features=FEATURES, **{**FAST.get(name, {}), **params})


@pytest.fixture(scope="module")
def data():
    return synthetic(400, 0), synthetic(300, 1)


@pytest.fixture(scope="module")
def fitted(data):
    (X, y, g), _ = data
    return {name: build(name).fit(X, y, groups=g) for name in ESTIMATORS}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_sklearn_contract(name, data, fitted):
    (X, y, _), (X_test, y_test, _) = data
    est = fitted[name]
    proba = est.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.classes_, [0, 1])
    assert set(np.unique(est.predict(X_test))) <= {0, 1}
    # clone: same params, unfitted; set_params round-trips
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "classes_")
    assert twin.set_params(features=FEATURES) is twin
    # low entropy means correct: better than chance on fresh data (the constant baseline ranks nothing)
    assert auroc(proba[:, 1], y_test) > 0.65 if name != "constant" else auroc(proba[:, 1], y_test) == 0.5
    if name in LABEL_FREE:
        # learns nothing from labels: its estimate is the model's own probability, not the training rate
        np.testing.assert_allclose(proba[:, 1], np.exp(-X_test[:, FEATURES.index("nll_sum")]))
    else:
        # in distribution, the slice estimate lands near the training accuracy
        assert abs(est.predict_proba(X)[:, 1].mean() - y.mean()) < 0.05


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fits_without_groups_and_is_deterministic(name, data):
    (X, y, _), (X_test, _, _) = data
    a = build(name).fit(X, y).predict_proba(X_test)
    b = build(name).fit(X, y).predict_proba(X_test)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n not in LABEL_FREE])
def test_single_class_training_set_predicts_its_rate(name, data):
    (X, _, _), _ = data
    for label in (0, 1):
        est = build(name).fit(X[:50], np.full(50, label))
        np.testing.assert_allclose(est.predict_proba(X[50:60])[:, 1], label)


def test_average_confidence_is_the_models_own_probability_of_its_answer():
    # two responses: tokens with probabilities (0.9, 0.5) and (0.2,): P = 0.45 and 0.2, whatever the labels
    nll = np.array([[-np.log(0.9) - np.log(0.5)], [-np.log(0.2)]])
    for labels in ([1, 0], [0, 0], [1, 1]):
        est = make_estimator("average_confidence").fit(nll, labels)
        np.testing.assert_allclose(est.predict_proba(nll)[:, 1], [0.45, 0.2])
    # it reads the named statistic among several columns; a missing one is filled with the training median
    est = make_estimator("average_confidence", features=("mean", "nll_sum")).fit([[3.0, 0.0], [1.0, 2.0]], [0, 1])
    np.testing.assert_allclose(est.predict_proba([[9.0, np.log(4.0)], [0.0, np.nan]])[:, 1], [0.25, np.exp(-1.0)])
    with pytest.raises(ValueError, match="statistic 'nll_sum' is not among"):
        make_estimator("average_confidence", features=("mean",)).fit([[1.0], [2.0]], [0, 1])


@pytest.mark.parametrize("name", ESTIMATORS)
def test_rejects_wrong_shapes_and_fills_missing_values(name, data):
    (X, y, _), _ = data
    est = build(name).fit(X, y)
    with pytest.raises(ValueError):
        est.predict_proba(X[:, :3])
    with pytest.raises(ValueError):
        build(name).fit(X, np.where(y == 1, 2, 0))
    holes = X[:5].copy()
    holes[:, 0] = np.nan
    holes[:, 2] = np.inf
    assert np.all(np.isfinite(est.predict_proba(holes)))


def test_atc_threshold_rule_by_hand():
    # max entropy of 5 training responses, 3 correct: training accuracy 0.6, so the 3 lowest
    # (0.1, 0.2, 0.5) must count as confident; the threshold sits halfway to the next, 0.9 -> 0.7.
    X = np.array([[0.1], [0.2], [0.5], [0.9], [1.5]])
    atc = ATC().fit(X, [1, 0, 1, 1, 0])
    assert atc.statistic_threshold_ == pytest.approx(0.7)
    assert atc.predict_proba(X)[:, 1].mean() == pytest.approx(0.6)  # the rule itself
    np.testing.assert_array_equal(atc.predict_proba([[0.3], [0.69], [0.71], [2.0]])[:, 1], [1, 1, 0, 0])
    # a held-out slice of 4 with 1 below the threshold: ATC's estimate is 1/4
    assert atc.predict_proba([[0.6], [0.8], [1.0], [3.0]])[:, 1].mean() == pytest.approx(0.25)


def test_atc_edge_accuracies_statistic_choice_and_smoothing():
    X = np.array([[0.1, 5.0], [0.2, 1.0], [0.5, 3.0], [0.9, 2.0]])
    assert ATC(features=("max",)).fit(X[:, :1], [1, 1, 1, 1]).predict_proba(X[:, :1])[:, 1].tolist() == [1, 1, 1, 1]
    assert ATC(features=("max",)).fit(X[:, :1], [0, 0, 0, 0]).predict_proba(X[:, :1])[:, 1].tolist() == [0, 0, 0, 0]
    # the second column, higher = more confident (e.g. top-k mass): acc 0.5 -> the two largest, 5 and 3
    atc = ATC(features=("max", "topk_mass_mean"), statistic="topk_mass_mean", lower_is_confident=False)
    atc.fit(X, [1, 0, 0, 1])
    assert atc.threshold_ == pytest.approx(2.5)
    np.testing.assert_array_equal(atc.predict_proba(X)[:, 1], [1, 0, 1, 0])
    with pytest.raises(ValueError):
        ATC(features=("max",), statistic="mean").fit(X[:, :1], [0, 1, 0, 1])
    smooth = ATC(temperature=0.5).fit(X[:, :1], [1, 1, 0, 0])
    p = smooth.predict_proba(np.array([[0.0], [0.35], [2.0]]))[:, 1]
    assert np.all(np.diff(p) < 0) and 0 < p[-1] < p[0] < 1
    assert p[1] == pytest.approx(0.5)  # exactly at the threshold


def test_paper_forest_grid_and_isotonic(data):
    (X, y, g), _ = data
    est = PaperForest(features=FEATURES, method="isotonic", n_estimators=10).fit(X, y, groups=g)
    assert set(est.best_params_) == {"max_depth", "min_samples_split"}
    assert est.best_params_["max_depth"] in (None, 5, 10)
    with pytest.raises(ValueError):
        PaperForest(features=FEATURES, method="platt").fit(X, y)


def test_transfer_logistic_drops_wrong_signed_features_and_selects_C(data):
    (X, y, g), _ = data
    # 'q90' is made to rise with correctness: a wrong sign for an entropy level, so it must go
    cols = ("mean", "q90", "skewness")
    idx = [FEATURES.index(c) for c in cols]
    Xc = X[:, idx].copy()
    Xc[:, 1] = y + 0.3 * np.random.default_rng(0).normal(size=y.size)
    est = TransferLogistic(features=cols).fit(Xc, y, groups=g)
    assert "q90" not in est.kept_features_ and "mean" in est.kept_features_
    assert set(est.cv_aee_) == {0.01, 0.1, 1.0} and est.C_ in est.cv_aee_
    free = TransferLogistic(features=cols, monotone=False).fit(Xc, y)
    assert "q90" in free.kept_features_ and free.C_ == 0.1  # no groups: the default C


def test_monotone_boost_is_monotone_in_max_entropy(data):
    (X, y, g), _ = data
    est = MonotoneBoost(features=FEATURES).fit(X, y, groups=g)
    probe = np.repeat(np.median(X, axis=0)[None, :], 50, axis=0)
    probe[:, FEATURES.index("max")] = np.linspace(X[:, 2].min(), X[:, 2].max(), 50)
    assert np.all(np.diff(est.predict_proba(probe)[:, 1]) <= 1e-12)


def test_helpers():
    rows = [{"mean": 1.0, "max": 2.0}, {"mean": 3.0}]
    np.testing.assert_array_equal(feature_matrix(rows, ("max", "mean")), [[2.0, 1.0], [np.nan, 3.0]])
    w = benchmark_weights(np.array(["a", "a", "a", "b"]), 4)
    np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0])  # each benchmark totals 2
    assert benchmark_weights(None, 4) is None
    with pytest.raises(ValueError, match="unknown estimator"):
        make_estimator("nope")


# --- artifacts ---------------------------------------------------------------------------------


METADATA = {
    "entropy_variant": "topk",
    "k": 20,
    "model": "gemma-3-270m-it",
    "training_benchmarks": ["gsm8k", "mmlu"],
    "validation": {"median_aee": 0.05, "auroc": float("nan")},
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_artifact_round_trip(name, data, fitted, tmp_path):
    _, (X_test, _, _) = data
    path = save_artifact(tmp_path / f"{name}.skops", fitted[name], METADATA)
    est, meta = load_artifact(path)
    assert type(est) is type(fitted[name])
    np.testing.assert_array_equal(est.predict_proba(X_test), fitted[name].predict_proba(X_test))
    assert meta["features"] == list(FEATURES)
    assert meta["model"] == "gemma-3-270m-it" and meta["training_benchmarks"] == ["gsm8k", "mmlu"]
    assert meta["estimator"] == type(est).__name__
    assert {"created_at", "package_version", "sklearn_version", "skops_version"} <= set(meta)


def test_artifact_metadata_must_match_features(fitted, tmp_path):
    with pytest.raises(ValueError, match="differ"):
        save_artifact(tmp_path / "a.skops", fitted["atc"], {**METADATA, "features": ["mean"]})
    with pytest.raises(ValueError, match="JSON"):
        save_artifact(tmp_path / "b.skops", fitted["atc"], {**METADATA, "model": object()})


class Smuggled:
    """Stands for any type a crafted file could make the loader instantiate."""

    def __init__(self):
        self.payload = "run me"


def _payload(estimator):
    return {"format": "entropy-sentinel-estimator", "format_version": 1, "metadata_json": "{}", "estimator": estimator}


def test_artifact_with_a_disallowed_type_is_refused(tmp_path):
    est = ATC().fit([[0.1], [0.2], [0.3], [0.4]], [1, 0, 1, 0])
    est.extra_ = Smuggled()  # hidden inside an otherwise valid estimator
    path = tmp_path / "evil.skops"
    sio.dump(_payload(est), path)
    with pytest.raises(UntrustedArtifactError, match="test_estimators.Smuggled") as info:
        load_artifact(path)
    assert info.value.types == [f"{__name__}.Smuggled"]


def test_artifact_refuses_foreign_estimators_and_non_skops_files(tmp_path):
    path = tmp_path / "plain.skops"
    sio.dump(_payload(LogisticRegression().fit([[0.0], [1.0]], [0, 1])), path)
    with pytest.raises(ArtifactError, match="not one of the Entropy Sentinel estimators"):
        load_artifact(path)
    sio.dump({"something": "else"}, tmp_path / "other.skops")
    with pytest.raises(ArtifactError, match="not an entropy-sentinel-estimator artifact"):
        load_artifact(tmp_path / "other.skops")
    (tmp_path / "junk.skops").write_bytes(b"\x80\x04 not a zip")
    with pytest.raises(ArtifactError, match="not a skops file"):
        load_artifact(tmp_path / "junk.skops")


# --- ConstantEstimator and the artifact allow-list ------------------------------------------------


def _two_benchmarks():
    """a: 100 rows at accuracy 0.1, b: 10 rows at accuracy 0.9."""
    y = np.array([1] * 10 + [0] * 90 + [1] * 9 + [0] * 1)
    groups = np.array(["a"] * 100 + ["b"] * 10)
    X = np.random.default_rng(0).normal(size=(110, 1))
    return X, y, groups


def test_constant_estimator_is_the_benchmark_balanced_mean_with_groups():
    from entropy_sentinel.estimator.estimators import ConstantEstimator

    X, y, groups = _two_benchmarks()
    est = ConstantEstimator().fit(X, y, groups=groups)
    assert est.p_ == pytest.approx(0.5)  # (0.1 + 0.9) / 2
    pooled = ConstantEstimator().fit(X, y)
    assert pooled.p_ == pytest.approx(19 / 110)
    # it ignores the features: any rows, any values, the same constant
    X_new = np.array([[-1e6], [0.0], [np.nan], [42.0]])
    np.testing.assert_allclose(est.predict_proba(X_new), [[0.5, 0.5]] * 4)
    np.testing.assert_allclose(pooled.predict_proba(X_new)[:, 1], [19 / 110] * 4)
    assert list(est.classes_) == [0, 1] and est.n_features_in_ == 1
    all_wrong = ConstantEstimator().fit(X, np.zeros(110, dtype=int), groups=groups)
    assert all_wrong.predict_proba(X_new)[:, 1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="columns"):
        est.predict_proba(np.zeros((2, 3)))


def test_constant_estimator_by_registry_name_and_through_fit_on():
    from entropy_sentinel.estimator.estimators import ConstantEstimator
    from entropy_sentinel.evaluation.protocol import BenchmarkData, fit_on

    est = make_estimator("constant")
    assert type(est) is ConstantEstimator and est.features == ("mean",)
    assert make_estimator("constant", features=("max", "mean")).features == ("max", "mean")
    assert "constant" in ESTIMATORS
    X, y, groups = _two_benchmarks()
    data = {g: BenchmarkData(g, y[groups == g], {"mean": X[groups == g, 0]}) for g in ("a", "b")}
    fitted = fit_on(make_estimator("constant"), data, ["a", "b"])  # fit_on passes the groups
    assert fitted.p_ == pytest.approx(0.5)
    assert fit_on(make_estimator("constant"), data, ["a"]).p_ == pytest.approx(0.1)


def test_constant_estimator_artifact_round_trip(tmp_path):
    X, y, groups = _two_benchmarks()
    est = make_estimator("constant").fit(X, y, groups=groups)
    path = save_artifact(tmp_path / "constant.skops", est, {"features": ["mean"], "model": "m"})
    loaded, meta = load_artifact(path)
    assert type(loaded).__name__ == "ConstantEstimator" and meta["estimator"] == "ConstantEstimator"
    assert loaded.p_ == pytest.approx(0.5) and meta["features"] == ["mean"]
    np.testing.assert_array_equal(loaded.predict_proba(X[:5]), est.predict_proba(X[:5]))


def test_every_estimator_class_is_on_the_artifact_allow_list():
    from entropy_sentinel.estimator.artifact import allowed_types
    from entropy_sentinel.estimator.estimators import ESTIMATOR_CLASSES

    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in ESTIMATOR_CLASSES}
    assert len(names) == len(ESTIMATORS) == 7
    missing = names - allowed_types()
    assert not missing, f"estimator classes an artifact could not be loaded with: {sorted(missing)}"
    # the dotted paths artifacts already hold (the shipped one, users' saved ones) stay loadable
    assert {
        "entropy_sentinel.estimator.estimators.ConstantEstimator",
        "entropy_sentinel.estimator.estimators.PaperForest",
        "entropy_sentinel.estimator.estimators.ATC",
        "entropy_sentinel.estimator.estimators.AverageConfidence",
        "entropy_sentinel.estimator.estimators.LogisticEstimator",
        "entropy_sentinel.estimator.transfer.TransferLogistic",
        "entropy_sentinel.estimator.transfer.MonotoneBoost",
    } <= allowed_types()
