"""Slice accuracy estimates with intervals, from additive sufficient statistics.

Three estimates, each with a two-sided interval at ``level`` (normal approximation):

* **Label-free** (no labels in the slice): Â = mean P(correct). If the estimator were calibrated on
  this slice, A − Â would only carry sampling noise, variance Σ p(1−p) / n². It is not exactly
  calibrated on a new slice: its error there is modelled as a draw from the spread of errors it made
  on benchmarks it never saw (leave-one-benchmark-out, recorded in the artifact's metadata), RMS τ.
  Half-width: z · sqrt(Σ p(1−p) / n² + τ²). τ dominates once n is more than a few hundred: the
  interval is honest about transfer error, which more traffic cannot remove. τ comes from only B
  validation benchmarks, so the shipped τ is a *prediction* spread (:func:`predictive_tau`): the
  RMS times sqrt(1 + 1/B) times t_{B−1}/z, the normal prediction interval for one new draw when
  the spread itself is estimated from B draws (on the study's 14 slices, plain RMS covered 12 of
  14 held-out slices at 90 %; docs/results.md).
* **Observed** (labelled responses only): Wilson score interval of k correct out of m.
* **Recalibrated** (once a slice has enough labels): prediction-powered inference (Angelopoulos et
  al., 2023): θ = mean over all n of p + mean over the m labelled of (y − p), variance
  var(p)/n + var(y − p)/m: the labels measure this slice's own bias. The proxy shrinks that
  measured bias by its precision against the τ prior (:func:`recalibrated`), so few labels help
  instead of adding noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def z_value(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    lower: float
    upper: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper}


def _clip(estimate: float, half: float) -> Interval:
    return Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half))


#: τ's dependence on the estimate: ``constant``, or ``binomial`` (τ₀ · max(2·sqrt(Â(1−Â)), floor)).
TAU_SHAPES = ("constant", "binomial")


@dataclass(frozen=True, slots=True)
class TransferSpread:
    """The estimator's transfer error on a new slice as a function of its estimate Â.

    ``binomial``: τ(Â) = τ₀ · max(2·sqrt(Â(1−Â)), floor). An estimate near 0 or 1 cannot be off by
    as much as one near 0.5 (on the study's slices the leave-one-family-out errors grew with
    sqrt(Â(1−Â)), docs/results.md), so a constant τ is too wide at the ends and too narrow in the
    middle. τ₀ is the spread at Â = 0.5; ``floor`` keeps a slice estimated at 0 from getting no
    transfer term at all. ``constant``: τ(Â) = τ₀.
    """

    tau0: float
    shape: str = "constant"
    floor: float = 0.2

    def __post_init__(self) -> None:
        if self.shape not in TAU_SHAPES:
            raise ValueError(f"tau shape must be one of {TAU_SHAPES}, not {self.shape!r}")

    def scale(self, estimate: float) -> float:
        if self.shape == "constant":
            return 1.0
        p = min(max(estimate, 0.0), 1.0)
        return max(2.0 * math.sqrt(p * (1.0 - p)), self.floor)

    def at(self, estimate: float) -> float:
        return self.tau0 * self.scale(estimate)


Tau = float | TransferSpread


def spread_of(tau: Tau) -> TransferSpread:
    """``tau`` as a :class:`TransferSpread` (a plain float is a constant one)."""
    return tau if isinstance(tau, TransferSpread) else TransferSpread(float(tau))


def tau_at(tau: Tau, estimate: float) -> float:
    """τ for a slice estimated at ``estimate``: a plain float is a constant τ."""
    return tau.at(estimate) if isinstance(tau, TransferSpread) else float(tau)


def label_free(n: int, sum_p: float, sum_p2: float, level: float = 0.9, tau: Tau = 0.0) -> Interval | None:
    """Â and its interval from n, Σp, Σp² of the slice's scored responses."""
    if n <= 0:
        return None
    estimate = sum_p / n
    sampling = max(sum_p - sum_p2, 0.0) / (n * n)  # Σ p(1−p) / n²
    t = tau_at(tau, estimate)
    return _clip(estimate, z_value(level) * math.sqrt(sampling + t * t))


