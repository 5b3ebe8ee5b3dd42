"""Estimators of P(correct) from a response's entropy features, with a scikit-learn interface.

Every estimator takes a 2-D matrix whose columns are named, in order, by its ``features`` parameter
(so an artifact's metadata can say which columns a scorer must build), labels y in {0, 1}
(1 = correct), and an optional ``groups`` array (the benchmark of each row) that the transfer-aware
ones use. ``predict_proba`` returns (n, 2) with ``classes_ == [0, 1]``; the slice estimate is the
mean of column 1, so what matters for the product is that this *mean* is right on a benchmark the
estimator never saw (AEE), more than per-response ranking.

* :class:`PaperForest`      the paper: balanced random forest, small AUROC-scored grid, calibrated.
* :class:`ATC`              average thresholded confidence (Garg et al. 2022) on one statistic; the
                            paper's own CSVs say it beats the forest on median AEE (0.077 vs 0.128).
* :class:`LogisticEstimator` standardized logistic regression.
* :class:`TransferLogistic`  ours: a few robust features, signed-log, benchmark-balanced weights,
                            sign constraints, shrinkage chosen by leave-one-benchmark-out AEE.
* :class:`MonotoneBoost`    ours: shallow gradient boosting, monotone in each entropy level.

A training set with a single class (a benchmark the model always fails) cannot fit a classifier;
every estimator then predicts that constant, which is also the best AEE-wise guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from entropy_sentinel.signal.features import ENTROPY_FEATURES

__all__ = [
    "ATC",
    "ESTIMATORS",
    "ESTIMATOR_CLASSES",
    "EXPECTED_DIRECTION",
    "LogisticEstimator",
    "MonotoneBoost",
    "PaperForest",
    "TransferLogistic",
    "benchmark_weights",
    "feature_matrix",
    "make_estimator",
]

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
            raise AttributeError(f"{type(self).__name__} is not fitted")
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
        name = self.statistic if self.statistic is not None else self.features[0]
        if name not in self.features:
            raise ValueError(f"statistic {name!r} is not among the features {self.features}")
        return list(self.features).index(name)

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
        features: tuple[str, ...] = (*ROBUST_FEATURES, "nll_mean"),
        learning_rate: float = 0.05,
        max_iter: int = 150,
        max_leaf_nodes: int = 8,
        min_samples_leaf: int = 20,
        l2_regularization: float = 1.0,
        balance_benchmarks: bool = True,
        random_state: int | None = 0,
        n_threads: int | None = 1,
    ) -> None:
        self.features = features
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
            monotonic_cst=[EXPECTED_DIRECTION.get(name, 0) for name in self.features],
            early_stopping=False,
            random_state=self.random_state,
        )
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            self.model_.fit(X, y, sample_weight=w)
        return self

    def _p_correct(self, X: np.ndarray) -> np.ndarray:
        assert self.model_ is not None
        with threadpool_limits(limits=self.n_threads, user_api="openmp"):
            return self.model_.predict_proba(X)[:, 1]


_REGISTRY: dict[str, type[_FeatureClassifier]] = {
    "paper_forest": PaperForest,
    "atc": ATC,
    "logistic": LogisticEstimator,
    "transfer_logistic": TransferLogistic,
    "monotone_boost": MonotoneBoost,
}

#: Names accepted by :func:`make_estimator`.
ESTIMATORS: tuple[str, ...] = tuple(_REGISTRY)

#: The classes an artifact may hold (see :mod:`entropy_sentinel.estimator.artifact`).
ESTIMATOR_CLASSES: tuple[type, ...] = tuple(_REGISTRY.values())


def make_estimator(name: str, **params: Any) -> _FeatureClassifier:
    """A new, unfitted estimator by registry name, e.g. ``make_estimator("atc", features=("mean",))``."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}") from None
    return cls(**params)
