"""Our estimators, built to transfer to benchmarks they never saw (low AEE on a new slice)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from entropy_sentinel.estimator.base import (
    EXPECTED_DIRECTION,
    ROBUST_FEATURES,
    _FeatureClassifier,
    _signed_log,
    benchmark_weights,
)
from entropy_sentinel.estimator.compiled_trees import compiled_for
from entropy_sentinel.estimator.registry import register


@register("transfer_logistic")
class TransferLogistic(_FeatureClassifier):
    """Ours: a logistic model built to keep its *mean* right on a benchmark it has not seen.

    * a few length-free trajectory levels (:data:`ROBUST_FEATURES`), signed-log, standardized;
    * every training benchmark weighs the same (:func:`benchmark_weights`), so the intercept is the
      mean of the benchmarks' accuracies rather than the largest one's;
    * with ``monotone``, features whose coefficient comes out against :data:`EXPECTED_DIRECTION`
      (collinear quantiles flip signs to fit one benchmark's quirks) are dropped and it refits;
    * the inverse regularization C is chosen from ``C_grid`` by leave-one-benchmark-out mean AEE,
      the product's own metric, when there are >= 2 training benchmarks; else ``default_C``.
    """

    def __init__(
        self,
        features: tuple[str, ...] = ROBUST_FEATURES,
        C_grid: tuple[float, ...] = (0.01, 0.1, 1.0),
        default_C: float = 0.1,
        monotone: bool = True,
        balance_benchmarks: bool = True,
        max_iter: int = 1000,
    ) -> None:
        self.features = features
        self.C_grid = C_grid
        self.default_C = default_C
        self.monotone = monotone
        self.balance_benchmarks = balance_benchmarks
        self.max_iter = max_iter

    def _fit_one(
        self, Z: np.ndarray, y: np.ndarray, w: np.ndarray | None, C: float
    ) -> tuple[np.ndarray, StandardScaler | None, LogisticRegression | None, float]:
        """Fit with sign pruning; returns (kept columns, scaler, model, constant if no model)."""
        keep = np.arange(Z.shape[1])
        if np.unique(y).size < 2:
            return keep[:0], None, None, float(np.average(y, weights=w))
        while keep.size:
            scaler = StandardScaler().fit(Z[:, keep])
            model = LogisticRegression(C=C, max_iter=self.max_iter)
            model.fit(scaler.transform(Z[:, keep]), y, sample_weight=w)
            if not self.monotone:
                return keep, scaler, model, float("nan")
            signs = np.array([EXPECTED_DIRECTION.get(self.features[j], 0) for j in keep])
            wrong = (signs * model.coef_[0]) < 0
            if not wrong.any():
                return keep, scaler, model, float("nan")
            # drop the most wrong-signed one and refit: a correlated neighbour usually takes over
            keep = np.delete(keep, int(np.argmin(np.where(wrong, signs * model.coef_[0], np.inf))))
        return keep, None, None, float(np.average(y, weights=w))

    @staticmethod
    def _predict_one(Z: np.ndarray, fitted: tuple) -> np.ndarray:
        keep, scaler, model, constant = fitted
        if model is None:
            return np.full(Z.shape[0], constant)
        return model.predict_proba(scaler.transform(Z[:, keep]))[:, 1]

    def fit(self, X: Any, y: Any, groups: Any = None) -> TransferLogistic:
        # dozens of tiny lbfgs fits: BLAS threads only add overhead (10x on a busy 2-core box)
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(X, y, groups)

    def _fit(self, X: Any, y: Any, groups: Any) -> TransferLogistic:
        X, y = self._prepare_fit(X, y)
        Z = _signed_log(X)
        g = np.asarray(groups) if groups is not None else None
        w = benchmark_weights(g, y.size) if self.balance_benchmarks else None
        self.cv_aee_: dict[float, float] = {}
        C = self.default_C
        if g is not None and np.unique(g).size >= 2 and len(self.C_grid) > 1:
            for c in self.C_grid:
                errors = []
                for held in np.unique(g):
                    tr, te = g != held, g == held
                    fitted = self._fit_one(Z[tr], y[tr], None if w is None else w[tr], c)
                    errors.append(abs(self._predict_one(Z[te], fitted).mean() - y[te].mean()))
                self.cv_aee_[float(c)] = float(np.mean(errors))
            # smallest error; ties go to the stronger shrinkage (smaller C)
            C = min(self.cv_aee_, key=lambda c: (round(self.cv_aee_[c], 12), c))
        self.C_ = float(C)
        keep, self.scaler_, self.model_, constant = self._fit_one(Z, y, w, self.C_)
        self.kept_features_ = tuple(self.features[j] for j in keep) if self.model_ is not None else ()
        self.keep_ = keep
        if self.model_ is None:
            self.constant_ = constant
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        return self._predict_one(_signed_log(X), (self.keep_, self.scaler_, self.model_, 0.0))


#: Length-free levels, the chosen tokens' NLL, and two *summed* signals. The sums grow with answer
#: length; under the monotone constraint that is a prior (more uncertain tokens never make a right
#: answer likelier) that carries over to benchmarks with longer answers, which is where this model's
#: transfer error was largest without them (docs/results.md, "Feature sets").
MONOTONE_BOOST_FEATURES = (*ROBUST_FEATURES, "nll_mean", "sum", "nll_sum")


@register("monotone_boost")
class MonotoneBoost(_FeatureClassifier):
    """Ours: shallow histogram gradient boosting, monotone where :data:`EXPECTED_DIRECTION` knows.

    Monotonicity rules out the non-physical wiggles a forest fits to one benchmark (higher entropy
    never *raises* P(correct)); log-loss boosting starts from the (benchmark-balanced) training
    rate, so without class weights its mean stays calibrated in-distribution. ``n_threads`` caps its
    OpenMP threads (1 by default: the evaluation protocol parallelizes over compositions instead,
    and scikit-learn would otherwise take every core for a few hundred rows).
    """

    def __init__(
        self,
        features: tuple[str, ...] = MONOTONE_BOOST_FEATURES,
        learning_rate: float = 0.05,
        max_iter: int = 150,
        max_leaf_nodes: int = 8,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        balance_benchmarks: bool = True,
        random_state: int | None = 0,
        n_threads: int | None = 1,
        monotone: bool = True,
    ) -> None:
        self.features = features
        self.monotone = monotone
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.balance_benchmarks = balance_benchmarks
        self.random_state = random_state
        self.n_threads = n_threads

    def fit(self, X: Any, y: Any, groups: Any = None) -> MonotoneBoost:
        X, y = self._prepare_fit(X, y)
        self.model_: HistGradientBoostingClassifier | None = None
        if self.constant_ is not None:
            return self
        w = benchmark_weights(np.asarray(groups), y.size) if (groups is not None and self.balance_benchmarks) else None
        self.model_ = HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            monotonic_cst=[EXPECTED_DIRECTION.get(name, 0) if self.monotone else 0 for name in self.features],
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model_.fit(X, y, sample_weight=w)
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None
        compiled = compiled_for(self.model_)  # all trees at once, no OpenMP region per call
        if compiled is not None:
            return compiled.predict_proba1(X)
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            return self.model_.predict_proba(X)[:, 1]


