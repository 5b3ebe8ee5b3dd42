"""A response's entropy trajectory, fed block by block as tokens stream in.

It keeps three floats per token (top-k entropy, top-k mass, chosen logprob) in growable numpy
buffers; the candidate lists themselves are never retained.
"""

from __future__ import annotations

import numpy as np

from entropy_sentinel.signal.entropy import TokenSignals, entropy_variant
from entropy_sentinel.signal.features import trajectory_features

_FIELDS = 3  # entropy, mass, chosen logprob


class Trajectory:
    """Per-token signals of one choice of one response."""

    __slots__ = ("_buf", "_n", "min_candidates")

    def __init__(self, capacity: int = 256) -> None:
        self._buf = np.empty((_FIELDS, max(capacity, 1)), dtype=np.float64)
        self._n = 0
        #: fewest candidates any token carried: shows the upstream really returned top-k
        self.min_candidates: int | None = None

    def __len__(self) -> int:
        return self._n

    def extend(self, signals: TokenSignals, candidates: int | None = None) -> None:
        """Append a block of tokens (usually one per streamed event)."""
        t = signals.entropy.size
        if t == 0:
            return
        if candidates is not None:
            self.min_candidates = candidates if self.min_candidates is None else min(self.min_candidates, candidates)
        need = self._n + t
        if need > self._buf.shape[1]:
            grown = np.empty((_FIELDS, max(need, 2 * self._buf.shape[1])), dtype=np.float64)
            grown[:, : self._n] = self._buf[:, : self._n]
            self._buf = grown
        end = self._n + t
        self._buf[0, self._n : end] = signals.entropy
        self._buf[1, self._n : end] = signals.mass
        self._buf[2, self._n : end] = signals.chosen_logprob
        self._n = end

    @property
    def entropy(self) -> np.ndarray:
        return self._buf[0, : self._n]

    @property
    def mass(self) -> np.ndarray:
        return self._buf[1, : self._n]

    @property
    def chosen_logprob(self) -> np.ndarray:
        return self._buf[2, : self._n]

    def features(self, variant: str = "topk", k: int = 20) -> dict[str, float]:
        """The statistics of :data:`~entropy_sentinel.signal.features.FEATURE_NAMES`."""
        h = entropy_variant(self.entropy, self.mass, variant, k=k)
        features = trajectory_features(h, self.chosen_logprob)
        features["topk_mass_mean"] = float(self.mass.mean()) if self._n else 1.0
        return features
