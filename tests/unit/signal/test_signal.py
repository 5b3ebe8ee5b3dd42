"""The numeric core against values computed by hand (see each test's arithmetic)."""

import math

import numpy as np
import pytest
from entropy_sentinel.signal import Trajectory, token_signals, trajectory_features
from entropy_sentinel.signal.entropy import entropy_variant
from entropy_sentinel.signal.features import entropy_statistics, nll_baselines


def test_topk_entropy_is_not_renormalized():
    # p = (1/2, 1/4): H = 1/2 ln 2 + 1/4 ln 4 = ln 2, top-k mass 3/4
    sig = token_signals(np.log([[0.5, 0.25]]), np.array([math.log(0.5)]))
    assert sig.entropy[0] == pytest.approx(math.log(2), abs=1e-12)
    assert sig.mass[0] == pytest.approx(0.75)


def test_entropy_variants_match_their_definitions():
    h, m = np.array([math.log(2)]), np.array([0.75])
    # renormalized: entropy of (2/3, 1/3)
    expected = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert entropy_variant(h, m, "renormalized")[0] == pytest.approx(expected, abs=1e-12)
    # tail lumped as one outcome of probability 1/4: ln 2 + 1/4 ln 4
    assert entropy_variant(h, m, "tail_lumped")[0] == pytest.approx(math.log(2) + 0.25 * math.log(4))
    # tail spread over V-k = 10 tokens of 1/40 each: ln 2 + 10 * (1/40) ln 40
    assert entropy_variant(h, m, "tail_uniform", k=2, vocab_size=12)[0] == pytest.approx(
        math.log(2) + 0.25 * math.log(40)
    )
    with pytest.raises(ValueError):
        entropy_variant(h, m, "bogus")


def test_vllm_minus_9999_and_padding_count_as_zero_probability():
    rows = np.array([[0.0, -9999.0, -np.inf], [math.log(0.5), math.log(0.5), np.nan]])
    sig = token_signals(rows, np.array([0.0, math.log(0.5)]))
    assert sig.entropy[0] == 0.0
    assert sig.entropy[1] == pytest.approx(math.log(2))
    assert sig.mass.tolist() == pytest.approx([1.0, 1.0])


def test_only_the_k_largest_candidates_count():
    # legacy completions may carry the sampled token as a 21st entry: it must not change H_20
    probs = np.full(21, 0.01)
    probs[20] = 0.001
    rows = np.log(probs)[None, ::-1].copy()  # smallest first, to prove order does not matter
    sig20 = token_signals(rows, np.array([0.0]), k=20)
    assert sig20.entropy[0] == pytest.approx(-20 * 0.01 * math.log(0.01))


def test_statistics_by_hand_symmetric():
    s = entropy_statistics(np.array([0.0, 1.0, 2.0, 3.0]))
    assert s["mean"] == 1.5 and s["max"] == 3.0 and s["sum"] == 6.0
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # n-1 denominator
    assert [s[q] for q in ("q10", "q25", "q50", "q75", "q90")] == pytest.approx([0.3, 0.75, 1.5, 2.25, 2.7])
    assert s["skewness"] == pytest.approx(0.0, abs=1e-12)
    # E[c^4] = (2*1.5^4 + 2*0.5^4)/4 = 2.5625 ; s^4 = 25/9
    assert s["kurtosis"] == pytest.approx(2.5625 / (25 / 9), rel=1e-7)


def test_statistics_by_hand_skewed():
    s = entropy_statistics(np.array([0.0, 0.0, 3.0]))
    # c = (-1, -1, 2), s = sqrt(3), E[c^3] = 2, E[c^4] = 6
    assert s["skewness"] == pytest.approx(2 / 3 ** 1.5, rel=1e-7)
    assert s["kurtosis"] == pytest.approx(6 / 9, rel=1e-7)


def test_short_trajectories_are_defined():
    assert entropy_statistics(np.array([]))["mean"] == 0.0
    one = entropy_statistics(np.array([0.7]))
    assert one["mean"] == one["max"] == one["q90"] == 0.7
    assert one["std"] == one["skewness"] == one["kurtosis"] == 0.0


def test_nll_baselines_skip_missing_logprobs():
    b = nll_baselines(np.array([math.log(0.5), np.nan, math.log(0.25)]))
    assert b["nll_mean"] == pytest.approx(1.5 * math.log(2))
    assert b["nll_max"] == pytest.approx(math.log(4))
    assert b["perplexity"] == pytest.approx(math.exp(1.5 * math.log(2)))


def test_trajectory_pads_tokens_with_fewer_candidates():
    traj = Trajectory()
    traj.add([2, 1], [math.log(0.5), math.log(0.25), 0.0], [math.log(0.5), 0.0])
    assert traj.min_candidates == 1
    assert traj.entropy.tolist() == pytest.approx([0.5 * math.log(2) + 0.25 * math.log(4), 0.0])
    assert traj.mass.tolist() == pytest.approx([0.75, 1.0])


def test_trajectory_fed_in_blocks_equals_one_block():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 20))
    lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)) - 0.1
    chosen = lp[:, 0]
    whole = Trajectory(batch=1000)
    whole.add([20] * 300, lp.ravel().tolist(), chosen.tolist())
    pieces = Trajectory(batch=5, capacity=1)  # forces several flushes and growths
    for start in range(0, 300, 7):
        block = lp[start : start + 7]
        pieces.add([20] * len(block), block.ravel().tolist(), chosen[start : start + 7].tolist())
    assert len(pieces) == 300 and pieces.min_candidates == 20
    assert pieces.features() == pytest.approx(whole.features())
    direct = trajectory_features(token_signals(lp, chosen).entropy, chosen)
    assert whole.features()["q75"] == pytest.approx(direct["q75"])
    assert whole.features()["n_tokens"] == 300.0


@pytest.mark.parametrize("n", [0, 1, 2, 7, 256])
def test_features_of_all_variants_at_once_equal_one_variant_at_a_time(n):
    """What the scoring worker computes (one vectorised pass) is what features(v) gives, bit for bit,
    keys in the same order."""
    rng = np.random.default_rng(n)
    traj = Trajectory()
    for _ in range(n):
        traj.add([20], (-rng.exponential(3.0, 20)).tolist(), [float(-rng.exponential(0.5))])
    together = traj.features_by_variant()
    assert list(together) == ["topk", "renormalized", "tail_lumped", "tail_uniform"]
    for variant, features in together.items():
        alone = traj.features(variant)
        assert list(features) == list(alone)
        assert features == alone, variant
