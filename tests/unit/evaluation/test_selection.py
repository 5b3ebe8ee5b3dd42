"""The label-based comparison behind ``entropy-sentinel select`` (evaluation/selection.py)."""

from __future__ import annotations

import numpy as np
import pytest
from entropy_sentinel.evaluation.selection import CURRENT, compare_on_labels, labelled_rows


def two_slices(n: int = 200, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    """Slice a at accuracy ~0.8, slice b at ~0.2."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.random(n) < 0.8, rng.random(n) < 0.2]).astype(int)
    return y, ["a"] * n + ["b"] * n


def level(y: np.ndarray, slices: list[str], bias: float) -> np.ndarray:
    """A per-request prediction whose slice means are the slices' accuracies plus ``bias``."""
    names = np.array(slices)
    p = np.empty(y.size)
    for s in set(slices):
        p[names == s] = y[names == s].mean() + bias
    return np.clip(p, 0, 1)


def test_a_candidate_that_levels_every_slice_wins_and_a_switch_is_recommended():
    y, slices = two_slices()
    preds = {CURRENT: level(y, slices, 0.15), "good": level(y, slices, 0.0), "const": np.full(y.size, 0.5)}
    c = compare_on_labels(preds, y, slices)
    assert c.winner == c.recommended == "good"
    assert c.slice_aee["good"] == pytest.approx(0.0, abs=1e-12)
    assert c.slice_aee[CURRENT] == pytest.approx(0.15, abs=1e-9)
    assert c.slice_aee["const"] == pytest.approx(np.mean([abs(0.5 - y[:200].mean()), abs(0.5 - y[200:].mean())]))
    assert c.win_share["good"] > 0.95 and sum(c.win_share.values()) == pytest.approx(1.0)
    assert c.beats_current["good"] > 0.99 and c.beats_current["const"] < 1.0
    assert c.per_slice[CURRENT]["a"] == pytest.approx(y[:200].mean() + 0.15)
    assert set(c.slices) == {"a", "b"} and c.slices["b"]["n"] == 200
    assert "good" in c.table()[-1] and c.table()[2].startswith("good")


def test_a_narrow_win_on_few_labels_keeps_what_is_served():
    y, slices = two_slices(n=25, seed=3)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, y.size)
    preds = {CURRENT: np.clip(level(y, slices, 0.02) + noise, 0, 1),
             "other": np.clip(level(y, slices, 0.0) + noise, 0, 1)}
    c = compare_on_labels(preds, y, slices, min_labels=10)
    assert c.winner == "other" and c.slice_aee["other"] < c.slice_aee[CURRENT]  # lowest on all labels ...
    assert 0.2 < c.beats_current["other"] < 0.8 and c.beats_current[CURRENT] == 0  # ... but no clear win
    assert c.recommended == CURRENT and "not a clear win on 50 labels" in c.reason
    assert compare_on_labels(preds, y, slices, min_labels=10, min_share=0.5).recommended == "other"


def test_a_switch_needs_to_beat_what_is_served_not_to_beat_every_other_candidate():
    """Two candidates close to each other, both far better than what is served: switch to the better."""
    y, slices = two_slices(n=40, seed=5)
    rng = np.random.default_rng(2)
    a = np.clip(level(y, slices, 0.0) + rng.normal(0, 0.2, y.size), 0, 1)
    b = np.clip(level(y, slices, 0.005) + rng.normal(0, 0.2, y.size), 0, 1)
    c = compare_on_labels({CURRENT: level(y, slices, 0.4), "a": a, "b": b}, y, slices)
    assert max(c.win_share["a"], c.win_share["b"]) < 0.8  # neither is clearly best of all ...
    assert c.recommended == c.winner != CURRENT and c.beats_current[c.winner] > 0.99  # ... both beat current


def test_the_served_estimator_wins_ties():
    y, slices = two_slices()
    p = level(y, slices, 0.05)
    c = compare_on_labels({CURRENT: p, "same": p.copy()}, y, slices)
    assert c.winner == c.recommended == CURRENT


def test_slices_with_too_few_labels_are_left_out_or_pooled():
    y, slices = two_slices(n=30)
    c = compare_on_labels({CURRENT: np.full(y.size, 0.5)}, y, slices[:30] + ["c"] * 30, min_labels=31)
    assert list(c.slices) == ["*"] and c.slices["*"]["n"] == 60 and "as one slice" in c.notes[0]
    c = compare_on_labels({CURRENT: np.full(60, 0.5)}, y, ["a"] * 40 + ["b"] * 20, min_labels=30)
    assert list(c.slices) == ["a"] and "1 slice(s) with fewer than 30 labels" in c.notes[0]


def test_bad_inputs_are_refused():
    y, slices = two_slices(n=5)
    with pytest.raises(ValueError, match="served estimator"):
        compare_on_labels({"x": np.zeros(10)}, y, slices)
    with pytest.raises(ValueError, match="9 rows for 10 labels"):
        compare_on_labels({CURRENT: np.zeros(9)}, y, slices)
    with pytest.raises(ValueError, match="no labelled"):
        compare_on_labels({CURRENT: np.zeros(0)}, np.zeros(0), [])


def test_bootstrap_memory_is_bounded_and_seeded():
    y, slices = two_slices(n=3000)
    preds = {CURRENT: level(y, slices, 0.01), "b": level(y, slices, -0.012)}
    a = compare_on_labels(preds, y, slices, n_boot=300, seed=7)
    b = compare_on_labels(preds, y, slices, n_boot=300, seed=7)
    assert a.win_share == b.win_share and 0 < a.win_share[CURRENT] < 1


def test_labelled_rows_keeps_only_labelled_scored_rows_with_features():
    rows = [
        {"label": 1, "features": {"mean": 0.5}, "p_correct": 0.7, "slice": "domain=x"},
        {"label": None, "features": {"mean": 0.5}, "p_correct": 0.7, "slice": "domain=x"},
        {"label": 0, "features": None, "p_correct": 0.7, "slice": ""},
        {"label": 0, "features": {"mean": 0.1}, "p_correct": None, "slice": ""},
        {"label": 0, "features": {"mean": 0.2}, "p_correct": 0.1, "slice": None},
    ]
    got = labelled_rows(rows)
    assert len(got) == 2 and got.y.tolist() == [1, 0] and got.slices == ["domain=x", ""]
    assert got.served.tolist() == [0.7, 0.1]
    assert got.matrix(["mean"]).tolist() == [[0.5], [0.2]]
    with pytest.raises(ValueError, match="lack max"):
        got.matrix(["mean", "max"])
