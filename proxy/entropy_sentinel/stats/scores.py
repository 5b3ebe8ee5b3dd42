"""Evaluation metrics of the paper's protocol, in plain numpy so each one can be checked by hand.

* ``aee``  absolute estimation error |mean P(correct) - accuracy| of one slice (the product's target:
  the slice estimate is the mean of the per-response probabilities).
* ``spearman`` rank correlation of estimated vs true accuracy across held-out benchmarks, average
  ranks for ties (so it equals scipy's ``spearmanr``).
* ``auroc`` per-response discrimination, the Mann-Whitney U statistic with ties counted one half.
* ``ece`` / ``reliability_bins`` calibration over equal-width bins on [0, 1].

Degenerate inputs give ``nan`` rather than raising (a held-out benchmark where the model got every
item right has no AUROC, and that must not abort a long evaluation run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ReliabilityBins", "aee", "auroc", "average_ranks", "ece", "reliability_bins", "spearman"]


def _vector(a: object, name: str) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains non-finite values")
    return v


def _pair(p: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    pv, yv = _vector(p, "p"), _vector(y, "y")
    if pv.shape != yv.shape:
        raise ValueError(f"p and y differ in length: {pv.size} != {yv.size}")
    return pv, yv


def aee(p: object, y: object) -> float:
    """|mean(p) - mean(y)|: how far the slice estimate is from the slice's accuracy (nan if empty)."""
    pv, yv = _pair(p, y)
    if pv.size == 0:
        return float("nan")
    return float(abs(pv.mean() - yv.mean()))


def average_ranks(a: object) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    v = _vector(a, "a")
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # start index of each run of equal values in sorted order
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(a: object, b: object) -> float:
    """Spearman's rho: Pearson correlation of average ranks; nan when either side is constant."""
    av, bv = _vector(a, "a"), _vector(b, "b")
    if av.shape != bv.shape:
        raise ValueError(f"a and b differ in length: {av.size} != {bv.size}")
    if av.size < 2:
        return float("nan")
    ra, rb = average_ranks(av), average_ranks(bv)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt(np.dot(ra, ra) * np.dot(rb, rb))
    if denom == 0.0:
        return float("nan")
    return float(np.dot(ra, rb) / denom)


def auroc(p: object, y: object) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2.

    Computed as the Mann-Whitney U of the positives' average ranks; nan when a class is absent.
    """
    pv, yv = _pair(p, y)
    pos = yv == 1
    n_pos = int(pos.sum())
    n_neg = int((yv == 0).sum())
    if n_pos + n_neg != yv.size:
        raise ValueError("y must be 0/1")
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(pv)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True, slots=True)
class ReliabilityBins:
    """Equal-width bins of predicted P(correct): per bin its count, mean confidence and accuracy.

    Empty bins have count 0 and nan confidence / accuracy.
    """

    edges: np.ndarray  # bins + 1 edges from 0 to 1
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over the non-empty bins."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.dot(self.count[used], gap) / total)


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Bin i holds [i/bins, (i+1)/bins); the last bin also holds p == 1."""
    return np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)


def reliability_bins(p: object, y: object, bins: int = 10) -> ReliabilityBins:
    """Per-bin count, mean predicted probability and observed accuracy over ``bins`` equal bins."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    pv, yv = _pair(p, y)
    if np.any((pv < 0) | (pv > 1)):
        raise ValueError("p must lie in [0, 1]")
    idx = _bin_index(pv, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=pv, minlength=bins)
    sum_y = np.bincount(idx, weights=yv, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, sum_p / count, np.nan)
        acc = np.where(count > 0, sum_y / count, np.nan)
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), count, conf, acc)


def ece(p: object, y: object, bins: int = 10) -> float:
    """Expected calibration error over ``bins`` equal-width bins (nan when empty)."""
    return reliability_bins(p, y, bins).ece
