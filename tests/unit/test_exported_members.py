"""The package's face: every module's ``__all__`` names something real, and the seams the next
features build on (docs/architecture.md, "Where a change goes") stay exported."""

from __future__ import annotations

import ast
import importlib
from typing import Any

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "proxy" / "entropy_sentinel"


def _declares_all(path) -> bool:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def _module(path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


#: modules with an explicit face (found by parsing, so none is imported for nothing)
PUBLIC = sorted(_module(p) for p in PACKAGE.rglob("*.py") if _declares_all(p))

#: module -> names it must keep exporting: the shared vocabulary and the seams
SEAMS: dict[str, set[str]] = {
    "entropy_sentinel.types": {"EstimatorLoadError", "FeaturesByVariant", "Scorer", "ScorerCatalog", "UnscoredReason"},
    "entropy_sentinel.monitor.store": {
        "COLUMNS", "JSON_COLUMNS", "TEXT_COLUMNS", "RecordStore", "ReplayRow", "decode_row", "encode_value",
    },
    "entropy_sentinel.monitor.sinks": {"RecordSink", "RecordingSink"},
    "entropy_sentinel.monitor.memory_store": {"MemoryStore"},
    "entropy_sentinel.estimator.registry": {
        "estimator_classes", "estimator_names", "make_estimator", "qualified_name", "register",
    },
    "entropy_sentinel.estimator.artifact": {"load_artifact", "save_artifact", "allowed_types"},
    "entropy_sentinel.optional": {"MissingExtra", "require", "require_for_command"},
    "entropy_sentinel.signal": {"Trajectory", "token_signals", "trajectory_features"},
}


def test_the_walk_finds_the_public_modules():
    assert set(SEAMS) <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_exists(name):
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name", sorted(SEAMS))
def test_the_seams_are_exported(name):
    assert SEAMS[name] <= set(importlib.import_module(name).__all__)


def test_the_protocols_can_be_checked_at_runtime():
    from entropy_sentinel.monitor.sinks import RecordSink
    from entropy_sentinel.monitor.store import RecordStore
    from entropy_sentinel.types import Scorer

    for protocol in (Scorer, RecordStore, RecordSink):
        assert not isinstance(object(), protocol)  # TypeError unless @runtime_checkable


def test_the_runtime_scorer_is_a_scorer():
    from entropy_sentinel.estimator.scorer import ArtifactScorer
    from entropy_sentinel.types import Scorer

    scorer: Any = ArtifactScorer(estimator=None, metadata={"features": ["mean"]})
    assert isinstance(scorer, Scorer)


def test_the_class_paths_stored_in_artifacts_stay_put():
    """skops names a class by its dotted path: shipped and users' saved models name these."""
    from entropy_sentinel.estimator.registry import estimator_classes, qualified_name

    paths = {cls.registry_name: qualified_name(cls) for cls in estimator_classes()}
    assert paths | {
        "constant": "entropy_sentinel.estimator.estimators.ConstantEstimator",
        "paper_forest": "entropy_sentinel.estimator.estimators.PaperForest",
        "atc": "entropy_sentinel.estimator.estimators.ATC",
        "logistic": "entropy_sentinel.estimator.estimators.LogisticEstimator",
        "transfer_logistic": "entropy_sentinel.estimator.transfer.TransferLogistic",
        "monotone_boost": "entropy_sentinel.estimator.transfer.MonotoneBoost",
    } == paths
