"""The accuracy-monitoring study behind docs/results.md, computed from committed labelled traces.

Everything here is a pure function of the traces (and of the optional truncation measurement), so
`entropy-sentinel study` regenerates every table and figure and a test can check that the committed
results still match what the code computes. Sections:

* **protocol**: the paper's protocol (train on k benchmarks, estimate the others) for every
  estimator, k = 1..4, every composition unless capped.
* **holdout / lobo**: every slice estimated by each estimator trained without it (leave one slice
  out) and without its whole task family (leave one family out: a new task), with AUROC per slice.
* **coverage**: how often the 90 % label-free interval covers the held-out slice's accuracy, under
  both hold-outs, for each τ recipe (nested slice- or family-out errors) and τ shape, with its
  width and counted only where no bound is clipped (:mod:`~entropy_sentinel.evaluation.study_shift`).
* **nested / bootstrap**: the winner chosen on other families than the one it is scored on, and
  each estimator's share of slice-bootstrap resamples in which it has the lowest median AEE.
* **prompt_shift**: slices asked again with another prompt set: does the estimate move as the truth does?
* **labels**: AEE of the prediction-powered estimate on a new slice after m feedback labels.
* **variants / features**: the default estimator under each entropy variant and feature set.
* **diversity**: does a training set that spans difficulty transfer better?
* **truncation**: top-20 entropy variants against a near-full distribution (separate measurement).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone

from entropy_sentinel.benchmarks.registry import family_of
from entropy_sentinel.estimator.base import ROBUST_FEATURES
from entropy_sentinel.estimator.registry import estimator_names, make_estimator
from entropy_sentinel.evaluation.protocol import BenchmarkData, benchmark_data, run_protocol
from entropy_sentinel.evaluation.study_shift import (
    HOLDOUTS,
    TAU_RECIPES,
    bootstrap_verdict,
    holdout_estimates,
    holdout_predictions,
    interval_coverage,
    nested_selection,
    prompt_shift,
)
from entropy_sentinel.evaluation.training import DEFAULT_METHOD
from entropy_sentinel.signal.entropy import ENTROPY_VARIANTS, entropy_variant
from entropy_sentinel.signal.features import ENTROPY_FEATURES
from entropy_sentinel.stats.intervals import Tau, recalibrated
from entropy_sentinel.stats.scores import spearman

Trace = Mapping[str, Any]

#: Feature sets compared for the default estimator (``None``: the estimator's own default).
FEATURE_SETS: Mapping[str, tuple[str, ...] | None] = {
    "the paper's 11": ENTROPY_FEATURES,
    "paper's 11 + NLL + length": (*ENTROPY_FEATURES, "nll_mean", "nll_max", "n_tokens"),
    "length-free levels + NLL": (*ROBUST_FEATURES, "nll_mean"),
    "+ top-20 mass, length": (*ROBUST_FEATURES, "nll_mean", "nll_max", "topk_mass_mean", "n_tokens"),
    "default (levels + NLL + sums)": None,
}


#: the candidates the nested selection chooses among (name -> registry name, parameters): our
#: estimators with the features and constraints the study compares; the references (constant, ATC,
#: the paper's forest) are never candidates
CANDIDATES: Mapping[str, tuple[str, dict[str, Any]]] = {
    "monotone_boost": ("monotone_boost", {}),
    "monotone_boost_levels": ("monotone_boost", {"features": ("mean", "max", "q90", "nll_mean", "nll_max")}),
    "plain_boost": ("monotone_boost", {"monotone": False}),
    "logistic": ("logistic", {}),
}


@dataclass(frozen=True)
class StudyConfig:
    #: every registered estimator (:mod:`entropy_sentinel.estimator.registry`), in its order
    estimators: tuple[str, ...] = field(default_factory=estimator_names)
    default: str = DEFAULT_METHOD
    #: what the default must beat: guess the average, ATC, the paper's forest, and the model's own
    #: probability of its answer (average confidence: label-free, nothing learnt)
    references: tuple[str, ...] = ("constant", "atc", "paper_forest", "average_confidence")
    ks: tuple[int, ...] = (1, 2, 3, 4)
    max_combinations: int | None = 60
    ablation_max_combinations: int | None = 20
    variant: str = "topk"
    level: float = 0.9
    seed: int = 0
    label_budgets: tuple[int, ...] = (0, 5, 10, 20, 30, 50, 75, 100, 150, 200)
    label_draws: int = 200
    aee_target: float = 0.03
    subslice_n: int = 100
    subslice_draws: int = 200
    bootstrap_draws: int = 2000
    #: estimators whose interval, by the same recipes, the coverage section also reports (next to the
    #: default's): does the recipe cover because of the estimator, or for any estimate?
    interval_baselines: tuple[str, ...] = ("constant", "average_confidence")
    #: the interval recipe the proxy ships (validated by the coverage section)
    tau_recipe: str = "family"
    tau_shape: str = "binomial"
    feature_sets: Mapping[str, tuple[str, ...] | None] = field(default_factory=lambda: dict(FEATURE_SETS))
    candidates: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=lambda: dict(CANDIDATES))


@dataclass
class StudyResult:
    results: dict[str, Any]
    rows: list[dict[str, Any]]
    reliability: dict[tuple[str, int], Any]


def _r(x: float, digits: int = 6) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def overall(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per estimator, over every composition of every k: median / mean AEE, median Spearman."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["estimator"] for r in rows):
        rs = [r for r in rows if r["estimator"] == name]
        per_comp = {r["composition"]: r["spearman"] for r in rs}
        rho = np.array([v for v in per_comp.values() if v is not None and not math.isnan(v)])
        aee = np.array([r["aee"] for r in rs])
        out[name] = {
            "compositions": len(per_comp),
            "median_aee": _r(np.median(aee)),
            "mean_aee": _r(aee.mean()),
            "p90_aee": _r(np.quantile(aee, 0.9)),
            "median_spearman": _r(np.median(rho)) if rho.size else None,
        }
    return out


def labels_curve(
    data: Mapping[str, BenchmarkData], preds: Mapping[str, np.ndarray], taus: Mapping[str, Tau], cfg: StudyConfig
) -> dict[str, Any]:
    """AEE on a new slice after m random feedback labels: the proxy's recalibrated estimate (the
    labelled bias shrunk by the τ prior), plain prediction-powered inference, and the labels alone."""
    rng = np.random.default_rng(cfg.seed + 1)
    curve = []
    for m in cfg.label_budgets:
        shrunk_aee, ppi_aee, obs_aee, covered = [], [], [], []
        for b, p in preds.items():
            y = data[b].y
            truth = y.mean()
            if m == 0:
                shrunk_aee.append(abs(p.mean() - truth))
                continue
            if m > y.size:
                continue
            errs = np.empty((cfg.label_draws, 3))
            hits = 0
            for i in range(cfg.label_draws):
                idx = rng.choice(y.size, m, replace=False)
                r = y[idx] - p[idx]
                iv = recalibrated(p.size, p.sum(), (p**2).sum(), m, r.sum(), (r**2).sum(), cfg.level, taus[b])
                plain = float(np.clip(p.mean() + r.mean(), 0.0, 1.0))
                errs[i] = (abs(iv.estimate - truth), abs(plain - truth), abs(y[idx].mean() - truth))
                hits += iv.lower <= truth <= iv.upper
            shrunk_aee.append(float(errs[:, 0].mean()))
            ppi_aee.append(float(errs[:, 1].mean()))
            obs_aee.append(float(errs[:, 2].mean()))
            covered.append(hits / cfg.label_draws)
        curve.append(
            {
                "labels": m,
                "median_aee": _r(np.median(shrunk_aee)),
                "max_aee": _r(np.max(shrunk_aee)),
                "plain_ppi_median_aee": _r(np.median(ppi_aee)) if ppi_aee else None,
                "plain_ppi_max_aee": _r(np.max(ppi_aee)) if ppi_aee else None,
                "labels_only_median_aee": _r(np.median(obs_aee)) if obs_aee else None,
                "interval_coverage": _r(np.mean(covered)) if covered else None,
            }
        )
    return {
        "target_aee": cfg.aee_target,
        "labels_for_median_slice": _first_staying_below(curve, "median_aee", cfg.aee_target),
        "labels_for_every_slice": _first_staying_below(curve, "max_aee", cfg.aee_target),
        "curve": curve,
    }


def _first_staying_below(curve: Sequence[Mapping[str, Any]], key: str, target: float) -> int | None:
    """Fewest labels (> 0) from which ``key`` stays at or below ``target`` for every larger budget."""
    labelled = [c for c in curve if c["labels"] > 0 and c[key] is not None]
    for i, c in enumerate(labelled):
        if all(d[key] <= target for d in labelled[i:]):
            return int(c["labels"])
    return None


def diversity(
    rows: Sequence[Mapping[str, Any]], accuracy: Mapping[str, float], estimator: str, k: int
) -> list[dict[str, Any]]:
    """Median AEE of ``estimator`` at ``k`` by the accuracy range its training benchmarks span."""
    rs = [r for r in rows if r["estimator"] == estimator and r["k"] == k]
    spans = {r["train"]: np.ptp([accuracy[b] for b in r["train"].split("+")]) for r in rs}
    if not spans:
        return []
    edges = np.quantile(list(spans.values()), [0, 1 / 3, 2 / 3, 1])
    out = []
    for i in range(3):
        lo, hi = edges[i], edges[i + 1]
        sel = [r for r in rs if (lo <= spans[r["train"]] <= hi if i == 2 else lo <= spans[r["train"]] < hi)]
        if sel:
            out.append(
                {
                    "span_from": _r(lo, 3),
                    "span_to": _r(hi, 3),
                    "heldout_rows": len(sel),
                    "median_aee": _r(np.median([r["aee"] for r in sel])),
                    "median_spearman": _r(np.median(list({r["train"]: r["spearman"] for r in sel}.values()))),
                }
            )
    return out


def truncation(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Per-token and per-response error of each top-k entropy variant against the near-full one."""
    if not doc:
        return None
    k = int(doc.get("k", 20))
    tok = np.array([t for r in doc["responses"] for t in r["tokens"]], dtype=np.float64)
    if tok.size == 0:
        return None
    full, h_k, m_k = tok[:, 0], tok[:, 2], tok[:, 3]
    bounds = np.cumsum([0] + [len(r["tokens"]) for r in doc["responses"]])
    full_mean = np.array([full[a:b].mean() for a, b in itertools.pairwise(bounds) if b > a])
    out = {}
    for v in ENTROPY_VARIANTS:
        h = entropy_variant(h_k, m_k, v, k)
        mean = np.array([h[a:b].mean() for a, b in itertools.pairwise(bounds) if b > a])
        out[v] = {
            "token_mae": _r(np.mean(np.abs(h - full))),
            "token_bias": _r(np.mean(h - full)),
            "token_p90_abs_error": _r(np.quantile(np.abs(h - full), 0.9)),
            "response_mean_mae": _r(np.mean(np.abs(mean - full_mean))),
            "response_spearman": _r(spearman(mean, full_mean)),
        }
    return {
        "candidates": doc.get("candidates"),
        "responses": len(full_mean),
        "tokens": int(full.size),
        "top_k_mass_median": _r(np.median(m_k)),
        "top_k_mass_p10": _r(np.quantile(m_k, 0.1)),
        "variants": out,
    }


