"""A response's entropy trajectory, fed block by block as tokens stream in.

Streamed events carry one token each, and numpy's fixed cost per call dwarfs the arithmetic on 20
numbers. So incoming candidate logprobs wait in a small pending batch (at most ``batch`` tokens,
plain floats) and are turned into signals in one vectorised call when the batch fills or the
trajectory is read. What stays is three floats per token (top-k entropy, top-k mass, chosen
logprob) in growable numpy buffers; the candidate lists themselves are never retained.

A token none of whose candidates carries a finite logprob above
:data:`~entropy_sentinel.signal.entropy.NEG_INF_FLOOR` (no candidates, NaN, ±inf, vLLM's -9999)
carries no data: it is left out of the trajectory and counted in ``missing``. A trajectory with no
token left has nothing to be scored from.
"""

from __future__ import annotations

import numpy as np

from entropy_sentinel.signal.entropy import (
    ENTROPY_VARIANTS,
    NEG_INF_FLOOR,
    candidate_matrix,
    entropy_variant,
    token_signals,
)
from entropy_sentinel.signal.features import entropy_statistics_rows, nll_baselines, trajectory_features

_FIELDS = 3  # entropy, mass, chosen logprob


class Trajectory:
    """Per-token signals of one choice of one response."""

    __slots__ = ("_buf", "_n", "_counts", "_flat", "_chosen", "k", "batch", "min_candidates", "missing")

    def __init__(self, k: int = 20, batch: int = 64, capacity: int = 256) -> None:
        self.k = k
        self.batch = batch
        self._buf = np.empty((_FIELDS, max(capacity, 1)), dtype=np.float64)
        self._n = 0
        self._counts: list[int] = []
        self._flat: list[float | None] = []
        self._chosen: list[float | None] = []
        #: fewest candidates any token carried: shows the upstream really returned top-k
        self.min_candidates: int | None = None
        #: tokens left out because no candidate carried a finite logprob (see the module docstring)
        self.missing = 0

    def __len__(self) -> int:
        """Tokens with data (the pending batch is flushed first: a token without data is not one)."""
        self._flush()
        return self._n

    def add(self, counts: list[int], flat_logprobs: list[float | None], chosen: list[float | None]) -> None:
        """Queue a block of tokens: candidates per token, their logprobs flattened, chosen logprobs."""
        if not counts:
            return
        fewest = min(counts)
        self.min_candidates = fewest if self.min_candidates is None else min(self.min_candidates, fewest)
        self._counts.extend(counts)
        self._flat.extend(flat_logprobs)
        self._chosen.extend(chosen)
        if len(self._counts) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self._counts:
            return
        matrix = candidate_matrix(self._counts, self._flat)
        signals = token_signals(matrix, np.array(self._chosen, dtype=np.float64), self.k)
        self._counts, self._flat, self._chosen = [], [], []
        entropy, mass, chosen = signals.entropy, signals.mass, signals.chosen_logprob
        valid = ((matrix > NEG_INF_FLOOR) & (matrix < np.inf)).any(axis=1)  # NaN compares False
        if not valid.all():
            self.missing += int(valid.size - valid.sum())
            entropy, mass, chosen = entropy[valid], mass[valid], chosen[valid]
        t = entropy.size
        need = self._n + t
        if need > self._buf.shape[1]:
            grown = np.empty((_FIELDS, max(need, 2 * self._buf.shape[1])), dtype=np.float64)
            grown[:, : self._n] = self._buf[:, : self._n]
            self._buf = grown
        self._buf[0, self._n : need] = entropy
        self._buf[1, self._n : need] = mass
        self._buf[2, self._n : need] = chosen
        self._n = need

    @property
    def entropy(self) -> np.ndarray:
        self._flush()
        return self._buf[0, : self._n]

    @property
    def mass(self) -> np.ndarray:
        self._flush()
        return self._buf[1, : self._n]

    @property
    def chosen_logprob(self) -> np.ndarray:
        self._flush()
        return self._buf[2, : self._n]

    def features(self, variant: str = "topk") -> dict[str, float]:
        """The statistics of :data:`~entropy_sentinel.signal.features.FEATURE_NAMES`."""
        h = entropy_variant(self.entropy, self.mass, variant, k=self.k)
        features = trajectory_features(h, self.chosen_logprob)
        features["topk_mass_mean"] = float(self.mass.mean()) if self._n else 1.0
        return features

    def features_by_variant(self, variants: tuple[str, ...] = ENTROPY_VARIANTS) -> dict[str, dict[str, float]]:
        """:meth:`features` under each variant, the same values, computed together: the entropy
        statistics of all variants in one pass over a (variants, tokens) array, and what does not
        depend on the variant (NLL baselines, token count, top-k mass) once."""
        entropy, mass = self.entropy, self.mass
        rows = np.stack([entropy_variant(entropy, mass, v, k=self.k) for v in variants]) if variants else None
        shared = nll_baselines(self.chosen_logprob)
        shared["n_tokens"] = float(self._n)
        shared["topk_mass_mean"] = float(mass.mean()) if self._n else 1.0
        stats = entropy_statistics_rows(rows) if rows is not None else []
        return {v: {**row, **shared} for v, row in zip(variants, stats, strict=True)}
