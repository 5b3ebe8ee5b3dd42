"""``entropy-sentinel check``: a fixed artifact on labelled traces (evaluation/check.py)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import orjson
import pytest
from entropy_sentinel import cli
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.evaluation.check import check_artifact
from entropy_sentinel.traces.format import slice_name

from tests.paths import ROOT

TRACES = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"
PICK = ("ling_plural", "svamp", "sciq")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    path = tmp_path_factory.mktemp("check") / "t.jsonl"
    with gzip.open(TRACES) as src, open(path, "wb") as out:
        for line in src:
            row = orjson.loads(line)
            if slice_name(row) in PICK:  # the default prompt set only
                out.write(line)
    return path


def test_each_benchmark_is_a_slice_scored_as_the_proxy_would(traces):
    scorer = ArtifactScorer.load(resolve_artifact("builtin"))
    result = check_artifact([traces], scorer)
    rows = [orjson.loads(line) for line in traces.read_bytes().splitlines()]
    by = {r["slice"]: r for r in result["slices"]}
    assert set(by) == set(PICK)
    meta = scorer.metadata["training_benchmarks"]
    constant = sum(v["n"] * v["accuracy"] for v in meta.values()) / sum(v["n"] for v in meta.values())
    for name in PICK:
        mine = [r for r in rows if r["benchmark"] == name]
        p = np.array(scorer([r["features_by_variant"] for r in mine]))  # the proxy's own scoring call
        y = np.array([r["label"] for r in mine])
        s = by[name]
        assert s["n"] == len(mine) and s["true"] == pytest.approx(y.mean())
        assert s["estimate"] == pytest.approx(p.mean(), abs=1e-12)
        assert s["aee"] == pytest.approx(abs(p.mean() - y.mean()))
        assert s["lower"] <= s["estimate"] <= s["upper"] and s["covers"] == (s["lower"] <= y.mean() <= s["upper"])
        assert s["constant"] == pytest.approx(constant) and s["constant_aee"] == pytest.approx(abs(constant - y.mean()))
    summary = result["summary"]
    assert summary["slices"] == 3 and summary["slices_at_least_0.5"] == 1  # ling_plural, 0.867
    assert summary["median_aee"] == pytest.approx(np.median([s["aee"] for s in result["slices"]]))
    assert summary["over_estimated"] == sum(s["error"] > 0 for s in result["slices"])


def test_the_command_writes_a_table_json_and_plot(traces, tmp_path, capsys):
    assert cli.main(["check", "--traces", str(traces), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| ling_plural | 300 |" in printed and "median AEE" in printed and "coverage" in printed
    data = json.loads((tmp_path / "check.json").read_text())
    assert data["estimator"]["estimator"] == "monotone_boost" and len(data["slices"]) == 3
    assert (tmp_path / "check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "compare.png").exists()
    assert cli.main(["check", "--traces", str(tmp_path / "none.jsonl"), "--out", str(tmp_path)]) == 2


def test_compare_writes_its_table_json_and_plot(traces, tmp_path, capsys):
    again = f"again={resolve_artifact('builtin')}"
    assert cli.main(["check", "--traces", str(traces), "--out", str(tmp_path), "--compare", again]) == 0
    assert "compare.png" in capsys.readouterr().out
    rows = json.loads((tmp_path / "compare.json").read_text())["estimators"]
    assert list(rows) == ["default", "again", "constant"]
    assert rows["again"]["median_aee"] == rows["default"]["median_aee"]  # the same artifact twice
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_ranks_estimators_with_a_slice_bootstrap():
    from entropy_sentinel.evaluation.check import compare_lines, compare_results

    def result(errors):
        trues = [0.9, 0.6, 0.2, 0.1]  # two slices at >= 0.5
        slices = [
            {"slice": f"s{i}", "true": t, "aee": e, "constant_aee": 0.3}
            for i, (t, e) in enumerate(zip(trues, errors, strict=True))
        ]
        return {"slices": slices, "summary": {"spearman": 0.5, "coverage": 1.0, "mean_width": 0.4}}

    got = compare_results({"default": result([0.01, 0.02, 0.03, 0.04]), "other": result([0.1, 0.2, 0.1, 0.2])})
    rows = got["estimators"]
    assert list(rows) == ["default", "other", "constant"]
    assert rows["default"]["median_aee"] == pytest.approx(0.025)
    assert rows["constant"]["median_aee"] == pytest.approx(0.3)
    assert rows["default"]["lowest_share"] == 1.0 and rows["other"]["lowest_share"] == 0.0
    assert rows["default"]["median_aee_5"] <= 0.025 <= rows["default"]["median_aee_95"]
    # the median over the slices at >= 0.5 only (s0, s1): 0.015 and 0.15, the constant 0.3
    assert rows["default"]["median_aee_at_least_0.5"] == pytest.approx(0.015)
    assert rows["other"]["median_aee_at_least_0.5"] == pytest.approx(0.15)
    assert rows["constant"]["median_aee_at_least_0.5"] == pytest.approx(0.3) and got["slices_at_least_0.5"] == 2
    assert "| default | 0.025 |" in "\n".join(compare_lines(got))
    assert "| 100% | 0.015 |" in "\n".join(compare_lines(got))
    with pytest.raises(ValueError, match="other slices"):
        compare_results({"a": result([0.1] * 4), "b": {"slices": [{"slice": "x", "aee": 0.1, "constant_aee": 0.1}]}})