def _split_prompts(
    grouped: Mapping[str, Sequence[Trace]],
) -> tuple[dict[str, Sequence[Trace]], dict[str, Sequence[Trace]]]:
    """(slices asked with the packaged prompts, slices asked with another prompt set: ``name@set``)."""
    main = {b: v for b, v in grouped.items() if "@" not in b}
    return main, {b: v for b, v in grouped.items() if "@" in b}


def run_study(
    grouped: Mapping[str, Sequence[Trace]],
    cfg: StudyConfig = StudyConfig(),
    truncation_doc: Mapping[str, Any] | None = None,
    n_jobs: int = 2,
    progress: bool = True,
) -> StudyResult:
    """Every section of the study; ``results`` is JSON-ready (floats rounded to 6 digits).

    The claims are made on the slices asked with the packaged prompts; slices asked with another
    prompt set (``name@set``) only enter the prompt-shift section."""
    grouped, alt_grouped = _split_prompts(grouped)
    templates = {name: make_estimator(name) for name in cfg.estimators}
    say = print if progress else (lambda *a, **k: None)
    say("study: protocol (k = 1..4)", flush=True)
    main = run_protocol(
        grouped, templates, ks=cfg.ks, max_combinations=cfg.max_combinations, variant=cfg.variant,
        n_jobs=n_jobs, seed=cfg.seed, progress=progress,
    )
    needed = {f for t in templates.values() for f in t.features}
    candidates = {n: make_estimator(reg, **params) for n, (reg, params) in cfg.candidates.items()}
    needed |= {f for t in candidates.values() for f in t.features}
    data = benchmark_data(grouped, needed, cfg.variant)
    accuracy = {b: float(d.y.mean()) for b, d in data.items()}
    default = templates[cfg.default]
    say("study: leave one slice / one family out", flush=True)
    holdouts: dict[str, dict[str, Any]] = {h: {} for h in HOLDOUTS}
    for h in HOLDOUTS:
        for name, t in templates.items():
            holdouts[h][name] = holdout_estimates(holdout_predictions(t, data, family_of, h, n_jobs), data)
    say("study: interval coverage", flush=True)
    coverage = {}
    for name in dict.fromkeys((cfg.default, *(n for n in cfg.interval_baselines if n in templates))):
        for h in HOLDOUTS:
            for recipe in TAU_RECIPES:
                coverage[f"{name}/{h}/{recipe}"] = interval_coverage(
                    templates[name], data, family_of, h, recipe, cfg.level, cfg.subslice_n, cfg.subslice_draws,
                    cfg.seed, n_jobs,
                )
    shipped = coverage[f"{cfg.default}/slice/{cfg.tau_recipe}"]
    preds, taus = shipped["_preds"], shipped["_taus"][cfg.tau_shape]
    for c in coverage.values():
        c.pop("_preds"), c.pop("_taus")
    lobo_rows = {
        name: {b: v["estimate"] for b, v in holdouts["slice"][name]["per_slice"].items()} for name in templates
    }
    say("study: ablations", flush=True)
    ablation = {"ks": cfg.ks, "max_combinations": cfg.ablation_max_combinations, "seed": cfg.seed}
    variants = {}
    for v in ENTROPY_VARIANTS:
        res = run_protocol(grouped, {v: clone(default)}, variant=v, progress=progress, n_jobs=n_jobs, **ablation)
        variants[v] = overall(res.rows)[v]
    features = {}
    for label, fs in cfg.feature_sets.items():
        t = clone(default) if fs is None else clone(default).set_params(features=tuple(fs))
        res = run_protocol(grouped, {label: t}, variant=cfg.variant, progress=progress, n_jobs=n_jobs, **ablation)
        features[label] = {"features": list(t.features), **overall(res.rows)[label]}
    say("study: nested selection, bootstrap, prompt shift", flush=True)
    nested = nested_selection(candidates, data, family_of, n_jobs)
    boot = {
        h: bootstrap_verdict(
            {n: {b: abs(v["error"]) for b, v in holdouts[h][n]["per_slice"].items()} for n in templates},
            cfg.bootstrap_draws, cfg.seed,
        )
        for h in HOLDOUTS
    }
    alt_data = benchmark_data(alt_grouped, default.features, cfg.variant) if alt_grouped else {}
    shift = prompt_shift(default, data, alt_data)
    summary = [
        {k: (_r(v) if isinstance(v, float) else v) for k, v in s.items() if k != "mean_fit_seconds"}
        for s in main.summary
    ]
    results = {
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("feature_sets", "candidates")},
        "candidates": {
            n: {"estimator": reg, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}}
            for n, (reg, params) in cfg.candidates.items()
        },
        "slices": {
            b: {"n": int(d.y.size), "accuracy": _r(d.y.mean()), "family": family_of(b)} for b, d in data.items()
        },
        "summary": summary,
        "overall": overall(main.rows),
        "lobo": {"true": {b: _r(a) for b, a in accuracy.items()}, "estimates": lobo_rows},
        "holdout": holdouts,
        "coverage": coverage,
        "labels": labels_curve(data, preds, taus, cfg),
        "variants": variants,
        "features": features,
        "diversity": {
            "estimator": cfg.default,
            "k": max(cfg.ks),
            "bins": diversity(main.rows, accuracy, cfg.default, max(cfg.ks)),
        },
        "nested": nested,
        "bootstrap": boot,
        "prompt_shift": shift,
        "truncation": truncation(truncation_doc),
    }
    results["verdict"] = verdict(results, cfg)
    return StudyResult(results, main.rows, main.reliability)


