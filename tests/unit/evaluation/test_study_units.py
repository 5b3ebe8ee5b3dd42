"""Units of the study and of what ships from it: the predictive τ, the truncation summary, the
document splice, the labels-curve threshold, and the artifact's study record."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, resolve_artifact
from entropy_sentinel.evaluation.study import _first_staying_below, truncation
from entropy_sentinel.evaluation.study_report import BEGIN, END, generated_block, splice
from entropy_sentinel.evaluation.training import study_record
from entropy_sentinel.stats.intervals import predictive_tau, transfer_rms, transfer_tau


def test_predictive_tau_widens_the_rms_for_few_benchmarks():
    errors = [0.03, -0.02, 0.01, -0.04]
    rms = math.sqrt(sum(e * e for e in errors) / 4)
    # t_3 (90 %) = 2.353, z = 1.645, sqrt(1 + 1/4) = 1.118
    assert predictive_tau(errors, 0.9) == pytest.approx(rms * math.sqrt(1.25) * 2.353363 / 1.644854, rel=1e-5)
    many = list(np.random.default_rng(0).normal(0, 0.03, 2000))
    assert predictive_tau(many, 0.9) == pytest.approx(math.sqrt(np.mean(np.square(many))), rel=2e-3)
    assert predictive_tau([], 0.9) == 0.0
    assert predictive_tau([0.05], 0.9) == 0.05
    validation = {"per_benchmark": {"a": {"est_acc": 0.5, "true_acc": 0.47}, "b": {"est_acc": 0.1, "true_acc": 0.12}}}
    assert transfer_tau(validation).tau0 > transfer_rms(validation) > 0
    assert transfer_tau(validation).shape == "constant"  # an artifact that names no shape


def test_binomial_transfer_spread_scales_with_the_estimate():
    from entropy_sentinel.stats.intervals import TransferSpread, label_free, spread_from_errors

    spread = TransferSpread(0.2, "binomial")
    assert spread.at(0.5) == pytest.approx(0.2)
    assert spread.at(0.1) == pytest.approx(0.2 * 2 * math.sqrt(0.09))
    assert spread.at(0.0) == pytest.approx(0.2 * 0.2)  # the floor
    # an interval at 0.5 is wider than one at 0.05 with the same tau0 and the same n
    wide = label_free(1000, 500.0, 250.0, 0.9, spread)
    narrow = label_free(1000, 50.0, 2.5, 0.9, spread)
    assert (wide.upper - wide.lower) > 3 * (narrow.upper - narrow.lower)
    # tau0 is estimated from errors scaled to the spread at 0.5: the same error counts more at 0.1
    at_half = spread_from_errors([0.1, -0.1], [0.5, 0.5], 0.9, "binomial").tau0
    at_tenth = spread_from_errors([0.1, -0.1], [0.1, 0.1], 0.9, "binomial").tau0
    assert at_tenth == pytest.approx(at_half / (2 * math.sqrt(0.09)))
    with pytest.raises(ValueError, match="tau shape"):
        TransferSpread(0.1, "wiggly")


def test_truncation_summary_matches_a_hand_computed_case():
    # token 1: top-20 holds all the mass; token 2: top-20 holds 0.5 of it
    tokens = [[0.7, 1.0, 0.7, 1.0], [3.0, 1.0, 1.2, 0.5]]
    doc = {"k": 20, "candidates": 1000, "responses": [{"benchmark": "b", "item_id": "i", "tokens": tokens}]}
    out = truncation(doc)
    assert out["tokens"] == 2 and out["responses"] == 1
    topk = out["variants"]["topk"]
    assert topk["token_mae"] == pytest.approx((0 + 1.8) / 2)
    assert topk["token_bias"] == pytest.approx(-0.9)
    renorm = out["variants"]["renormalized"]
    assert renorm["token_mae"] == pytest.approx(abs(1.2 / 0.5 + math.log(0.5) - 3.0) / 2, abs=1e-6)
    assert truncation(None) is None


def test_splice_replaces_only_the_generated_block():
    doc = f"# Results\n\nintro\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    new = splice(doc, "| a |\n")
    assert new == f"# Results\n\nintro\n\n{BEGIN}\n| a |\n{END}\n\nafter\n"
    assert generated_block(new) == "| a |\n"
    with pytest.raises(ValueError):
        splice("no markers", "x")


def test_labels_needed_is_where_the_curve_stays_below_target():
    points = [(0, 0.01), (5, 0.05), (10, 0.02), (20, 0.04), (50, 0.02), (100, 0.01)]
    curve = [{"labels": m, "aee": a} for m, a in points]
    assert _first_staying_below(curve, "aee", 0.03) == 50  # 10 dips below but 20 does not stay
    assert _first_staying_below(curve, "aee", 0.001) is None


def _results(tmp_path, traces_bytes: bytes, default: str = "monotone_boost") -> tuple:
    traces = tmp_path / "t.jsonl.gz"
    traces.write_bytes(traces_bytes)
    results = {
        "traces_sha256": hashlib.sha256(traces_bytes).hexdigest(),
        "verdict": {"estimator": default},
        "overall": {"atc": {"median_aee": 0.03}, "monotone_boost": {"median_aee": 0.02}},
        "holdout": {"family": {"atc": {"median_aee": 0.05}, "monotone_boost": {"median_aee": 0.04}}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path, traces


def test_study_record_only_for_the_studys_default_on_the_same_traces(tmp_path):
    path, traces = _results(tmp_path, b"traces")
    record = study_record(path, [traces], "monotone_boost")
    assert record["verdict"] == {"estimator": "monotone_boost"}
    assert record["median_aee"] == {"atc": 0.03, "monotone_boost": 0.02}
    assert record["median_aee_family_holdout"] == {"atc": 0.05, "monotone_boost": 0.04}
    with pytest.raises(ValueError, match="default estimator is 'monotone_boost', not 'atc'"):
        study_record(path, [traces], "atc")
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"other traces")
    with pytest.raises(ValueError, match="other traces"):
        study_record(path, [other], "monotone_boost")


def test_estimator_path_builtin_none_or_a_file(tmp_path):
    assert resolve_artifact("builtin") == BUILTIN_ARTIFACT
    assert resolve_artifact("") is None and resolve_artifact("none") is None
    assert resolve_artifact(str(tmp_path / "e.skops")) == tmp_path / "e.skops"
    assert BUILTIN_ARTIFACT.is_file(), "the shipped estimator must be in the package"


def test_recalibration_shrinks_a_noisy_bias_and_trusts_a_clear_one():
    from entropy_sentinel.stats.intervals import recalibrated

    n, p = 1000, 0.2
    sum_p, sum_p2 = n * p, n * p * p
    # 10 labels, 3 right: residual mean +0.1, noisy (var ~0.23/10) against τ = 0.02 -> barely moves
    r = [0.8] * 3 + [-0.2] * 7
    few = recalibrated(n, sum_p, sum_p2, 10, sum(r), sum(x * x for x in r), 0.9, tau=0.02)
    plain = recalibrated(n, sum_p, sum_p2, 10, sum(r), sum(x * x for x in r), 0.9)
    assert plain.estimate == pytest.approx(0.3)
    assert 0.2 < few.estimate < 0.23
    # 400 labels, 40 % right: a bias of +0.2 that the labels pin down -> close to plain PPI
    r = [0.8] * 160 + [-0.2] * 240
    many = recalibrated(n, sum_p, sum_p2, 400, sum(r), sum(x * x for x in r), 0.9, tau=0.02)
    assert many.estimate == pytest.approx(0.4, abs=0.01)
    # 5 labels, all wrong, on a slice scored p = 0.02: the interval keeps the binomial width
    q = 0.02
    r = [-q] * 5
    rare = recalibrated(n, n * q, n * q * q, 5, sum(r), sum(x * x for x in r), 0.9, tau=0.02)
    assert rare.upper - rare.lower > 0.02
