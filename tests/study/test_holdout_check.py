"""The out-of-sample checks in docs/results.md are what the code computes from the committed traces.

``data/traces/gemma-3-270m-holdout.jsonl.gz`` and ``gemma-3-270m-fresh.jsonl.gz`` hold slices collected
after the shipped estimator was fixed (items, prompt wording and data sources it never saw; the fresh
ones user-style task files, ``data/tasks/``); ``docs/results/{holdout,fresh}/check.json`` is
``entropy-sentinel check`` of the shipped artifact on each. Recomputed here, so a changed artifact,
scorer or interval recipe cannot leave the published figures stale.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import orjson
import pytest
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.evaluation.check import check_artifact

from tests.paths import ROOT

TRACE_DIR = ROOT / "data" / "traces"
HOLDOUT, FRESH = TRACE_DIR / "gemma-3-270m-holdout.jsonl.gz", TRACE_DIR / "gemma-3-270m-fresh.jsonl.gz"
#: out-of-sample set (its folder in docs/results/) -> its traces
SETS = {"holdout": [HOLDOUT], "fresh": [FRESH], "out_of_sample": [HOLDOUT, FRESH]}
STUDY_TRACES = TRACE_DIR / "gemma-3-270m.jsonl.gz"


def benchmarks(path) -> set[str]:
    with gzip.open(path) as fh:
        return {orjson.loads(line)["benchmark"] for line in fh}


@pytest.fixture(scope="module", params=sorted(SETS))
def checked(request) -> tuple:
    """(traces, published check.json) of one out-of-sample set."""
    return SETS[request.param], json.loads((ROOT / "docs" / "results" / request.param / "check.json").read_text())


def test_the_published_check_is_of_the_shipped_artifact_and_the_committed_traces(checked):
    traces, published = checked
    assert published["artifact_sha256"] == hashlib.sha256(resolve_artifact("builtin").read_bytes()).hexdigest()
    assert published["traces_sha256"] == {t.name: hashlib.sha256(t.read_bytes()).hexdigest() for t in traces}


def test_the_published_figures_are_recomputed_from_the_traces(checked):
    traces, published = checked
    result = check_artifact(traces, ArtifactScorer.load(resolve_artifact("builtin")))
    assert [s["slice"] for s in result["slices"]] == [s["slice"] for s in published["slices"]]
    for got, want in zip(result["slices"], published["slices"], strict=True):
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, abs=1e-9, nan_ok=True) if isinstance(value, float) else value)
    for key, value in published["summary"].items():
        got = result["summary"][key]
        assert got == (pytest.approx(value, abs=1e-9, nan_ok=True) if isinstance(value, float) else value), key


@pytest.mark.parametrize("traces", [HOLDOUT, FRESH], ids=["holdout", "fresh"])
def test_the_out_of_sample_slices_are_not_in_the_training_traces(traces):
    """Out of sample: no benchmark of either set is among those the artifact was fit on."""
    held_benchmarks = benchmarks(traces)
    assert not held_benchmarks & benchmarks(STUDY_TRACES)
    assert not held_benchmarks & set(ArtifactScorer.load(resolve_artifact("builtin")).metadata["training_benchmarks"])


def test_the_fresh_slices_are_not_the_holdout_ones():
    """The second check is of tasks the first did not have either."""
    assert not benchmarks(FRESH) & benchmarks(HOLDOUT)
