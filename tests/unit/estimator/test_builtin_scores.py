"""The shipped estimator scores the committed traces exactly as when its scores were pinned.

A refactor (moves, registry, scorer protocol) must not change a single score; retraining the
builtin artifact on purpose re-pins them with ``scripts/pin_builtin_scores.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, ArtifactScorer

from tests.paths import ROOT

PIN = json.loads((ROOT / "tests" / "fixtures" / "builtin_scores.json").read_text())


def _pinned_rows() -> list[dict]:
    spec = importlib.util.spec_from_file_location("pin_builtin_scores", ROOT / "scripts" / "pin_builtin_scores.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pinned_rows()


def test_the_pin_is_for_the_shipped_artifact() -> None:
    assert hashlib.sha256(BUILTIN_ARTIFACT.read_bytes()).hexdigest() == PIN["artifact_sha256"], (
        "the builtin artifact changed: re-pin with scripts/pin_builtin_scores.py if that was on purpose"
    )


def test_builtin_scores_unchanged_on_the_committed_traces() -> None:
    rows = _pinned_rows()
    assert [r["request_id"] for r in rows] == PIN["request_ids"]
    scores = ArtifactScorer.load(BUILTIN_ARTIFACT)([r["features_by_variant"] for r in rows])
    np.testing.assert_allclose(scores, PIN["p_correct"], rtol=0, atol=1e-9)
    # the pinned scores discriminate (a scorer answering a constant would fail the comparison above)
    assert np.ptp(PIN["p_correct"]) > 0.5
