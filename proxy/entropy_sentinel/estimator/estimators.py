"""Estimators of P(correct) from a response's entropy features, with a scikit-learn interface.

Every estimator takes a 2-D matrix whose columns are named, in order, by its ``features`` parameter
(so an artifact's metadata can say which columns a scorer must build), labels y in {0, 1}
(1 = correct), and an optional ``groups`` array (the benchmark of each row) that the transfer-aware
ones use. ``predict_proba`` returns (n, 2) with ``classes_ == [0, 1]``; the slice estimate is the
mean of column 1, so what matters for the product is that this *mean* is right on a benchmark the
estimator never saw (AEE), more than per-response ranking.

* :class:`ConstantEstimator` the baseline: the training slices' mean accuracy, whatever the features.
* :class:`PaperForest`      the paper: balanced random forest, small AUROC-scored grid, calibrated.
* :class:`ATC`              average thresholded confidence (Garg et al. 2022) on one statistic; the
                            paper's own CSVs say it beats the forest on median AEE (0.077 vs 0.128).
* :class:`AverageConfidence` the label-free baseline: P(correct) = the model's own probability of
                            the answer it gave, exp(-nll_sum); nothing is learnt from labels.
* :class:`LogisticEstimator` standardized logistic regression.
* :class:`TransferLogistic`  ours: a few robust features, signed-log, benchmark-balanced weights,
                            sign constraints, shrinkage chosen by leave-one-benchmark-out AEE.
* :class:`MonotoneBoost`    ours: shallow gradient boosting, monotone in each entropy level.

A training set with a single class (a benchmark the model always fails) cannot fit a classifier;
every estimator then predicts that constant, which is also the best AEE-wise guess.
"""


from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from entropy_sentinel.estimator.registry import estimator_classes, estimator_names, make_estimator, register
from entropy_sentinel.signal.features import ENTROPY_FEATURES

__all__ = [
    "ATC",
    "ESTIMATORS",
    "ESTIMATOR_CLASSES",
    "EXPECTED_DIRECTION",
    "AverageConfidence",
    "ConstantEstimator",
    "LogisticEstimator",
    "MonotoneBoost",
    "PaperForest",
    "TransferLogistic",
    "benchmark_weights",
    "feature_matrix",
    "make_estimator",
]

from entropy_sentinel.estimator.base import (  # noqa: F401  (re-exported for callers)
    EXPECTED_DIRECTION,
    ROBUST_FEATURES,
    _cv_splits,
    _FeatureClassifier,
    _folds_have_both_classes,
    _signed_log,
    benchmark_weights,
    feature_matrix,
)


@register("constant")
class ConstantEstimator(_FeatureClassifier):
    """The baseline every estimator must beat: P(correct) = the training slices' mean accuracy.

    It reads no feature (``features`` is kept only so a scorer can build the same matrix), so any
    AEE it reaches is what "guess the average" gives on these slices. With ``groups`` the mean is
    over benchmarks (each benchmark's accuracy counts once), else over responses.

    Fitted attributes: ``p_`` (the constant), ``classes_``, ``n_features_in_``.
    """

    def __init__(self, features: tuple[str, ...] = ("mean",)) -> None:
        self.features = features

    def fit(self, X: Any, y: Any, groups: Any = None) -> ConstantEstimator:
        X, y = self._prepare_fit(X, y)
        w = benchmark_weights(np.asarray(groups), y.size) if groups is not None else None
        self.p_ = float(np.average(y, weights=w))
        self.constant_ = self.p_
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - constant_ answers first
        return np.full(X.shape[0], self.p_)


