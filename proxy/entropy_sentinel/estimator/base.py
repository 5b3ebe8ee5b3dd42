"""Shared pieces of the P(correct) estimators: the scikit-learn base with named feature columns,
feature matrices, per-benchmark weights, and cross-validation folds that respect benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold, StratifiedKFold

#: Sign of d P(correct) / d feature where it is known a priori: more entropy (or NLL) anywhere in the
#: trajectory means less confidence, more top-k mass means a more peaked distribution. Shape
#: statistics (std, skewness, kurtosis) and length depend on the task, so they stay unconstrained.
EXPECTED_DIRECTION: Mapping[str, int] = {
    "mean": -1,
    "max": -1,
    "q10": -1,
    "q25": -1,
    "q50": -1,
    "q75": -1,
    "q90": -1,
    "sum": -1,
    "nll_mean": -1,
    "nll_max": -1,
    "nll_sum": -1,
    "perplexity": -1,
    "topk_mass_mean": 1,
}

#: Levels of the trajectory that do not scale with answer length (``sum`` and ``n_tokens`` do, and
#: answer length is mostly a property of the benchmark, which is what must not be learnt).
ROBUST_FEATURES = ("mean", "std", "max", "q50", "q90")


def feature_matrix(records: Sequence[Mapping[str, float]], features: Sequence[str]) -> np.ndarray:
    """Rows of named features -> (n, len(features)) float matrix; a missing name is nan."""
    out = np.full((len(records), len(features)), np.nan, dtype=np.float64)
    for i, record in enumerate(records):
        for j, name in enumerate(features):
            value = record.get(name)
            if value is not None:
                out[i, j] = float(value)
    return out


def benchmark_weights(groups: np.ndarray | None, n: int) -> np.ndarray | None:
    """Weights giving every benchmark the same total weight (mean weight 1); None without groups.

    With them the weighted training accuracy is the mean of the per-benchmark accuracies, so one
    large benchmark does not decide where the estimator puts its intercept.
    """
    if groups is None:
        return None
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    return n / (counts.size * counts[inverse].astype(np.float64))


def _signed_log(x: np.ndarray) -> np.ndarray:
    """sign(x) log(1 + |x|): tames kurtosis, summed entropy and perplexity, keeps order and sign."""
    return np.sign(x) * np.log1p(np.abs(x))


class _FeatureClassifier(ClassifierMixin, BaseEstimator):
    """Shared input checks, missing-value filling and the single-class fallback."""

    features: tuple[str, ...]

    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        X = self._as_matrix(X)
        y = np.asarray(y).reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        if X.shape[0] == 0:
            raise ValueError("cannot fit on zero rows")
        if not np.all(np.isin(y, (0, 1))):
            raise ValueError("y must be 0 (wrong) / 1 (correct)")
        y = y.astype(np.int64)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        with np.errstate(all="ignore"):
            finite = np.where(np.isfinite(X), X, np.nan)
            fill = np.nanmedian(finite, axis=0) if X.shape[0] else np.zeros(X.shape[1])
        self.fill_values_ = np.where(np.isfinite(fill), fill, 0.0)
        self.constant_: float | None = float(y.mean()) if np.unique(y).size < 2 else None
        return self._fill(X), y

    def _as_matrix(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, {len(self.features)}), got shape {X.shape}")
        if X.shape[1] != len(self.features):
            raise ValueError(f"X has {X.shape[1]} columns but features names {len(self.features)}: {self.features}")
        return X

    def _column_of(self, name: str) -> int:
        """The index of the statistic ``name`` among ``features`` (estimators that read one column)."""
        if name not in self.features:
            raise ValueError(f"statistic {name!r} is not among the features {self.features}")
        return list(self.features).index(name)

    def _fill(self, X: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(X)
        if bad.any():
            X = np.where(bad, self.fill_values_[None, :], X)
        return X

    def _p_correct(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_proba(self, X: Any) -> np.ndarray:
        """(n, 2): column 1 is P(correct)."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted")  # an AttributeError too
        X = self._fill(self._as_matrix(X))
        if self.constant_ is not None:
            p = np.full(X.shape[0], self.constant_)
        else:
            p = np.clip(np.asarray(self._p_correct(X), dtype=np.float64).reshape(-1), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(np.int64)


def _folds_have_both_classes(y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    return all(np.unique(y[tr]).size == 2 and np.unique(y[te]).size == 2 for tr, te in splits)


def _cv_splits(
    y: np.ndarray, groups: np.ndarray | None, n_splits: int, random_state: int | None
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Folds with both classes on each side: by benchmark when ``groups`` allows, else stratified.

    None when the minority class is too small for even two stratified folds.
    """
    dummy = np.zeros((y.size, 1))
    if groups is not None:
        n_groups = np.unique(groups).size
        if n_groups >= 2:
            splits = list(GroupKFold(n_splits=min(n_splits, n_groups)).split(dummy, y, groups))
            if _folds_have_both_classes(y, splits):
                return splits
    k = min(n_splits, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return None
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state).split(dummy, y))