def spearman_ceiling(slices: Mapping[str, Mapping[str, Any]], draws: int = 2000, seed: int = 0) -> float:
    """Median Spearman ρ a *perfect* estimator would reach against these slices' measured
    accuracies: each slice's accuracy is itself a binomial draw of n responses, so near-equal
    slices swap ranks by sampling noise alone (simulated with the measured accuracies as truth)."""
    rng = np.random.default_rng(seed)
    p = np.array([s["accuracy"] for s in slices.values()], dtype=np.float64)
    n = np.array([s["n"] for s in slices.values()])
    return float(np.median([spearman(p, rng.binomial(n, p) / n) for _ in range(draws)]))


def verdict(results: Mapping[str, Any], cfg: StudyConfig) -> dict[str, Any]:
    """The issue's targets for the default estimator, each with its measured value."""
    ov = results["overall"]
    mine = ov[cfg.default]
    refs = {n: ov[n]["median_aee"] for n in cfg.references if n in ov}
    fam = results["holdout"]["family"]
    loso = results["holdout"]["slice"]
    fam_refs = {n: fam[n]["median_aee"] for n in cfg.references if n in fam}
    shipped = results["coverage"][f"{cfg.default}/family/{cfg.tau_recipe}"][cfg.tau_shape]
    shipped_loso = results["coverage"][f"{cfg.default}/slice/{cfg.tau_recipe}"][cfg.tau_shape]
    ge01 = {n: loso[n]["median_aee_acc_ge_0.1"] for n in (cfg.default, "constant") if n in loso}
    return {
        "estimator": cfg.default,
        "median_aee": mine["median_aee"],
        "beats_references_on_median_aee": all(mine["median_aee"] < v for v in refs.values()),
        "reference_median_aee": refs,
        "median_aee_family_holdout": fam[cfg.default]["median_aee"],
        "beats_references_family_holdout": all(fam[cfg.default]["median_aee"] < v for v in fam_refs.values()),
        "reference_median_aee_family_holdout": fam_refs,
        "median_aee_acc_ge_0.1_vs_constant": ge01,
        "median_aee_acc_ge_0.5_leave_one_out": loso[cfg.default]["median_aee_acc_ge_0.5"],
        "median_aee_acc_ge_0.5_family_holdout": fam[cfg.default]["median_aee_acc_ge_0.5"],
        "median_spearman_protocol": mine["median_spearman"],
        "spearman_leave_one_out": loso[cfg.default]["spearman"],
        "spearman_family_holdout": fam[cfg.default]["spearman"],
        "spearman_noise_ceiling": _r(spearman_ceiling(results["slices"], seed=cfg.seed)),
        "win_share_family_holdout": results["bootstrap"]["family"]["win_share"].get(cfg.default),
        "nested_median_aee": results["nested"]["median_aee"],
        "nested_spearman": results["nested"]["spearman"],
        "tau": {"recipe": cfg.tau_recipe, "shape": cfg.tau_shape},
        "interval_coverage": shipped_loso["subslices"],
        "interval_coverage_whole_slices": shipped_loso["whole_slice"],
        "interval_coverage_family_holdout": shipped["whole_slice"],
        "interval_coverage_family_holdout_unclipped": shipped["whole_slice_unclipped"],
        "interval_width_family_holdout": shipped["mean_width"],
    }
