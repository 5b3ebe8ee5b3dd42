"""The study's shift sections: what happens on a task family, or a prompt, the estimator never saw.

Pure functions of the per-benchmark data (:class:`~entropy_sentinel.evaluation.protocol.BenchmarkData`)
and a family map; :mod:`entropy_sentinel.evaluation.study` calls them and puts their output in
``results.json``.

* :func:`holdout_estimates`: every slice estimated by a model fitted without it (leave one slice
  out) or without its whole family (leave one family out), with per-response AUROC.
* :func:`interval_coverage`: coverage *and width* of the 90 % label-free interval under either
  hold-out, for either τ recipe (nested leave-one-slice-out, or nested leave-one-family-out) and
  either τ shape (constant, or scaling with the estimate), and coverage counted only where no bound
  is clipped at 0 or 1 (a clipped bound covers for free).
* :func:`bootstrap_verdict`: which estimator has the lowest median AEE when the slices themselves
  are resampled, so a "winner" comes with its uncertainty.
* :func:`nested_selection`: the winner chosen on the other families only, then scored on the
  held-out one: the error of the *procedure* that picks the shipped estimator.
* :func:`prompt_shift`: the same items asked with another prompt set, estimated by a model that
  never saw that benchmark: how far the estimate moves against how far the truth moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from joblib import Parallel, delayed

from entropy_sentinel.evaluation.protocol import BenchmarkData, fit_on
from entropy_sentinel.stats.intervals import TAU_SHAPES, TransferSpread, label_free, spread_from_errors
from entropy_sentinel.stats.scores import auroc, spearman

Data = Mapping[str, BenchmarkData]
#: hold-out regimes: which slices a held-out slice's model may not see
HOLDOUTS = ("slice", "family")
#: τ recipes: which validation errors the interval's transfer term is estimated from
TAU_RECIPES = ("slice", "family")


def _r(x: Any, digits: int = 6) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), digits)


def _predict(template: Any, data: Data, train: Sequence[str], tests: Sequence[str]) -> dict[str, np.ndarray]:
    model = fit_on(template, data, train)
    cols = tuple(template.features)
    return {b: model.predict_proba(data[b].matrix(cols))[:, 1] for b in tests}


def _units(names: Sequence[str], family: Callable[[str], str], holdout: str) -> list[tuple[list[str], list[str]]]:
    """(train, test) splits: one per slice, or one per family."""
    if holdout == "slice":
        return [([o for o in names if o != b], [b]) for b in names]
    if holdout != "family":
        raise ValueError(f"holdout must be one of {HOLDOUTS}, not {holdout!r}")
    fams = sorted({family(b) for b in names})
    return [([o for o in names if family(o) != f], [b for b in names if family(b) == f]) for f in fams]


def holdout_predictions(
    template: Any, data: Data, family: Callable[[str], str], holdout: str, n_jobs: int = 2
) -> dict[str, np.ndarray]:
    """P(correct) of every response of every slice from a model that never saw its slice / family."""
    names = list(data)
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_predict)(template, data, train, tests) for train, tests in _units(names, family, holdout)
    )
    out: dict[str, np.ndarray] = {}
    for part in parts:
        out.update(part)
    return {b: out[b] for b in names}


def holdout_estimates(preds: Mapping[str, np.ndarray], data: Data) -> dict[str, Any]:
    """Per slice: estimate, truth, error, AUROC; then median / mean AEE, AEE on slices ≥ 0.1 and
    ≥ 0.5, and Spearman across slices."""
    per = {}
    for b, p in preds.items():
        y = data[b].y
        per[b] = {
            "true_acc": _r(y.mean()),
            "estimate": _r(p.mean()),
            "error": _r(p.mean() - y.mean()),
            "auroc": _r(auroc(p, y)) if 0 < y.mean() < 1 else None,
        }
    return {"per_slice": per, **aee_summary(per)}


def aee_summary(per: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    true = np.array([v["true_acc"] for v in per.values()])
    est = np.array([v["estimate"] for v in per.values()])
    aee = np.abs(est - true)
    rho = spearman(est, true) if np.ptp(est) > 0 else float("nan")

    def med(mask: np.ndarray) -> float | None:
        return _r(np.median(aee[mask])) if mask.any() else None

    return {
        "median_aee": _r(np.median(aee)),
        "mean_aee": _r(aee.mean()),
        "median_aee_acc_ge_0.1": med(true >= 0.1),
        "median_aee_acc_ge_0.5": med(true >= 0.5),
        "spearman": _r(rho),
    }


def _inner_errors(
    template: Any, data: Data, train: Sequence[str], family: Callable[[str], str], recipe: str
) -> tuple[list[float], list[float]]:
    """(errors, estimates) of the nested validation a model fitted on ``train`` would carry."""
    if recipe == "slice":
        inner = [([o for o in train if o != v], [v]) for v in train]
    elif recipe == "family":
        fams = sorted({family(b) for b in train})
        inner = [([o for o in train if family(o) != f], [b for b in train if family(b) == f]) for f in fams]
    else:
        raise ValueError(f"tau recipe must be one of {TAU_RECIPES}, not {recipe!r}")
    errors, estimates = [], []
    for tr, tests in inner:
        if not tr:
            continue
        for b, p in _predict(template, data, tr, tests).items():
            errors.append(float(p.mean() - data[b].y.mean()))
            estimates.append(float(p.mean()))
    return errors, estimates


def _coverage_unit(
    template: Any, data: Data, train: list[str], tests: list[str], family: Callable[[str], str], recipe: str
) -> tuple[tuple[list[float], list[float]], dict[str, np.ndarray]]:
    return _inner_errors(template, data, train, family, recipe), _predict(template, data, train, tests)


def interval_coverage(
    template: Any,
    data: Data,
    family: Callable[[str], str],
    holdout: str,
    recipe: str,
    level: float = 0.9,
    subslice_n: int = 100,
    subslice_draws: int = 200,
    seed: int = 0,
    n_jobs: int = 2,
) -> dict[str, Any]:
    """Label-free interval per held-out slice, for each τ shape (:data:`TAU_SHAPES`), τ by
    ``recipe`` computed without the held-out slice / family: its coverage of the truth on the whole
    slice and on random sub-slices, its width, and coverage among the slices whose bounds are not
    clipped at 0 or 1. Also returns the held-out predictions and each slice's τ (``_preds``,
    ``_taus``) for the labels curve."""
    names = list(data)
    splits = _units(names, family, holdout)
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_coverage_unit)(template, data, train, tests, family, recipe) for train, tests in splits
    )
    out: dict[str, Any] = {"holdout": holdout, "tau_recipe": recipe, "level": level, "subslice_n": subslice_n}
    preds: dict[str, np.ndarray] = {}
    taus: dict[str, dict[str, TransferSpread]] = {shape: {} for shape in TAU_SHAPES}
    for (errors, estimates), part in parts:
        for shape in TAU_SHAPES:
            spread = spread_from_errors(errors, estimates, level, shape)
            for b in part:
                taus[shape][b] = spread
        preds.update(part)
    for k, shape in enumerate(TAU_SHAPES):
        rng = np.random.default_rng(seed + k)
        per: dict[str, Any] = {}
        for b in names:
            p, y, tau = preds[b], data[b].y, taus[shape][b]
            iv = label_free(p.size, p.sum(), (p**2).sum(), level, tau)
            hits = 0
            n_sub = min(subslice_n, p.size)
            for _ in range(subslice_draws):
                idx = rng.choice(p.size, n_sub, replace=False)
                sub = label_free(n_sub, p[idx].sum(), (p[idx] ** 2).sum(), level, tau)
                hits += sub.lower <= y[idx].mean() <= sub.upper
            per[b] = {
                "true_acc": _r(y.mean()),
                "estimate": _r(iv.estimate),
                "lower": _r(iv.lower),
                "upper": _r(iv.upper),
                "tau0": _r(tau.tau0),
                "covered": bool(iv.lower <= y.mean() <= iv.upper),
                "clipped": bool(iv.lower <= 0.0 or iv.upper >= 1.0),
                "subslice_coverage": _r(hits / subslice_draws),
            }
        unclipped = [v["covered"] for v in per.values() if not v["clipped"]]
        out[shape] = {
            "whole_slice": _r(np.mean([v["covered"] for v in per.values()])),
            "whole_slice_unclipped": _r(np.mean(unclipped)) if unclipped else None,
            "unclipped_slices": len(unclipped),
            "subslices": _r(np.mean([v["subslice_coverage"] for v in per.values()])),
            "mean_width": _r(np.mean([v["upper"] - v["lower"] for v in per.values()])),
            "median_tau0": _r(np.median([v["tau0"] for v in per.values()])),
            "per_slice": per,
        }
    out["_preds"] = preds
    out["_taus"] = taus
    return out


def bootstrap_verdict(
    per_estimator: Mapping[str, Mapping[str, float]], draws: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """``per_estimator[name][slice]`` = that estimator's AEE on the slice. Resample the slices with
    replacement; per estimator the share of resamples in which its median AEE is the lowest (ties
    split), and the 5-95 % range of its median AEE."""
    names = list(per_estimator)
    slices = sorted(set.intersection(*(set(v) for v in per_estimator.values())))
    table = np.array([[per_estimator[n][s] for s in slices] for n in names])  # (estimators, slices)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(slices), size=(draws, len(slices)))
    medians = np.median(table[:, idx], axis=2)  # (estimators, draws)
    best = medians.min(axis=0)
    winners = medians == best[None, :]
    share = (winners / winners.sum(axis=0, keepdims=True)).sum(axis=1) / draws
    return {
        "draws": draws,
        "slices": len(slices),
        "win_share": {n: _r(s, 4) for n, s in zip(names, share, strict=True)},
        "median_aee_5_95": {
            n: [_r(np.quantile(medians[i], 0.05)), _r(np.quantile(medians[i], 0.95))] for i, n in enumerate(names)
        },
    }


def nested_selection(
    candidates: Mapping[str, Any], data: Data, family: Callable[[str], str], n_jobs: int = 2
) -> dict[str, Any]:
    """For each family F: among ``candidates`` pick the lowest median AEE under leave-one-family-out
    on the *other* families, then estimate F's slices with that pick fitted on the other families."""
    names = list(data)
    fams = sorted({family(b) for b in names})
    per: dict[str, Any] = {}
    chosen: dict[str, str] = {}
    for f in fams:
        outer_train = [b for b in names if family(b) != f]
        tests = [b for b in names if family(b) == f]
        inner_data = {b: data[b] for b in outer_train}
        if len({family(b) for b in outer_train}) < 2:  # nothing to hold out inside: the first candidate
            pick = next(iter(candidates))
        else:
            scores = {}
            for cname, template in candidates.items():
                preds = holdout_predictions(template, inner_data, family, "family", n_jobs)
                scores[cname] = float(np.median([abs(p.mean() - inner_data[b].y.mean()) for b, p in preds.items()]))
            pick = min(scores, key=scores.get)
        chosen[f] = pick
        for b, p in _predict(candidates[pick], data, outer_train, tests).items():
            y = data[b].y
            per[b] = {"true_acc": _r(y.mean()), "estimate": _r(p.mean()), "chosen": pick, "family": f}
    return {"chosen_by_family": chosen, "per_slice": {b: per[b] for b in names}, **aee_summary(per)}


