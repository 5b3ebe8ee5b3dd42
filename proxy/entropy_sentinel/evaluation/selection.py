"""Which estimator would have been best on *this model's* labelled traffic: the numeric core of
``entropy-sentinel select``.

The paper's own data has a one-threshold baseline beating its classifier on some models, so the
estimator is chosen per model, on the labels its operator has, not fixed. Every candidate (the
registered estimators, each fitted on the same traces) and the estimator the proxy actually served
(``current``: the stored P(correct) of each labelled request) are scored on the labelled requests:

* the product's number first: per slice (the request's slice tag), |mean P(correct) - accuracy|,
  averaged over the slices with at least ``min_labels`` labels, slices weighted alike
  (``slice_aee``); with no such slice, all labelled requests form one slice ``"*"``;
* per response: Brier score and AUROC (reported, not used to choose);
* its uncertainty: ``n_boot`` resamples of the labelled requests within each slice, and each
  candidate's share of resamples in which its ``slice_aee`` is the lowest (``win_share``).

The recommendation switches only when the winner is not what is served now and beats it in at least
``min_share`` of the resamples (``beats_current``); otherwise it keeps the current estimator and says
why (a few dozen labels rarely separate estimators that differ by 0.01).

Pure numpy: rows in, a :class:`Comparison` out; fetching the labels and fitting the candidates is
:mod:`entropy_sentinel.evaluation.choose`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entropy_sentinel.stats.scores import auroc

__all__ = ["CURRENT", "Comparison", "LabelledRows", "compare_on_labels", "labelled_rows"]

#: the name of the estimator the proxy served (its stored P(correct)) in a comparison
CURRENT = "current"
#: the slice all labelled requests form when no slice has ``min_labels`` labels
ALL = "*"


@dataclass(frozen=True)
class LabelledRows:
    """The labelled, scored requests of one model: features, label, slice, served P(correct)."""

    features: list[dict[str, float]]
    y: np.ndarray
    slices: list[str]
    served: np.ndarray
    #: the model each response named
    models: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.size)

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """The feature columns ``names`` (an estimator's ``features``), a row per request."""
        missing = sorted({n for n in names for f in self.features[:1] if n not in f})
        if missing:
            raise ValueError(f"the stored features lack {', '.join(missing)}: this estimator cannot be compared")
        return np.array([[float(f[n]) for n in names] for f in self.features], dtype=np.float64).reshape(
            len(self.features), len(names)
        )


def labelled_rows(records: Sequence[Mapping[str, Any]]) -> LabelledRows:
    """The exported store rows (``/sentinel/v1/export``) that carry a label, features and a served
    P(correct); the others are left out (an unscored request has nothing to compare)."""
    keep = [
        r for r in records
        if r.get("label") is not None and isinstance(r.get("features"), dict) and r["features"]
        and r.get("p_correct") is not None
    ]
    return LabelledRows(
        features=[r["features"] for r in keep],
        y=np.array([int(r["label"]) for r in keep], dtype=np.int64),
        slices=[str(r.get("slice") or "") for r in keep],
        served=np.array([float(r["p_correct"]) for r in keep], dtype=np.float64),
        models=[str(r.get("model")) for r in keep],
    )


@dataclass
class Comparison:
    """Every candidate's errors on the labelled requests, and what to do.

    ``slices``: the slices the choice is made on (name -> labels, accuracy); ``per_slice[c][s]``:
    candidate ``c``'s estimate of slice ``s``; ``slice_aee[c]``, ``brier[c]``, ``auroc[c]``;
    ``win_share[c]``: share of bootstrap resamples in which ``c`` has the lowest ``slice_aee``;
    ``beats_current[c]``: share in which ``c``'s ``slice_aee`` is below the served estimator's;
    ``winner``: lowest ``slice_aee`` on all labels; ``recommended``: the estimator to serve
    (``current`` to keep it) and ``reason``.
    """

    n_labels: int
    slices: dict[str, dict[str, float]]
    per_slice: dict[str, dict[str, float]]
    slice_aee: dict[str, float]
    brier: dict[str, float]
    auroc: dict[str, float]
    win_share: dict[str, float]
    beats_current: dict[str, float]
    winner: str
    recommended: str
    reason: str
    min_share: float
    n_boot: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def table(self) -> list[str]:
        """The comparison as aligned text lines, best first."""
        order = sorted(self.slice_aee, key=lambda c: (self.slice_aee[c], c))
        lines = [
            f"{self.n_labels} labelled requests; slices compared: "
            + ", ".join(f"{s or '(untagged)'} (n={int(v['n'])}, accuracy {v['accuracy']:.3f})"
                        for s, v in self.slices.items()),
            f"{'estimator':24s} {'slice AEE':>9s} {'Brier':>7s} {'AUROC':>7s} {'wins':>6s} {'beats current':>13s}",
        ]
        for c in order:
            lines.append(
                f"{c:24s} {self.slice_aee[c]:9.3f} {self.brier[c]:7.3f} {self.auroc[c]:7.3f} {self.win_share[c]:6.1%} "
                f"{self.beats_current[c]:13.1%}"
            )
        lines.append(f"(shares of {self.n_boot} resamples of the labels within each slice: 'wins', with the lowest "
                     "slice AEE; 'beats current', below what is served now)")
        lines.extend(self.notes)
        lines.append(f"recommended: {self.recommended} ({self.reason})")
        return lines


def _groups(slices: Sequence[str], min_labels: int) -> tuple[dict[str, np.ndarray], list[str]]:
    names = np.asarray(slices, dtype=object)
    groups = {str(s): np.flatnonzero(names == s) for s in dict.fromkeys(slices)}
    kept = {s: idx for s, idx in groups.items() if idx.size >= min_labels}
    notes = []
    dropped = len(groups) - len(kept)
    if not kept:
        kept = {ALL: np.arange(len(slices))}
        notes.append(f"no slice has {min_labels} labels: all {len(slices)} labelled requests compared as one slice")
    elif dropped:
        notes.append(f"{dropped} slice(s) with fewer than {min_labels} labels left out of the choice")
    return kept, notes


def compare_on_labels(
    predictions: Mapping[str, np.ndarray],
    y: np.ndarray,
    slices: Sequence[str],
    *,
    current: str = CURRENT,
    min_labels: int = 20,
    min_share: float = 0.8,
    n_boot: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Score each candidate's per-request ``predictions`` against the labels ``y``; see the module doc."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        raise ValueError("no labelled requests to compare on")
    if current not in predictions:
        raise ValueError(f"the served estimator's predictions ({current!r}) are needed to recommend a switch")
    names = list(predictions)
    P = np.vstack([np.asarray(predictions[c], dtype=np.float64).reshape(-1) for c in names])  # (C, n)
    if P.shape[1] != y.size:
        raise ValueError(f"predictions have {P.shape[1]} rows for {y.size} labels")
    groups, notes = _groups(slices, min_labels)

    per_slice: dict[str, dict[str, float]] = {c: {} for c in names}
    errors = np.zeros((len(names), len(groups)))
    for j, (s, idx) in enumerate(groups.items()):
        est = P[:, idx].mean(axis=1)
        errors[:, j] = np.abs(est - y[idx].mean())
        for i, c in enumerate(names):
            per_slice[c][s] = float(est[i])
    slice_aee = errors.mean(axis=1)

    rng = np.random.default_rng(seed)
    boot = np.zeros((len(names), n_boot))
    chunk = max(1, 2_000_000 // max(1, len(names) * y.size))  # resamples per step: bounded memory
    for idx in groups.values():
        for start in range(0, n_boot, chunk):
            b = min(chunk, n_boot - start)
            draw = idx[rng.integers(0, idx.size, size=(b, idx.size))]  # (b, n_s)
            est = P[:, draw].mean(axis=2)  # (C, b)
            boot[:, start:start + b] += np.abs(est - y[draw].mean(axis=1)) / len(groups)
    best = boot.argmin(axis=0)
    win_share = {c: float(np.mean(best == i)) for i, c in enumerate(names)}
    served = boot[names.index(current)]
    beats = {c: float(np.mean(boot[i] < served)) for i, c in enumerate(names)}

    winner = names[int(np.argmin(slice_aee))]
    aee = dict(zip(names, map(float, slice_aee), strict=True))
    if winner == current:
        recommended, reason = current, "what the proxy serves now has the lowest slice AEE"
    elif beats[winner] < min_share:
        recommended = current
        reason = (f"{winner} has the lowest slice AEE ({aee[winner]:.3f} vs {aee[current]:.3f}) but beats what is "
                  f"served in only {beats[winner]:.0%} of resamples (< {min_share:.0%}): not a clear win on "
                  f"{y.size} labels; keep, and compare again with more labels")
    else:
        recommended = winner
        reason = (f"slice AEE {aee[winner]:.3f} vs {aee[current]:.3f} for what is served now, below it in "
                  f"{beats[winner]:.0%} of resamples (lowest of all in {win_share[winner]:.0%})")
    return Comparison(
        n_labels=int(y.size),
        slices={s: {"n": float(idx.size), "accuracy": float(y[idx].mean())} for s, idx in groups.items()},
        per_slice=per_slice,
        slice_aee=aee,
        brier={c: float(np.mean((P[i] - y) ** 2)) for i, c in enumerate(names)},
        auroc={c: auroc(P[i], y) for i, c in enumerate(names)},
        win_share=win_share,
        beats_current=beats,
        winner=winner,
        recommended=recommended,
        reason=reason,
        min_share=min_share,
        n_boot=n_boot,
        notes=notes,
    )
