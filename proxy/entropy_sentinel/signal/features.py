"""The 11 statistics of an entropy trajectory (the paper's features) and its NLL baselines.

Definitions follow the paper's public code: ``std`` uses n-1, skewness is E[c^3] / (s^3 + 1e-8)
and kurtosis E[c^4] / (s^4 + 1e-8) with that same s (kurtosis, not excess kurtosis), quantiles
interpolate linearly. A trajectory of fewer than two tokens has std, skewness and kurtosis 0
(the n-1 standard deviation is undefined there), and an empty one is all zeros.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-8

ENTROPY_FEATURES = (
    "mean",
    "std",
    "max",
    "q10",
    "q25",
    "q50",
    "q75",
    "q90",
    "skewness",
    "kurtosis",
    "sum",
)
BASELINE_FEATURES = ("nll_mean", "nll_max", "nll_sum", "perplexity", "n_tokens")
FEATURE_NAMES = ENTROPY_FEATURES + BASELINE_FEATURES

_QUANTILES = np.array([0.10, 0.25, 0.50, 0.75, 0.90])


def entropy_statistics(entropy: np.ndarray) -> dict[str, float]:
    """The paper's 11 statistics of one trajectory of per-token entropies: the one row of
    :func:`entropy_statistics_rows`, so one variant's features and the scoring worker's pass over all
    of them agree by construction."""
    return entropy_statistics_rows(np.asarray(entropy, dtype=np.float64).reshape(1, -1))[0]


def entropy_statistics_rows(entropies: np.ndarray) -> list[dict[str, float]]:
    """The paper's 11 statistics of each row of a (rows, tokens) array of per-token entropies, in one
    pass of numpy calls rather than one per row."""
    h = np.ascontiguousarray(entropies, dtype=np.float64)
    rows, n = h.shape
    if n == 0:
        return [dict.fromkeys(ENTROPY_FEATURES, 0.0) for _ in range(rows)]
    mean = h.mean(axis=1)
    quantiles = np.quantile(h, _QUANTILES, axis=1)  # (5, rows)
    if n > 1:
        centred = h - mean[:, None]
        std = np.sqrt(np.array([np.dot(c, c) for c in centred]) / (n - 1))
        # products, not powers: numpy's power on an array takes its own pow (on AVX-512 CPUs its last bit
        # differs from the C library's, and it costs ~50x a product); a product is exact IEEE everywhere
        squared = centred * centred
        skewness = np.mean(squared * centred, axis=1) / (std * std * std + EPS)
        kurtosis = np.mean(squared * squared, axis=1) / ((std * std) * (std * std) + EPS)
    else:
        std = skewness = kurtosis = np.zeros(rows)
    columns = {
        "mean": mean, "std": std, "max": h.max(axis=1), "q10": quantiles[0], "q25": quantiles[1],
        "q50": quantiles[2], "q75": quantiles[3], "q90": quantiles[4], "skewness": skewness,
        "kurtosis": kurtosis, "sum": h.sum(axis=1),
    }
    values = {name: columns[name].tolist() for name in ENTROPY_FEATURES}
    return [{name: values[name][r] for name in ENTROPY_FEATURES} for r in range(rows)]


def nll_baselines(chosen_logprob: np.ndarray) -> dict[str, float]:
    """Mean / max / summed negative log-likelihood of the chosen tokens, and perplexity.

    Tokens whose logprob the server did not send (nan) are left out.
    """
    lp = np.asarray(chosen_logprob, dtype=np.float64).reshape(-1)
    lp = lp[np.isfinite(lp)]
    if lp.size == 0:
        return {"nll_mean": 0.0, "nll_max": 0.0, "nll_sum": 0.0, "perplexity": 1.0}
    nll = np.maximum(-lp, 0.0)
    mean = float(nll.mean())
    return {
        "nll_mean": mean,
        "nll_max": float(nll.max()),
        "nll_sum": float(nll.sum()),
        "perplexity": float(np.exp(min(mean, 700.0))),
    }


def trajectory_features(entropy: np.ndarray, chosen_logprob: np.ndarray) -> dict[str, float]:
    """Every feature of :data:`FEATURE_NAMES` for one response."""
    features = entropy_statistics(entropy)
    features.update(nll_baselines(chosen_logprob))
    features["n_tokens"] = float(np.asarray(entropy).size)
    return features