@register("paper_forest")
class PaperForest(_FeatureClassifier):
    """The paper's classifier: RandomForest(class_weight="balanced"), grid-searched, then calibrated.

    The grid (max_depth x min_samples_split) is scored by AUROC over folds by benchmark
    (GroupKFold, when ``fit`` gets ``groups`` with >= 2 benchmarks and ``group_cv``) or stratified
    folds. Calibration then refits the best forest inside ``CalibratedClassifierCV`` over stratified
    folds; ``method="sigmoid"`` is what the paper's code does, ``"isotonic"`` what its text says.
    Balancing the classes shifts the forest's scores, calibration is what brings their mean back to
    the training accuracy.
    """

    def __init__(
        self,
        features: tuple[str, ...] = ENTROPY_FEATURES,
        method: str = "sigmoid",
        n_estimators: int = 100,
        max_depth_grid: tuple[int | None, ...] = (None, 5, 10),
        min_samples_split_grid: tuple[int, ...] = (2, 10),
        cv: int = 3,
        group_cv: bool = True,
        random_state: int | None = 0,
        n_jobs: int | None = 1,
    ) -> None:
        self.features = features
        self.method = method
        self.n_estimators = n_estimators
        self.max_depth_grid = max_depth_grid
        self.min_samples_split_grid = min_samples_split_grid
        self.cv = cv
        self.group_cv = group_cv
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: Any, y: Any, groups: Any = None) -> PaperForest:
        if self.method not in ("sigmoid", "isotonic"):
            raise ValueError(f"method must be 'sigmoid' or 'isotonic', not {self.method!r}")
        X, y = self._prepare_fit(X, y)
        self.best_params_: dict[str, Any] = {}
        self.calibrated_: CalibratedClassifierCV | None = None
        self.forest_: RandomForestClassifier | None = None
        if self.constant_ is not None:
            return self
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            class_weight="balanced",
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        g = np.asarray(groups) if (groups is not None and self.group_cv) else None
        grid_splits = _cv_splits(y, g, self.cv, self.random_state)
        calib_splits = _cv_splits(y, None, self.cv, self.random_state)
        if grid_splits is None or calib_splits is None:
            # Too few of one class to cross-validate: an uncalibrated balanced forest would be biased
            # towards 1/2, the training accuracy is the honest estimate.
            self.constant_ = float(y.mean())
            return self
        grid = GridSearchCV(
            forest,
            {"max_depth": list(self.max_depth_grid), "min_samples_split": list(self.min_samples_split_grid)},
            scoring="roc_auc",
            cv=grid_splits,
            refit=False,
            n_jobs=1,
            error_score=np.nan,
        )
        grid.fit(X, y)
        self.best_params_ = dict(grid.best_params_)
        best = clone(forest).set_params(**self.best_params_)
        self.calibrated_ = CalibratedClassifierCV(best, method=self.method, cv=calib_splits)
        self.calibrated_.fit(X, y)
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        assert self.calibrated_ is not None
        proba = self.calibrated_.predict_proba(X)
        return proba[:, list(self.calibrated_.classes_).index(1)]


@register("atc")
class ATC(_FeatureClassifier):
    """Average thresholded confidence (Garg et al., ICLR 2022) on one statistic.

    Confidence is ``-statistic`` when lower is more confident (entropy, the default) else
    ``statistic``. ``fit`` chooses the threshold t so that the fraction of training responses with
    confidence above t equals the training accuracy: with m = round(acc * n) responses to count as
    correct, t sits halfway between the m-th and (m+1)-th most confident (exactly m lie above it
    unless they tie there). The labels are used only through their mean.

    ``predict_proba`` is hard by default (``temperature=0``): P(correct) = 1 above the threshold,
    0 below, so the slice estimate (the mean) is exactly ATC's estimate. With ``temperature > 0`` it
    is the logistic of (confidence - t) / (temperature * training std of the statistic), smoother
    per response but its mean is no longer ATC's.
    """

    def __init__(
        self,
        features: tuple[str, ...] = ("max",),
        statistic: str | None = None,
        lower_is_confident: bool = True,
        temperature: float = 0.0,
    ) -> None:
        self.features = features
        self.statistic = statistic
        self.lower_is_confident = lower_is_confident
        self.temperature = temperature

    def _column(self) -> int:
        return self._column_of(self.statistic if self.statistic is not None else self.features[0])

    def _confidence(self, X: np.ndarray) -> np.ndarray:
        s = X[:, self._column()]
        return -s if self.lower_is_confident else s

    def fit(self, X: Any, y: Any, groups: Any = None) -> ATC:
        X, y = self._prepare_fit(X, y)
        conf = np.sort(self._confidence(X))  # ascending
        n = conf.size
        self.train_accuracy_ = float(y.mean())
        m = round(self.train_accuracy_ * n)
        if m <= 0:
            t = conf[-1]  # nothing strictly above the most confident
        elif m >= n:
            t = conf[0] - 1.0  # everything above
        else:
            t = 0.5 * (conf[n - m - 1] + conf[n - m])
        self.threshold_ = float(t)
        scale = float(np.std(conf))
        self.scale_ = scale if scale > 0 else 1.0
        # ATC never needs the single-class fallback: its threshold already encodes acc 0 or 1.
        self.constant_ = None
        return self

    @property
    def statistic_threshold_(self) -> float:
        """The threshold on the statistic itself (responses with a lower max entropy count as correct)."""
        return -self.threshold_ if self.lower_is_confident else self.threshold_

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        margin = self._confidence(X) - self.threshold_
        if self.temperature <= 0:
            return (margin > 0).astype(np.float64)
        z = np.clip(margin / (self.temperature * self.scale_), -500, 500)
        return 1.0 / (1.0 + np.exp(-z))


