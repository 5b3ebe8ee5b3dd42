"""Per-token entropy from the top-k logprobs an OpenAI-compatible server returns.

The paper's entropy is H = -sum p log p over the returned top-k candidates, *not renormalized*.
Since truncation matters for small models (the top-20 mass of Gemma 270M ranges 0.17-1.0), each
token also keeps the top-k probability mass m, from which the other variants follow exactly:

* ``topk``        H_k = -sum_{i<=k} p_i log p_i                       (the paper's)
* ``renormalized`` entropy of p_i / m:  H_k / m + log m
* ``tail_lumped``  H_k - r log r, r = 1 - m: the tail counted as one outcome (a lower bound on H)
* ``tail_uniform`` H_k - r log(r / (V - k)): the tail spread evenly over the rest of the
                   vocabulary (an upper bound on H)

So a trajectory needs only three floats per token: H_k, m and the chosen token's logprob.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: vLLM sends -inf as -9999.0; anything at or below this is probability zero.
NEG_INF_FLOOR = -9000.0

ENTROPY_VARIANTS = ("topk", "renormalized", "tail_lumped", "tail_uniform")

#: Gemma 3 vocabulary size; only used by the ``tail_uniform`` upper bound.
DEFAULT_VOCAB_SIZE = 262_144


@dataclass(frozen=True, slots=True)
class TokenSignals:
    """Per-token signals of a block of tokens (one array entry per token)."""

    entropy: np.ndarray  # H over the top-k, nats
    mass: np.ndarray  # sum of the top-k probabilities
    chosen_logprob: np.ndarray  # logprob of the sampled token (nan when the server sent none)


def candidate_matrix(counts: list[int], flat: list[float | None]) -> np.ndarray:
    """(tokens, most candidates) logprob array from per-token counts and their flattened logprobs;
    short rows are padded with ``-inf`` (probability zero)."""
    t, width = len(counts), max(counts, default=0)
    values = np.array(flat, dtype=np.float64)
    if t and all(c == width for c in counts):
        return values.reshape(t, width)
    out = np.full((t, width), -np.inf)
    out[np.arange(width) < np.array(counts)[:, None]] = values
    return out


def token_signals(topk_logprobs: np.ndarray, chosen_logprob: np.ndarray, k: int = 20) -> TokenSignals:
    """Signals for T tokens from a (T, K) array of top-K logprobs.

    Rows may be padded with ``-inf`` or ``nan`` where a token had fewer than K candidates. Only the
    k largest logprobs of each row are used, so a row that carries an extra sampled-token entry (the
    legacy completions shape does that) or more than k candidates gives the same top-k entropy.
    """
    lp = np.asarray(topk_logprobs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"expected a (tokens, candidates) array, got shape {lp.shape}")
    lp = np.where(np.isfinite(lp) & (lp > NEG_INF_FLOOR), lp, -np.inf)
    lp = np.minimum(lp, 0.0)  # a rounding excursion above 0 is still probability 1
    if lp.shape[1] > k:
        lp = -np.sort(-lp, axis=1)[:, :k]
    p = np.exp(lp)
    plogp = np.where(p > 0.0, p * np.where(p > 0.0, lp, 0.0), 0.0)
    entropy = -plogp.sum(axis=1)
    mass = np.minimum(p.sum(axis=1), 1.0)
    return TokenSignals(
        entropy=entropy,
        mass=mass,
        chosen_logprob=np.asarray(chosen_logprob, dtype=np.float64).reshape(-1),
    )


def entropy_variant(
    entropy: np.ndarray,
    mass: np.ndarray,
    variant: str = "topk",
    k: int = 20,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
) -> np.ndarray:
    """Turn per-token (H_k, m) into one of :data:`ENTROPY_VARIANTS` (see the module docstring)."""
    entropy = np.asarray(entropy, dtype=np.float64)
    if variant == "topk":
        return entropy
    mass = np.clip(np.asarray(mass, dtype=np.float64), 1e-300, 1.0)
    tail = np.clip(1.0 - mass, 0.0, 1.0)
    tail_log = np.where(tail > 0.0, np.log(np.where(tail > 0.0, tail, 1.0)), 0.0)
    if variant == "renormalized":
        return entropy / mass + np.log(mass)
    if variant == "tail_lumped":
        return entropy - tail * tail_log
    if variant == "tail_uniform":
        return entropy - tail * (tail_log - np.log(max(vocab_size - k, 1)))
    raise ValueError(f"unknown entropy variant {variant!r}; choose one of {ENTROPY_VARIANTS}")
