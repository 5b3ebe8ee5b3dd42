"""docs/results.md tells the truth: its numbers are what the code computes from the committed traces.

The full study (`entropy-sentinel study`, see docs/results.md for the command) takes tens of minutes
on 2 cores, so this test recomputes what is cheap in full (truncation, and from the protocol rows
every summary, the slice bootstrap, the verdict) and a fixed sample of the expensive parts (a few
training compositions of every k for every estimator; the leave-one-family-out estimates of the
default, the constant and ATC; the shipped interval's coverage under both hold-outs and the labels
curve; the prompt-shift section), and checks each against the committed results.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.estimator.artifact import load_artifact
from entropy_sentinel.estimator.estimators import make_estimator
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT
from entropy_sentinel.evaluation.protocol import (
    _evaluate_with,
    benchmark_data,
    group_by_benchmark,
    read_traces,
    summarize,
)
from entropy_sentinel.evaluation.study import StudyConfig, labels_curve, overall, truncation
from entropy_sentinel.evaluation.study import verdict as study_verdict
from entropy_sentinel.evaluation.study_report import generated_block, read_rows, render_tables
from entropy_sentinel.evaluation.study_shift import (
    bootstrap_verdict,
    holdout_estimates,
    holdout_predictions,
    interval_coverage,
    prompt_shift,
)
from entropy_sentinel.evaluation.training import DEFAULT_METHOD

from tests.paths import ROOT

TRACES = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"
TRUNCATION = ROOT / "data" / "traces" / "truncation-gemma-3-270m.json"
RESULTS = ROOT / "docs" / "results" / "results.json"
ROWS = ROOT / "docs" / "results" / "rows.csv.gz"
DOCUMENT = ROOT / "docs" / "results.md"
#: estimates are compared to 1e-3: far below the 3 digits the document prints, loose enough for a
#: CPU whose SIMD sums round differently
TOL = 1e-3


@pytest.fixture(scope="module")
def results():
    return json.loads(RESULTS.read_text())


@pytest.fixture(scope="module")
def all_grouped():
    return group_by_benchmark(t for t in read_traces(TRACES) if t.get("label") is not None)


@pytest.fixture(scope="module")
def grouped(all_grouped):
    """The slices the claims are made on: the packaged prompts (``name@set`` slices are the prompt shift)."""
    return {b: v for b, v in all_grouped.items() if "@" not in b}


@pytest.fixture(scope="module")
def rows():
    return read_rows(ROWS)


def _config(results) -> StudyConfig:
    c = dict(results["config"])
    cands = {n: (c_["estimator"], {k: tuple(v) if isinstance(v, list) else v for k, v in c_["params"].items()})
             for n, c_ in results["candidates"].items()}
    return StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()}, candidates=cands)


def test_document_shows_exactly_the_committed_results(results):
    assert generated_block(DOCUMENT.read_text()) == render_tables(results)


def test_results_are_for_the_committed_traces(results, grouped):
    assert results["traces_sha256"] == hashlib.sha256(TRACES.read_bytes()).hexdigest()
    assert set(results["slices"]) == set(grouped)
    for name, traces in grouped.items():
        assert results["slices"][name]["n"] == len(traces)
        assert math.isclose(results["slices"][name]["accuracy"], np.mean([t["label"] for t in traces]), abs_tol=1e-6)
    accuracies = sorted(s["accuracy"] for s in results["slices"].values())
    # the shape of evidence: >= 24 slices spanning ~0 to >= 0.85, >= 6 at or above 0.5 and >= 6
    # in 0.15-0.85, in at least three task families each with several slices
    assert len(grouped) >= 24
    assert accuracies[0] < 0.01 and accuracies[-1] >= 0.85
    assert sum(a >= 0.5 for a in accuracies) >= 6 and sum(0.15 <= a <= 0.85 for a in accuracies) >= 6
    families = {}
    for b in grouped:
        families.setdefault(family_of(b), []).append(b)
    assert sum(len(v) >= 3 for v in families.values()) >= 3
    assert {s["family"] for s in results["slices"].values()} == set(families)


def test_summaries_follow_from_the_committed_rows(results, rows):
    order = {name: i for i, name in enumerate(results["config"]["estimators"])}
    summary = summarize([{**r, "fit_seconds": math.nan} for r in rows], order)  # timings are not results
    assert len(summary) == len(results["summary"])
    for mine, committed in zip(summary, results["summary"], strict=True):
        for key, value in committed.items():
            if isinstance(value, float):
                assert math.isclose(mine[key], value, abs_tol=1e-5), (committed["estimator"], committed["k"], key)
            elif value is None:  # a NaN (the constant's Spearman over tied estimates) is stored as null
                assert mine[key] is None or math.isnan(mine[key]), (committed["estimator"], committed["k"], key)
            else:
                assert mine[key] == value
    for name, committed in overall(rows).items():
        for key, value in committed.items():
            assert value == pytest.approx(results["overall"][name][key], abs=1e-5), (name, key)


def test_a_sample_of_compositions_recomputes_to_the_committed_rows(results, grouped, rows):
    cfg = _config(results)
    templates = {name: make_estimator(name) for name in cfg.estimators}
    data = benchmark_data(grouped, {f for t in templates.values() for f in t.features}, cfg.variant)
    by_comp: dict[int, list[dict]] = {}
    for r in rows:
        by_comp.setdefault(r["composition"], []).append(r)
    # per k: its first and last composition
    picks = {}
    for r in rows:
        picks.setdefault(r["k"], set()).add(r["composition"])
    sample = sorted({c for comps in picks.values() for c in (min(comps), max(comps))})
    state = {"data": data, "estimators": templates, "bins": 10}
    for comp in sample:
        train = tuple(by_comp[comp][0]["train"].split("+"))
        fresh, _ = _evaluate_with(state, (comp, train))
        committed = {(r["estimator"], r["heldout"]): r for r in by_comp[comp]}
        assert len(fresh) == len(committed)
        for r in fresh:
            c = committed[(r["estimator"], r["heldout"])]
            assert r["est_acc"] == pytest.approx(c["est_acc"], abs=TOL), (comp, r["estimator"], r["heldout"])
            assert r["true_acc"] == pytest.approx(c["true_acc"], abs=1e-6)


def test_family_holdout_recomputes(results, grouped):
    cfg = _config(results)
    for name in ("constant", "atc", cfg.default):
        t = make_estimator(name)
        data = benchmark_data(grouped, t.features, cfg.variant)
        mine = holdout_estimates(holdout_predictions(t, data, family_of, "family"), data)
        committed = results["holdout"]["family"][name]
        for b, c in committed["per_slice"].items():
            assert mine["per_slice"][b]["estimate"] == pytest.approx(c["estimate"], abs=TOL), (name, b)
        assert mine["median_aee"] == pytest.approx(committed["median_aee"], abs=TOL)


def test_bootstrap_and_verdict_follow_from_the_committed_holdouts(results):
    cfg = _config(results)
    for h, committed in results["bootstrap"].items():
        per = {n: {b: abs(v["error"]) for b, v in o["per_slice"].items()} for n, o in results["holdout"][h].items()}
        assert bootstrap_verdict(per, cfg.bootstrap_draws, cfg.seed) == committed
    assert study_verdict(results, cfg) == results["verdict"]  # incl. the simulated ρ ceiling


def test_shipped_interval_coverage_and_labels_curve_recompute(results, grouped):
    cfg = _config(results)
    default = make_estimator(cfg.default)
    data = benchmark_data(grouped, default.features, cfg.variant)
    for holdout in ("family", "slice"):
        key = f"{cfg.default}/{holdout}/{cfg.tau_recipe}"
        cov = interval_coverage(default, data, family_of, holdout, cfg.tau_recipe, cfg.level, cfg.subslice_n,
                                cfg.subslice_draws, cfg.seed)
        preds, taus = cov.pop("_preds"), cov.pop("_taus")
        for shape in ("constant", "binomial"):
            for name, committed in results["coverage"][key][shape]["per_slice"].items():
                mine = cov[shape]["per_slice"][name]
                assert mine["estimate"] == pytest.approx(committed["estimate"], abs=TOL), (key, shape, name)
                assert mine["tau0"] == pytest.approx(committed["tau0"], abs=TOL), (key, shape, name)
            assert cov[shape]["whole_slice"] == pytest.approx(results["coverage"][key][shape]["whole_slice"], abs=0.04)
    # the claim itself: leave one slice out, the shipped 90 % interval covers about 90 % of the
    # 100-response sub-slices (the noise is that of a proportion over the slices, each of which
    # carries one transfer error)
    shipped = cov[cfg.tau_shape]
    noise = 2 * math.sqrt(0.9 * 0.1 / len(shipped["per_slice"]))
    assert shipped["subslices"] >= cfg.level - noise, shipped["per_slice"]
    means = {b: float(p.mean()) for b, p in preds.items()}
    assert results["lobo"]["estimates"][cfg.default] == pytest.approx(means, abs=TOL)
    curve = labels_curve(benchmark_data(grouped, (), cfg.variant), preds, taus[cfg.tau_shape], cfg)
    for mine, committed in zip(curve["curve"], results["labels"]["curve"], strict=True):
        assert mine["labels"] == committed["labels"]
        assert mine["median_aee"] == pytest.approx(committed["median_aee"], abs=TOL)


def test_prompt_shift_recomputes(results, grouped, all_grouped):
    cfg = _config(results)
    default = make_estimator(cfg.default)
    alt = {b: v for b, v in all_grouped.items() if "@" in b}
    assert len(alt) >= 3, "at least three slices asked with a second prompt set"
    mine = prompt_shift(default, benchmark_data(grouped, default.features, cfg.variant),
                        benchmark_data(alt, default.features, cfg.variant))
    for key, committed in results["prompt_shift"]["per_slice"].items():
        for field in ("true_alt", "estimate_alt", "estimate_default"):
            assert mine["per_slice"][key][field] == pytest.approx(committed[field], abs=TOL), (key, field)


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}
    return {prefix: value}


def test_truncation_table_recomputes(results):
    mine, committed = _flatten(truncation(json.loads(TRUNCATION.read_text()))), _flatten(results["truncation"])
    assert mine.keys() == committed.keys()
    for key, value in committed.items():  # 6-digit rounding; a CPU with other SIMD may differ by 1e-6
        assert mine[key] == (pytest.approx(value, abs=2e-6) if isinstance(value, float) else value), key


def test_the_shipped_estimator_is_the_studys_default(results):
    verdict = results["verdict"]
    assert verdict["estimator"] == DEFAULT_METHOD
    estimator, metadata = load_artifact(BUILTIN_ARTIFACT)
    assert metadata["estimator"] == DEFAULT_METHOD
    assert metadata["study"]["traces_sha256"] == results["traces_sha256"]
    assert metadata["study"]["verdict"] == verdict
    assert type(estimator).__name__ == type(make_estimator(DEFAULT_METHOD)).__name__
    # its transfer error is validated the way the study's shipped interval is (family out, shape)
    assert metadata["validation"]["protocol"] == f"leave-one-{results['config']['tau_recipe']}-out"
    assert metadata["validation"]["tau_shape"] == results["config"]["tau_shape"]


def test_the_collect_script_recollects_exactly_the_committed_slices(grouped, all_grouped):
    import re

    script = (ROOT / "scripts" / "collect_study.sh").read_text()
    default = re.search(r'SLICES=\$\{SENTINEL_STUDY_SLICES:-"([^"]*)"\}', script).group(1)
    alt = re.search(r'ALT_SLICES=\$\{SENTINEL_STUDY_ALT_SLICES:-"([^"]*)"\}', script).group(1)
    assert set(default.replace("\\", " ").split()) == set(grouped)
    assert {f"{b}@alt-qa" for b in alt.split()} == {b for b in all_grouped if "@" in b}
