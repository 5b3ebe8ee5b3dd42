"""Estimators keyed by model: ``estimator.models`` (glob -> artifact) loaded into an immutable catalog.

A response is scored by the artifact of the first glob (:func:`fnmatch.fnmatchcase`: case-sensitive,
``*``, ``?``, ``[...]``) that matches its model, in configuration order; a model no glob matches, or
one mapped to ``none``, gets no scorer (the gateway records it unscored: ``no_estimator_for_model``),
never another model's estimator. An artifact named by several globs is loaded once.

A catalog never changes. :meth:`EstimatorCatalog.reloaded` calls its ``source`` again (``serve``'s
re-reads the configuration file's estimator section) and loads every artifact anew into a new
catalog; anything wrong (the section, a missing file, a file that is not a skops artifact, a type
outside the registry's allow-list) raises :class:`~entropy_sentinel.types.EstimatorLoadError` and
the caller keeps the catalog it has. Artifacts load through
:func:`~entropy_sentinel.estimator.artifact.load_artifact` only: skops with the allow-list, never pickle.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_sentinel.estimator.artifact import ArtifactError
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.signal import Trajectory
from entropy_sentinel.types import EstimatorLoadError, FeaturesByVariant, Scorer

__all__ = ["CatalogEntry", "EstimatorCatalog", "MapSource"]

#: what a catalog is built from, and rebuilt from on reload: (glob, artifact) pairs in matching order
MapSource = Callable[[], Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    glob: str
    #: as configured: a path, "builtin" or "none"
    artifact: str
    #: the file loaded; None for "none" (the glob's models are left unscored)
    path: Path | None
    scorer: ArtifactScorer | None
    sha256: str | None
    pattern: re.Pattern[str]

    def describe(self) -> dict[str, Any]:
        meta = self.scorer.metadata if self.scorer is not None else {}
        return {
            "glob": self.glob,
            "artifact": self.artifact,
            "path": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "model": meta.get("model"),
            "estimator": meta.get("estimator"),
            "scoring": self.scorer is not None,
        }


def sample_features() -> FeaturesByVariant:
    """The statistics of a tiny two-token response, under every entropy variant: what an artifact
    must be able to score (its variant, its feature columns) before it is taken."""
    traj = Trajectory()
    traj.add([2, 2], [-0.1, -2.5, -0.3, -1.5], [-0.1, -0.3])
    return traj.features_by_variant()


def _load(glob: str, artifact: str, path: Path) -> tuple[ArtifactScorer, str]:
    """The scorer of one artifact and its file's sha256; every failure as an EstimatorLoadError."""
    where = f"estimator.models[{glob!r}] = {artifact!r}"
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        scorer = ArtifactScorer.load(path)
    except FileNotFoundError:
        raise EstimatorLoadError(f"{where}: no such file {path}") from None
    except IsADirectoryError:
        raise EstimatorLoadError(f"{where}: {path} is a directory, not an artifact") from None
    except (ArtifactError, OSError) as exc:
        raise EstimatorLoadError(f"{where}: {exc}") from None
    except KeyError as exc:  # an artifact of ours without the features column list
        raise EstimatorLoadError(f"{where}: the artifact's metadata has no {exc} entry") from None
    except Exception as exc:  # skops failing on a damaged file: name the type, the message may be long
        raise EstimatorLoadError(f"{where}: {path} could not be loaded ({type(exc).__name__})") from None
    try:  # also its first, slow call, paid here rather than by the first response
        scores = scorer([sample_features()])
    except Exception as exc:
        raise EstimatorLoadError(
            f"{where}: {path} loads but fails to score a response ({type(exc).__name__}: {exc}); its variant "
            f"{scorer.variant!r} and features {list(scorer.features)} must be ones the proxy computes"
        ) from None
    if len(scores) != 1 or not 0.0 <= scores[0] <= 1.0:
        raise EstimatorLoadError(f"{where}: {path} scores a response outside [0, 1]")
    return scorer, digest


class EstimatorCatalog:
    """Glob -> loaded estimator, immutable; implements :class:`~entropy_sentinel.types.ScorerCatalog`."""

    def __init__(self, entries: Sequence[CatalogEntry], source: MapSource | None = None) -> None:
        self._entries = tuple(entries)
        self._source = source
        self._scorers: tuple[ArtifactScorer, ...] = tuple(
            {id(e.scorer): e.scorer for e in self._entries if e.scorer is not None}.values()
        )

    @classmethod
    def load(cls, mapping: Sequence[tuple[str, str]], source: MapSource | None = None) -> EstimatorCatalog:
        """Load every artifact of ``mapping`` (each file once); ``source`` is what :meth:`reloaded` re-reads."""
        loaded: dict[Path, tuple[ArtifactScorer, str]] = {}
        entries = []
        for glob, artifact in mapping:
            path = resolve_artifact(artifact)
            scorer = digest = None
            if path is not None:
                if path not in loaded:
                    loaded[path] = _load(glob, artifact, path)
                scorer, digest = loaded[path]
            entries.append(CatalogEntry(glob, artifact, path, scorer, digest, re.compile(fnmatch.translate(glob))))
        return cls(entries, source)

    @classmethod
    def from_source(cls, source: MapSource) -> EstimatorCatalog:
        try:
            mapping = source()
        except (ValueError, OSError) as exc:  # ConfigError is a ValueError; the file gone or unreadable
            raise EstimatorLoadError(str(exc), kind="config") from None
        return cls.load(mapping, source)

    def reloaded(self) -> EstimatorCatalog:
        if self._source is None:
            raise EstimatorLoadError("this estimator map was not loaded from a configuration: nothing to reload",
                                     kind="unavailable")
        return EstimatorCatalog.from_source(self._source)

    @property
    def entries(self) -> tuple[CatalogEntry, ...]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry_for(self, model: str | None) -> CatalogEntry | None:
        """The first entry whose glob matches ``model`` (None, no model named, is matched as "")."""
        name = model or ""
        return next((e for e in self._entries if e.pattern.match(name)), None)

    def scorer_for(self, model: str | None) -> Scorer | None:
        entry = self.entry_for(model)
        return None if entry is None else entry.scorer

    def scorers(self) -> tuple[ArtifactScorer, ...]:
        return self._scorers

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self._entries]

    def check_models(self, upstream_models: Sequence[str]) -> list[str]:
        warnings = []
        for model in upstream_models:
            entry = self.entry_for(model)
            if entry is None or entry.scorer is None:
                warnings.append(
                    f"the upstream serves {model!r}, which no estimator.models glob maps to an artifact: its "
                    "responses are recorded unscored (no_estimator_for_model)"
                )
                continue
            warning = entry.scorer.check_model([model])
            if warning:
                warnings.append(f"{warning} (estimator.models[{entry.glob!r}])")
        return warnings
