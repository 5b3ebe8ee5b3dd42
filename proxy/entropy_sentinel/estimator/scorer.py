"""Turns a loaded estimator artifact into the proxy's scorer: features in, P(correct) out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from entropy_sentinel.estimator.artifact import load_artifact

log = logging.getLogger(__name__)


class ArtifactScorer:
    """Scores each choice of a response with the estimator of a skops artifact.

    Called with, per choice, the statistics under every entropy variant; it uses the variant and
    the feature columns the estimator was trained on (recorded in the artifact's metadata).
    """

    def __init__(self, estimator: Any, metadata: dict[str, Any]) -> None:
        self.estimator = estimator
        self.metadata = metadata
        self.features: tuple[str, ...] = tuple(metadata["features"])
        self.variant: str = metadata.get("entropy_variant", "topk")
        self.model: str | None = metadata.get("model")

    @classmethod
    def load(cls, path: str | Path) -> ArtifactScorer:
        estimator, metadata = load_artifact(path)
        return cls(estimator, metadata)

    def __call__(self, features_by_variant: list[dict[str, dict[str, float]]]) -> list[float]:
        rows = [[by_variant[self.variant][name] for name in self.features] for by_variant in features_by_variant]
        proba = self.estimator.predict_proba(np.asarray(rows, dtype=np.float64))
        return [float(p) for p in proba[:, 1]]

    def check_model(self, upstream_models: list[str]) -> str | None:
        """A warning when the upstream serves a model other than the one the estimator was fit on."""
        if self.model and upstream_models and self.model not in upstream_models:
            return (
                f"the estimator was trained on model {self.model!r} but the upstream serves "
                f"{', '.join(upstream_models)}: its P(correct) may be miscalibrated"
            )
        return None