@register("average_confidence")
class AverageConfidence(_FeatureClassifier):
    """Average confidence (AC): P(correct) = the model's own probability of the answer it generated.

    For a response of tokens t_1..t_n, exp(-nll_sum) = prod_i p(t_i | prefix) is what the model
    itself puts on that exact answer (each factor comes from the chosen token's logprob, which the
    upstream returns exactly, so top-k truncation does not touch it). Averaged over a slice it is
    the classic label-free accuracy estimate (Hendrycks & Gimpel 2017; Guillory et al. 2021 call it
    AC): the simplest baseline a learnt estimator has to beat, because it needs neither labels nor
    training slices and so carries no bias from the slices it was trained on. A small model is
    under-confident where it is mostly right, so it reads low there (docs/results.md).

    ``fit`` reads no label (it only checks the input's shape and records the fill values); a
    training set of one class changes nothing. Fitted attributes: ``classes_``,
    ``n_features_in_``, ``fill_values_`` (for a missing statistic: the training median).
    """

    def __init__(self, features: tuple[str, ...] = ("nll_sum",), statistic: str = "nll_sum") -> None:
        self.features = features
        self.statistic = statistic

    def fit(self, X: Any, y: Any, groups: Any = None) -> AverageConfidence:
        self._column_of(self.statistic)
        self._prepare_fit(X, y)
        self.constant_ = None  # label-free: no single-class fallback either
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        return np.exp(-np.clip(X[:, self._column_of(self.statistic)], 0.0, None))


@register("logistic")
class LogisticEstimator(_FeatureClassifier):
    """Standardized logistic regression (no class weighting, so mean P = training accuracy).

    ``transform="signed_log"`` applies sign(x) log(1 + |x|) before standardizing.
    """

    def __init__(
        self,
        features: tuple[str, ...] = ENTROPY_FEATURES,
        C: float = 1.0,
        transform: str = "none",
        max_iter: int = 1000,
    ) -> None:
        self.features = features
        self.C = C
        self.transform = transform
        self.max_iter = max_iter

    def _transformed(self, X: np.ndarray) -> np.ndarray:
        if self.transform == "none":
            return X
        if self.transform == "signed_log":
            return _signed_log(X)
        raise ValueError(f"transform must be 'none' or 'signed_log', not {self.transform!r}")

    def fit(self, X: Any, y: Any, groups: Any = None) -> LogisticEstimator:
        X, y = self._prepare_fit(X, y)
        Z = self._transformed(X)
        self.scaler_ = StandardScaler().fit(Z)
        self.model_: LogisticRegression | None = None
        if self.constant_ is None:
            self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
            with threadpool_limits(limits=1, user_api="blas"):  # a few columns: threads only cost
                self.model_.fit(self.scaler_.transform(Z), y)
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None
        return self.model_.predict_proba(self.scaler_.transform(self._transformed(X)))[:, 1]


# after this module's classes, so registration order is the report order (transfer imports only base)
from entropy_sentinel.estimator.transfer import MonotoneBoost, TransferLogistic  # noqa: E402

#: Names accepted by :func:`make_estimator` (every registered estimator).
ESTIMATORS: tuple[str, ...] = estimator_names()

#: The classes an artifact may hold (see :mod:`entropy_sentinel.estimator.artifact`).
ESTIMATOR_CLASSES: tuple[type, ...] = estimator_classes()
