"""Tiny real estimator artifacts for tests of estimators keyed by model: two logistic models fitted on
synthetic entropy features that disagree (one trusts low entropy, the other high), and files an
artifact loader must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skops.io as sio
from entropy_sentinel.estimator.artifact import save_artifact
from entropy_sentinel.estimator.registry import make_estimator

FEATURES = ("mean", "max")


def fit_artifact(path: Path, low_entropy_correct: bool, model: str, seed: int = 0) -> Path:
    """A logistic estimator on (mean, max) entropy: P(correct) falls with entropy, or rises with it."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.0, 1.7, 400)
    X = np.column_stack([mean, mean + rng.uniform(0.0, 0.5, 400)])
    slope = -4.0 if low_entropy_correct else 4.0
    y = (rng.random(400) < 1 / (1 + np.exp(-slope * (mean - 0.9)))).astype(np.int64)
    est = make_estimator("logistic", features=FEATURES).fit(X, y)
    return save_artifact(
        path, est, {"features": list(FEATURES), "entropy_variant": "topk", "model": model,
                    "validation": {"note": "synthetic"}},
    )


def two_artifacts(folder: Path) -> tuple[Path, Path]:
    """``a.skops`` (low entropy = correct, fitted on "alpha") and ``b.skops`` (the reverse, on "beta")."""
    return fit_artifact(folder / "a.skops", True, "alpha"), fit_artifact(folder / "b.skops", False, "beta", seed=1)


class Smuggled:
    """Stands for any type a crafted file could make the loader instantiate."""

    def __init__(self) -> None:
        self.payload = "run me"


def smuggling_artifact(path: Path) -> Path:
    """A well-formed artifact whose estimator hides a type outside the allow-list."""
    est = make_estimator("atc", features=("mean",)).fit([[0.1], [0.2], [0.3], [0.4]], [1, 0, 1, 0])
    est.extra_ = Smuggled()
    payload = {"format": "entropy-sentinel-estimator", "format_version": 1,
               "metadata_json": '{"features": ["mean"]}', "estimator": est}
    sio.dump(payload, path)
    return path