def prompt_shift(template: Any, data: Data, alt: Data) -> dict[str, Any]:
    """Each slice of ``alt`` (``name@set``: the items of ``name`` asked with prompt set ``set``) and
    its default version, both estimated by one model fitted on every default slice except ``name``."""
    per = {}
    for key, d_alt in alt.items():
        base, _, prompts = key.partition("@")
        if base not in data:
            continue
        model = fit_on(template, data, [o for o in data if o != base])
        cols = tuple(template.features)
        p_def = model.predict_proba(data[base].matrix(cols))[:, 1]
        p_alt = model.predict_proba(d_alt.matrix(cols))[:, 1]
        per[key] = {
            "slice": base,
            "prompts": prompts,
            "n": int(d_alt.y.size),
            "true_default": _r(data[base].y.mean()),
            "true_alt": _r(d_alt.y.mean()),
            "estimate_default": _r(p_def.mean()),
            "estimate_alt": _r(p_alt.mean()),
            "true_shift": _r(d_alt.y.mean() - data[base].y.mean()),
            "estimate_shift": _r(p_alt.mean() - p_def.mean()),
            "aee_default": _r(abs(p_def.mean() - data[base].y.mean())),
            "aee_alt": _r(abs(p_alt.mean() - d_alt.y.mean())),
        }
    return {"per_slice": per}
