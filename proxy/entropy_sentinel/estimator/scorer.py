"""Turns a loaded estimator artifact into the proxy's scorer: features in, P(correct) out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from entropy_sentinel.estimator.artifact import load_artifact

log = logging.getLogger(__name__)

#: The estimator shipped with the package: the winner of docs/results.md's study, trained on the
#: committed Gemma 3 270M traces; its metadata records the study's verdict and the traces' sha256.
BUILTIN_ARTIFACT = Path(__file__).resolve().parent / "models" / "gemma-3-270m.skops"
BUILTIN_NAMES = ("builtin", "default")


def resolve_artifact(path: str) -> Path | None:
    """``estimator.path`` to a file: "builtin" is the shipped artifact; "" or "none" is no scoring."""
    if not path or path.lower() == "none":
        return None
    return BUILTIN_ARTIFACT if path.lower() in BUILTIN_NAMES else Path(path).expanduser()


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
