"""The out-of-sample check in docs/results.md is what the code computes from the committed traces.

``data/traces/gemma-3-270m-holdout.jsonl.gz`` holds slices collected after the shipped estimator was
fixed (items, prompt wording and data sources it never saw); ``docs/results/holdout/check.json`` is
``entropy-sentinel check`` of the shipped artifact on them. Recomputed here, so a changed artifact,
scorer or interval recipe cannot leave the published figures stale.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.evaluation.check import check_artifact

from tests.paths import ROOT

TRACES = ROOT / "data" / "traces" / "gemma-3-270m-holdout.jsonl.gz"
PUBLISHED = ROOT / "docs" / "results" / "holdout" / "check.json"
STUDY_TRACES = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads(PUBLISHED.read_text())


def test_the_published_check_is_of_the_shipped_artifact_and_the_committed_traces(published):
    assert published["artifact_sha256"] == hashlib.sha256(resolve_artifact("builtin").read_bytes()).hexdigest()
    assert published["traces_sha256"] == {TRACES.name: hashlib.sha256(TRACES.read_bytes()).hexdigest()}


def test_the_published_figures_are_recomputed_from_the_traces(published):
    result = check_artifact([TRACES], ArtifactScorer.load(resolve_artifact("builtin")))
    assert [s["slice"] for s in result["slices"]] == [s["slice"] for s in published["slices"]]
    for got, want in zip(result["slices"], published["slices"], strict=True):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, abs=1e-9, nan_ok=True) if isinstance(value, float) else value)
    for key, value in published["summary"].items():
        got = result["summary"][key]
        assert got == (pytest.approx(value, abs=1e-9, nan_ok=True) if isinstance(value, float) else value), key


def test_the_holdout_slices_are_not_in_the_training_traces():
    """Out of sample: no holdout benchmark is among those the artifact was fit on."""
    import gzip

    import orjson

    def benchmarks(path):
        with gzip.open(path) as fh:
            return {orjson.loads(line)["benchmark"] for line in fh}

    held_benchmarks = benchmarks(TRACES)
    assert not held_benchmarks & benchmarks(STUDY_TRACES)
    assert not held_benchmarks & set(ArtifactScorer.load(resolve_artifact("builtin")).metadata["training_benchmarks"])
