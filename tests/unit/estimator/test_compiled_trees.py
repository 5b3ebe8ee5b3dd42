"""The compiled trees predict what scikit-learn predicts, and step aside where they cannot."""

from __future__ import annotations

import numpy as np
import pytest
from entropy_sentinel.estimator.compiled_trees import compile_trees, compiled_for
from entropy_sentinel.estimator.transfer import MonotoneBoost
from sklearn.ensemble import HistGradientBoostingClassifier


def _data(seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] - 0.5 * X[:, 1] + rng.normal(scale=0.7, size=n) > 0).astype(int)
    X[rng.random((n, 4)) < 0.1] = np.nan  # NaNs in training: the trees learn where missing values go
    return X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_probabilities_as_scikit_learn(seed):
    X, y = _data(seed)
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, monotonic_cst=[1, -1, 0, 0], random_state=0)
    model.fit(X, y)
    compiled = compile_trees(model)
    assert compiled is not None and compiled.depth >= 2
    X_test, _ = _data(seed + 100, n=300)
    X_test[:5] = [[np.inf, -np.inf, 1e300, -1e300]] * 5  # beyond every threshold
    want = model.predict_proba(X_test)[:, 1]
    got = compiled.predict_proba1(X_test)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.ptp(want) > 0.5  # the comparison is over a real spread of scores
    # NaN rows really take the learnt missing-value branches (not all one side)
    nan_rows = np.isnan(X_test).any(axis=1)
    assert nan_rows.sum() > 10
    np.testing.assert_allclose(got[nan_rows], want[nan_rows], rtol=0, atol=1e-12)


def test_unsupported_models_fall_back_to_scikit_learn():
    X, y = _data(3)
    multiclass = HistGradientBoostingClassifier(max_iter=5).fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    assert compile_trees(multiclass) is None
    Xc = np.column_stack([np.nan_to_num(X[:, 0]), np.arange(X.shape[0]) % 3])
    categorical = HistGradientBoostingClassifier(max_iter=5, categorical_features=[1]).fit(Xc, y)
    assert compile_trees(categorical) is None
    assert compile_trees(object()) is None


def test_monotone_boost_scores_through_the_compiled_trees_once_per_model():
    X, y = _data(4)
    est = MonotoneBoost(features=("a", "b", "c", "d"), max_iter=40).fit(np.nan_to_num(X), y)
    assert compiled_for(est.model_) is compiled_for(est.model_)  # compiled once, then cached
    want = est.model_.predict_proba(est._fill(np.nan_to_num(X)))[:, 1]
    np.testing.assert_allclose(est.predict_proba(np.nan_to_num(X))[:, 1], want, rtol=0, atol=1e-12)
