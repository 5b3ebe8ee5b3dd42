"""Evaluation metrics against values computed by hand (the arithmetic is in each test)."""

import math

import numpy as np
import pytest
from entropy_sentinel.stats.scores import aee, auroc, average_ranks, ece, reliability_bins, spearman


def test_aee_is_gap_between_mean_probability_and_accuracy():
    # mean p = 1.5 / 3 = 0.5, accuracy = 2/3
    assert aee([0.2, 0.8, 0.5], [0, 1, 1]) == pytest.approx(1 / 6)
    assert aee([0.7, 0.7], [1, 0]) == pytest.approx(0.2)
    assert math.isnan(aee([], []))


def test_average_ranks_share_ties():
    np.testing.assert_allclose(average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(average_ranks([3, 1, 3, 3]), [3, 1, 3, 3])  # ranks 2,3,4 -> 3


def test_auroc_four_points_with_a_tie():
    # positives 0.4, 0.8; negatives 0.1, 0.4. Pairs: (0.4,0.1)=1 (0.4,0.4)=1/2 (0.8,0.1)=1 (0.8,0.4)=1
    assert auroc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(3.5 / 4)


def test_auroc_extremes_and_degenerate_cases():
    assert auroc([0.9, 0.8, 0.2], [1, 1, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5
    assert math.isnan(auroc([0.3, 0.4], [1, 1]))
    with pytest.raises(ValueError):
        auroc([0.3, 0.4], [1, 2])


def test_spearman_with_ties():
    # ranks a = (1, 2.5, 2.5, 4), b = (1, 2, 3, 4); centred a = (-1.5, 0, 0, 1.5), b = (-1.5, -.5, .5, 1.5)
    # a.b = 4.5, |a|^2 = 4.5, |b|^2 = 5  ->  rho = 4.5 / sqrt(22.5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [1]))


def test_spearman_matches_scipy_on_random_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 40), rng.integers(0, 4, 40) + 0.1 * rng.integers(0, 5, 40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_ece_two_bins():
    # bin [0, .5): p .2 .4 -> conf .3, acc 1/2, gap .2 ; bin [.5, 1]: p .6 .9 -> conf .75, acc 1, gap .25
    # ece = 2/4 * .2 + 2/4 * .25 = .225
    assert ece([0.2, 0.4, 0.6, 0.9], [0, 1, 1, 1], bins=2) == pytest.approx(0.225)


def test_reliability_bins_edges_and_empty_bins():
    rel = reliability_bins([0.0, 0.05, 1.0, 0.5], [0, 1, 1, 1], bins=4)
    np.testing.assert_allclose(rel.edges, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(rel.count, [2, 0, 1, 1])  # p = 1 lands in the last bin, .5 in [.5, .75)
    assert rel.confidence[0] == pytest.approx(0.025) and rel.accuracy[0] == pytest.approx(0.5)
    assert math.isnan(rel.confidence[1]) and math.isnan(rel.accuracy[1])
    # gaps: .475 (two responses), .5 (p = .5, y = 1), 0 (p = 1, y = 1); weights 2/4, 1/4, 1/4
    assert rel.ece == pytest.approx(0.5 * 0.475 + 0.25 * 0.5)


def test_perfect_calibration_has_zero_ece():
    assert ece([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1]) == 0.0


def test_input_checks():
    with pytest.raises(ValueError):
        aee([0.1, 0.2], [1])
    with pytest.raises(ValueError):
        reliability_bins([1.2], [1])
    with pytest.raises(ValueError):
        ece([float("nan")], [1])
