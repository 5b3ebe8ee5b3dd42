"""A fitted HistGradientBoostingClassifier's trees as flat arrays, evaluated for all trees at once.

scikit-learn predicts one tree after the other, each through an OpenMP region, and the proxy scores
one response (one row) at a time: 150 trees cost milliseconds per call, and limiting the OpenMP
threads around every call (``threadpoolctl``) rescans the loaded libraries each time, a few more.
Here every tree is a row of padded node arrays; a batch walks all trees together, one numpy step per
tree level (depth ≤ ~10), then adds the leaf values to the baseline. Same splits, same leaf values,
same sigmoid as scikit-learn: the scores agree to ~1e-15 (the sum over trees is reassociated).

Only what the shipped estimators use is supported (binary classification, numeric features); for
anything else :func:`compile_trees` returns None and the caller keeps scikit-learn's own predict.
Nothing here is stored in an artifact: the arrays are derived from the fitted model when first
needed (see :func:`compiled_for`).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CompiledTrees", "compile_trees", "compiled_for"]


@dataclass(frozen=True, slots=True)
class CompiledTrees:
    """Padded (n_trees, max_nodes) node arrays of one binary HistGradientBoostingClassifier."""

    feature: np.ndarray  # intp: the feature each node splits on (0 at leaves)
    threshold: np.ndarray  # float64: go left when x <= threshold
    missing_left: np.ndarray  # bool: where a NaN goes
    left: np.ndarray  # intp: child indexes (a leaf points to itself, so extra steps stay put)
    right: np.ndarray
    value: np.ndarray  # float64: leaf values (learning rate already applied)
    depth: int  # steps that reach every leaf
    baseline: float

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The raw (log-odds) prediction of every row of ``X`` (n, n_features)."""
        n, n_trees = X.shape[0], self.feature.shape[0]
        trees = np.arange(n_trees)[None, :]
        rows = np.arange(n)[:, None]
        node = np.zeros((n, n_trees), dtype=np.intp)
        for _ in range(self.depth):
            x = X[rows, self.feature[trees, node]]
            go_left = (x <= self.threshold[trees, node]) | (np.isnan(x) & self.missing_left[trees, node])
            node = np.where(go_left, self.left[trees, node], self.right[trees, node])
        return self.baseline + self.value[trees, node].sum(axis=1)

    def predict_proba1(self, X: np.ndarray) -> np.ndarray:
        """P(class 1) per row, as ``HistGradientBoostingClassifier.predict_proba(X)[:, 1]``."""
        return 1.0 / (1.0 + np.exp(-self.raw(np.asarray(X, dtype=np.float64))))


def compile_trees(model: Any) -> CompiledTrees | None:
    """The flat form of a fitted binary HistGradientBoostingClassifier, or None if unsupported."""
    predictors = getattr(model, "_predictors", None)
    baseline = np.asarray(getattr(model, "_baseline_prediction", np.nan), dtype=np.float64)
    if (
        not predictors
        or getattr(model, "n_trees_per_iteration_", None) != 1
        or baseline.size != 1
        or getattr(model, "is_categorical_", None) is not None
        or any(len(per_iteration) != 1 for per_iteration in predictors)
    ):
        return None
    nodes = [per_iteration[0].nodes for per_iteration in predictors]
    if any(bool(np.any(n["is_categorical"])) for n in nodes):
        return None
    width = max(len(n) for n in nodes)
    shape = (len(nodes), width)
    feature = np.zeros(shape, dtype=np.intp)
    threshold = np.zeros(shape, dtype=np.float64)
    missing_left = np.zeros(shape, dtype=bool)
    value = np.zeros(shape, dtype=np.float64)
    self_index = np.broadcast_to(np.arange(width, dtype=np.intp), shape)
    left, right = self_index.copy(), self_index.copy()
    for t, n in enumerate(nodes):
        k = len(n)
        leaf = n["is_leaf"].astype(bool)
        feature[t, :k] = np.where(leaf, 0, n["feature_idx"])
        threshold[t, :k] = n["num_threshold"]
        missing_left[t, :k] = n["missing_go_to_left"].astype(bool)
        left[t, :k] = np.where(leaf, np.arange(k), n["left"])
        right[t, :k] = np.where(leaf, np.arange(k), n["right"])
        value[t, :k] = np.where(leaf, n["value"], 0.0)
    depth = int(max(int(n["depth"].max()) for n in nodes))
    return CompiledTrees(feature, threshold, missing_left, left, right, value, depth, float(baseline.reshape(-1)[0]))


_CACHE: weakref.WeakKeyDictionary[Any, CompiledTrees | None] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def compiled_for(model: Any) -> CompiledTrees | None:
    """:func:`compile_trees` of ``model``, computed once per fitted model object (thread-safe)."""
    with _LOCK:
        try:
            return _CACHE[model]
        except KeyError:
            compiled = _CACHE[model] = compile_trees(model)
            return compiled