def observed(m: int, correct: float, level: float = 0.9) -> Interval | None:
    """Wilson score interval of the labelled responses' accuracy."""
    if m <= 0:
        return None
    z = z_value(level)
    p = correct / m
    denom = 1.0 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def recalibrated(
    n: int,
    sum_p: float,
    sum_p2: float,
    m: int,
    sum_r: float,
    sum_r2: float,
    level: float = 0.9,
    tau: Tau = 0.0,
) -> Interval | None:
    """Prediction-powered estimate: all n scores plus the residuals r = y − p of the m labelled.

    With ``tau`` > 0 the labelled bias estimate is shrunk toward 0 by its precision against the
    transfer prior: the slice's bias b has prior N(0, τ²) (the spread of the estimator's errors on
    unseen benchmarks), the m residuals measure it with variance var(r)/m, so the posterior mean is
    w · mean(r), w = s² / (s² + var(r)/m), with variance w · var(r)/m, where s² = max(τ², mean(r)² −
    var(r)/m) (empirical Bayes: a slice whose labels show a bias beyond τ gets a prior that wide). A
    few labels then barely move a well-estimated slice (plain PPI with 5-30 labels made it worse on
    the study's slices: docs/results.md), and many labels converge to plain PPI. var(r)/m carries
    the finite-population factor (1 − m/n): a slice whose every response is labelled is known.
    """
    if n <= 1 or m <= 1:
        return None
    mean_p = sum_p / n
    tau = tau_at(tau, mean_p)
    var_p = max(sum_p2 / n - mean_p * mean_p, 0.0) * n / (n - 1)
    mean_r = sum_r / m
    var_r = max(sum_r2 / m - mean_r * mean_r, 0.0) * m / (m - 1)
    # a calibrated score has E[(y − p)²] = E[p(1 − p)]: a few labels of a rare outcome (all wrong,
    # say) must not shrink the residual variance below that, or the interval collapses
    var_r = max(var_r, max(sum_p - sum_p2, 0.0) / n)
    # the m labels are drawn without replacement from the slice's n responses: once all of them
    # are labelled, the slice's accuracy is known exactly (finite-population correction)
    noise = var_r / m * max(1.0 - m / n, 0.0)
    # empirical-Bayes prior: a bias the labels show to be larger than τ widens the prior to it
    prior = max(tau * tau, mean_r * mean_r - noise)
    weight = prior / (prior + noise) if tau > 0 and prior + noise > 0 else 1.0
    estimate = min(max(mean_p + weight * mean_r, 0.0), 1.0)
    return _clip(estimate, z_value(level) * math.sqrt(var_p / n + weight * noise))


def _rms(errors: list[float]) -> float:
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else 0.0


def predictive_tau(errors: list[float], level: float = 0.9) -> float:
    """τ for a new benchmark from B leave-one-out errors: RMS · sqrt(1 + 1/B) · t_{B−1} / z."""
    b = len(errors)
    rms = _rms(errors)
    if b < 2:
        return rms
    from scipy.stats import t as student_t

    return rms * math.sqrt(1.0 + 1.0 / b) * float(student_t.ppf(0.5 + level / 2.0, b - 1)) / z_value(level)


def _validation_rows(validation: dict | None) -> list[dict]:
    """The benchmarks of an artifact's validation (leave one benchmark or family out) that have an estimate."""
    per = (validation or {}).get("per_benchmark") or {}
    return [v for v in per.values() if v.get("est_acc") is not None]


def _validation_errors(validation: dict | None) -> list[float]:
    """est − true of each benchmark in an artifact's validation."""
    return [v["est_acc"] - v["true_acc"] for v in _validation_rows(validation)]


def spread_from_errors(
    errors: list[float], estimates: list[float], level: float = 0.9, shape: str = "constant"
) -> TransferSpread:
    """:func:`predictive_tau` of the validation errors, each divided by its shape's scale at its own
    estimate first (so τ₀ is the spread at Â = 0.5 for the ``binomial`` shape)."""
    probe = TransferSpread(1.0, shape)
    scaled = [e / probe.scale(p) for e, p in zip(errors, estimates, strict=True)]
    return TransferSpread(predictive_tau(scaled, level), shape)


def transfer_tau(validation: dict | None, level: float = 0.9) -> TransferSpread:
    """The transfer spread an artifact's validation implies (τ₀ = 0 when it has none): its errors'
    :func:`predictive_tau`, in the shape the validation names (``tau_shape``; older artifacts:
    constant)."""
    shape = (validation or {}).get("tau_shape", "constant")
    return spread_from_errors(
        _validation_errors(validation), [v["est_acc"] for v in _validation_rows(validation)], level, shape
    )


def transfer_rms(validation: dict | None) -> float:
    """The plain RMS of an artifact's leave-one-benchmark-out errors (0 when it has none)."""
    return _rms(_validation_errors(validation))
