"""Save and load a fitted estimator with its metadata as a skops file, never as a pickle.

A pickle runs arbitrary code on load, and an estimator file is exactly the kind of thing that gets
downloaded and passed to a proxy. skops stores an object graph instead, and reports which types a
file would instantiate before it does; :func:`load_artifact` loads a file only when every type
skops does not already trust is in :func:`allowed_types` (scikit-learn internals our estimators
hold, and every estimator class registered in :mod:`entropy_sentinel.estimator.registry`), and
refuses anything else naming the offending types. The loaded object must then be one of our
estimator classes (a bare scikit-learn model, though skops trusts it, is refused too: the scorer
relies on the ``features`` column contract).

File content: a dict ``{"format", "format_version", "metadata_json", "estimator"}``; metadata
travels as a JSON string so it holds only plain JSON values.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SKLEARN_INTERNALS",
    "ArtifactError",
    "UntrustedArtifactError",
    "allowed_types",
    "load_artifact",
    "save_artifact",
]

FORMAT = "entropy-sentinel-estimator"
FORMAT_VERSION = 1

#: scikit-learn internals a fitted estimator holds that skops does not trust by default
SKLEARN_INTERNALS: frozenset[str] = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)


def allowed_types() -> frozenset[str]:
    """Types beyond skops' default-trusted set (numpy, builtins, most scikit-learn estimators) that
    an artifact may hold: every registered estimator class, and :data:`SKLEARN_INTERNALS`."""
    from entropy_sentinel.estimator.registry import estimator_classes, qualified_name

    return SKLEARN_INTERNALS | {qualified_name(cls) for cls in estimator_classes()}


class ArtifactError(ValueError):
    """The file is not an estimator artifact this version can read."""


class UntrustedArtifactError(ArtifactError):
    """The file would instantiate a type outside the allow-list; nothing was loaded."""

    def __init__(self, path: str | Path, types: list[str]) -> None:
        self.types = types
        super().__init__(
            f"refusing to load {path}: it contains types outside the estimator allow-list: {', '.join(types)}"
        )


def _default_metadata(estimator: Any) -> dict[str, Any]:
    import sklearn
    import skops

    from entropy_sentinel import __version__

    meta: dict[str, Any] = {
        "estimator": type(estimator).__name__,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
    }
    features = getattr(estimator, "features", None)
    if features is not None:
        meta["features"] = list(features)
    return meta


def save_artifact(path: str | Path, estimator: Any, metadata: Mapping[str, Any]) -> Path:
    """Write ``estimator`` with ``metadata`` to ``path`` (conventionally ``*.skops``).

    Expected metadata keys: features, entropy_variant, k, model, training_benchmarks, validation
    (metrics); created_at, package_version, library versions and the estimator class are filled in
    when absent. ``features`` must match the estimator's columns, in order.
    """
    import skops.io as sio

    meta = _default_metadata(estimator)
    meta.update(metadata)
    est_features = getattr(estimator, "features", None)
    if est_features is not None and list(meta["features"]) != list(est_features):
        raise ValueError(f"metadata features {meta['features']} differ from the estimator's {list(est_features)}")
    try:
        metadata_json = json.dumps(meta, allow_nan=True, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"metadata must be JSON-serializable: {exc}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata_json": metadata_json,
        "estimator": estimator,
    }
    tmp = path.with_name(path.name + ".tmp")
    sio.dump(payload, tmp)
    tmp.replace(path)
    return path


def load_artifact(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load ``(estimator, metadata)``; raises :class:`UntrustedArtifactError` for disallowed types
    and :class:`ArtifactError` for anything that is not an artifact of this format."""
    import skops.io as sio

    path = Path(path)
    try:
        untrusted = sorted(sio.get_untrusted_types(file=path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # a zip without a skops schema, or no zip at all
        raise ArtifactError(f"{path} is not a skops file: {exc}") from exc
    allowed = allowed_types()
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise UntrustedArtifactError(path, refused)
    payload = sio.load(path, trusted=untrusted)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path} is a skops file but not an {FORMAT} artifact")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format version {payload.get('format_version')}, this reads {FORMAT_VERSION}")
    try:
        metadata = json.loads(payload["metadata_json"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} has unreadable metadata: {exc}") from None
    from entropy_sentinel.estimator.registry import estimator_classes

    estimator = payload.get("estimator")
    if not isinstance(estimator, estimator_classes()):
        raise ArtifactError(
            f"{path} holds a {type(estimator).__module__}.{type(estimator).__qualname__}, "
            f"not one of the Entropy Sentinel estimators"
        )
    return estimator, metadata
