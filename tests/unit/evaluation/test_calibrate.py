"""calibrate's own decisions (the end-to-end run on llama-server is tests/integration/test_calibrate.py)."""

from __future__ import annotations

import pytest
from entropy_sentinel import cli
from entropy_sentinel.benchmarks.item import BenchmarkUnavailable
from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.evaluation import calibrate as cal


def test_the_budget_is_split_evenly_and_must_cover_every_benchmark():
    assert cal.split_budget(1000, ["a", "b", "c"]) == {"a": 334, "b": 333, "c": 333}
    with pytest.raises(cal.CalibrateError, match="too small"):
        cal.split_budget(5, ["a", "b", "c"])


def test_the_default_mix_spans_families_and_leaves_big_bench_out():
    assert len({family_of(b) for b in cal.DEFAULT_MIX}) >= 3
    assert not any(b.startswith(("arith_", "ling_", "wikidata_", "word_", "object_counting", "unit_addition"))
                   for b in cal.DEFAULT_MIX)


def test_unavailable_benchmarks_are_skipped_with_the_reason(monkeypatch):
    def fake(name, limit=None):
        if name == "arith_2d":
            raise BenchmarkUnavailable("set SENTINEL_BIGBENCH_DIR")
        if name == "no_such":
            raise KeyError("unknown benchmark 'no_such'")
        return []

    monkeypatch.setattr(cal, "load_benchmark", fake)
    assert cal.available(["svamp", "arith_2d", "no_such"]) == (
        ["svamp"], {"arith_2d": "set SENTINEL_BIGBENCH_DIR", "no_such": "unknown benchmark 'no_such'"}
    )


async def test_one_family_is_refused_before_anything_is_sent(monkeypatch, tmp_path):
    monkeypatch.setattr(cal, "load_benchmark", lambda name, limit=None: [])
    with pytest.raises(cal.CalibrateError, match="2 task families"):
        await cal.calibrate("http://127.0.0.1:9", "m", tmp_path / "a.skops", benchmarks=["svamp", "gsm8k"])


async def test_a_traces_file_of_another_model_is_refused(tmp_path):
    traces = tmp_path / "t.jsonl"
    traces.write_text('{"model": "other"}\n')
    with pytest.raises(cal.CalibrateError, match="other"):
        await cal.calibrate("http://127.0.0.1:9", "m", tmp_path / "a.skops", traces=traces)


def test_the_config_lines_map_the_model_to_the_artifact(tmp_path):
    assert cal.config_lines("org/model-1", tmp_path / "a.skops") == [
        "estimator:", "  models:", f'    "org/model-1": "{tmp_path / "a.skops"}"'
    ]


def test_the_cli_has_the_command():
    args = cli.build_parser().parse_args(["calibrate", "--proxy", "http://x", "--model", "m", "--no-load"])
    assert (args.budget, args.no_load, args.out, args.traces) == (1000, True, None, None)


def test_a_validation_with_no_auroc_at_all_reports_nan_without_a_warning(recwarn):
    import math

    from entropy_sentinel.evaluation.training import _nanmean

    assert math.isnan(_nanmean([float("nan"), float("nan")])) and _nanmean([0.5, float("nan"), 0.7]) == 0.6
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
