"""``entropy-sentinel check``: a fixed estimator against labelled traces it was not trained on.

The question a user (or the product owner) asks of a shipped artifact: on *these* slices, whose
items and prompts it never saw, how close is its label-free slice estimate to the truth, does its
interval cover, does it rank the slices, and does it beat the simplest baseline. Nothing is fitted
here: the artifact scores every trace's stored features (in its own entropy variant), exactly as
the proxy would, and each benchmark of the traces is a slice.

Per slice: n, true accuracy, the estimate (mean P(correct)), its signed and absolute error, the
proxy's 90 % label-free interval (``stats.intervals.label_free`` with the artifact's transfer τ, as
``/sentinel/v1/slices`` reports it), whether it covers and whether a bound is clipped at 0 or 1,
per-response AUROC, and the *constant* baseline's estimate (the artifact's pooled training accuracy,
from its metadata: what an estimator that ignores the response would say).

Summary: median and mean AEE for the artifact and the constant, on all slices and on those at
accuracy >= 0.5; Spearman rho; coverage on all slices and on the unclipped ones, mean interval width;
the mean signed error and how many slices are over-estimated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entropy_sentinel.estimator.scorer import ArtifactScorer
from entropy_sentinel.evaluation.protocol import group_by_benchmark, read_traces, trace_features
from entropy_sentinel.stats.intervals import label_free, transfer_tau
from entropy_sentinel.stats.scores import auroc, spearman

__all__ = ["check_artifact", "check_artifacts", "compare_lines", "compare_results", "plot_check", "summary_lines"]


def _constant(metadata: dict[str, Any]) -> float:
    benchmarks = metadata.get("training_benchmarks") or {}
    n = sum(v["n"] for v in benchmarks.values())
    if not n:
        raise ValueError("the artifact's metadata lists no training benchmarks: no constant baseline")
    return sum(v["n"] * v["accuracy"] for v in benchmarks.values()) / n


def check_artifact(
    traces: Sequence[str | Path], scorer: ArtifactScorer, level: float = 0.9
) -> dict[str, Any]:
    """Per-slice and summary figures of ``scorer`` on the labelled ``traces`` (see the module doc)."""
    return check_artifacts(traces, {"": scorer}, level)[""]


def check_artifacts(
    traces: Sequence[str | Path], scorers: Mapping[Any, ArtifactScorer], level: float = 0.9
) -> dict[Any, dict[str, Any]]:
    """:func:`check_artifact` of each named scorer, the traces read once."""
    grouped = group_by_benchmark(t for t in read_traces(traces) if t.get("label") is not None)
    if not grouped:
        raise ValueError("no labelled traces in " + ", ".join(map(str, traces)))
    return {name: _check(grouped, scorer, level) for name, scorer in scorers.items()}


def _check(grouped: Mapping[str, Sequence[dict[str, Any]]], scorer: ArtifactScorer, level: float) -> dict[str, Any]:
    tau = transfer_tau(scorer.metadata.get("validation"), level)
    constant = _constant(scorer.metadata)
    names = tuple(scorer.features)
    slices = []
    for bench, rows in sorted(grouped.items()):
        X = np.array([[trace_features(t, scorer.variant)[f] for f in names] for t in rows], dtype=np.float64)
        p = scorer.estimator.predict_proba(X)[:, 1]
        y = np.array([int(t["label"]) for t in rows])
        interval = label_free(int(p.size), float(p.sum()), float((p * p).sum()), level, tau)
        true = float(y.mean())
        assert interval is not None
        slices.append({
            "slice": bench, "n": int(y.size), "true": true, "estimate": interval.estimate,
            "error": interval.estimate - true, "aee": abs(interval.estimate - true),
            "lower": interval.lower, "upper": interval.upper,
            "covers": interval.lower <= true <= interval.upper,
            "clipped": interval.lower <= 0.0 or interval.upper >= 1.0,
            "auroc": auroc(p, y) if 0 < true < 1 else float("nan"),
            "constant": constant, "constant_aee": abs(constant - true),
        })

    def med(key: str, rows: list[dict[str, Any]]) -> float:
        return float(np.median([r[key] for r in rows])) if rows else float("nan")

    high = [s for s in slices if s["true"] >= 0.5]
    unclipped = [s for s in slices if not s["clipped"]]
    summary = {
        "slices": len(slices),
        "median_aee": med("aee", slices), "median_aee_constant": med("constant_aee", slices),
        "mean_aee": float(np.mean([s["aee"] for s in slices])),
        "mean_aee_constant": float(np.mean([s["constant_aee"] for s in slices])),
        "slices_at_least_0.5": len(high),
        "median_aee_at_least_0.5": med("aee", high), "median_aee_constant_at_least_0.5": med("constant_aee", high),
        "spearman": spearman([s["estimate"] for s in slices], [s["true"] for s in slices])
        if len(slices) > 2 else float("nan"),
        "coverage": float(np.mean([s["covers"] for s in slices])),
        "coverage_unclipped": float(np.mean([s["covers"] for s in unclipped])) if unclipped else float("nan"),
        "unclipped": len(unclipped),
        "mean_width": float(np.mean([s["upper"] - s["lower"] for s in slices])),
        "mean_signed_error": float(np.mean([s["error"] for s in slices])),
        "over_estimated": sum(s["error"] > 0 for s in slices),
        "level": level, "tau0": tau.tau0, "tau_shape": tau.shape, "constant": constant,
    }
    return {"slices": slices, "summary": summary,
            "estimator": {k: scorer.metadata.get(k) for k in ("estimator", "model", "entropy_variant")}}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The per-slice table (markdown) and the summary lines."""
    s = result["summary"]
    lines = [
        "| slice | n | true | estimate | error | 90 % interval | covers | AUROC | constant's error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["slices"]:
        clip = " (clipped)" if r["clipped"] else ""
        lines.append(
            f"| {r['slice']} | {r['n']} | {r['true']:.3f} | {r['estimate']:.3f} | {r['error']:+.3f} | "
            f"[{r['lower']:.3f}, {r['upper']:.3f}]{clip} | {'yes' if r['covers'] else '**no**'} | "
            f"{r['auroc']:.3f} | {r['constant_aee']:.3f} |"
        )
    lines += [
        "",
        f"- median AEE {s['median_aee']:.3f} (constant {s['constant']:.3f}: {s['median_aee_constant']:.3f}); "
        f"mean {s['mean_aee']:.3f} (constant {s['mean_aee_constant']:.3f})",
        f"- on the {s['slices_at_least_0.5']} slices at accuracy >= 0.5: median AEE {s['median_aee_at_least_0.5']:.3f} "
        f"(constant {s['median_aee_constant_at_least_0.5']:.3f})",
        f"- Spearman rho {s['spearman']:.3f} over {s['slices']} slices",
        f"- {s['level']:.0%} interval coverage {s['coverage']:.3f} of all slices, {s['coverage_unclipped']:.3f} "
        f"of the {s['unclipped']} not clipped at 0 or 1; mean width {s['mean_width']:.3f} "
        f"(tau0 {s['tau0']:.3f}, {s['tau_shape']})",
        f"- mean signed error {s['mean_signed_error']:+.3f}; over-estimated {s['over_estimated']} of {s['slices']}",
    ]
    return lines


def plot_check(result: dict[str, Any], path: str | Path) -> None:
    """Estimate (with its interval) against the truth per slice, the diagonal and the constant: a PNG."""
    from matplotlib.figure import Figure

    rows = result["slices"]
    fig = Figure(figsize=(6.4, 6.0), dpi=110)
    ax = fig.add_subplot()
    true = np.array([r["true"] for r in rows])
    est = np.array([r["estimate"] for r in rows])
    err = np.array([[r["estimate"] - r["lower"] for r in rows], [r["upper"] - r["estimate"] for r in rows]])
    covers = np.array([r["covers"] for r in rows])
    ax.plot([0, 1], [0, 1], color="#7f7f7f", lw=1, label="estimate = truth")
    ax.axhline(result["summary"]["constant"], color="#ff7f0e", lw=1, ls="--", label="constant baseline")
    for mask, color, label in ((covers, "#1f77b4", "interval covers"), (~covers, "#d62728", "interval misses")):
        if mask.any():
            ax.errorbar(true[mask], est[mask], yerr=err[:, mask], fmt="o", color=color, ms=4, capsize=2, label=label)
    for r in rows:
        ax.annotate(r["slice"], (r["true"], r["estimate"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("true accuracy")
    ax.set_ylabel("estimated accuracy (mean P(correct))")
    s = result["summary"]
    ax.set_title(f"median AEE {s['median_aee']:.3f} (constant {s['median_aee_constant']:.3f}), "
                 f"rho {s['spearman']:.2f}, coverage {s['coverage']:.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def compare_results(results: dict[str, dict[str, Any]], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Several estimators' checks on the same slices side by side, the constant (of the first) among
    them, and how sure the ranking is: over ``n_boot`` resamples of the slices (with replacement),
    the share in which each has the lowest median AEE."""
    names = list(results)
    order = [s["slice"] for s in results[names[0]]["slices"]]
    for name in names[1:]:
        if [s["slice"] for s in results[name]["slices"]] != order:
            raise ValueError(f"{name} was checked on other slices than {names[0]}")
    errors = {name: np.array([s["aee"] for s in results[name]["slices"]]) for name in names}
    errors["constant"] = np.array([s["constant_aee"] for s in results[names[0]]["slices"]])
    # where users mostly are: slices the model gets right at least half the time
    true = np.array([s.get("true", np.nan) for s in results[names[0]]["slices"]], dtype=np.float64)
    high = true >= 0.5
    labels = list(errors)
    matrix = np.vstack([errors[n] for n in labels])  # (estimators, slices)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, matrix.shape[1], size=(n_boot, matrix.shape[1]))
    medians = np.median(matrix[:, draws], axis=2)  # (estimators, n_boot)
    wins = np.bincount(medians.argmin(axis=0), minlength=len(labels)) / n_boot
    lo, hi = np.percentile(medians, [5, 95], axis=1)
    rows = {}
    for i, n in enumerate(labels):
        summary = results[n]["summary"] if n in results else None
        rows[n] = {
            "median_aee": float(np.median(errors[n])), "median_aee_5": float(lo[i]), "median_aee_95": float(hi[i]),
            "median_aee_at_least_0.5": float(np.median(errors[n][high])) if high.any() else float("nan"),
            "lowest_share": float(wins[i]),
            "spearman": summary["spearman"] if summary else float("nan"),
            "coverage": summary["coverage"] if summary else float("nan"),
            "mean_width": summary["mean_width"] if summary else float("nan"),
        }
    return {"slices": len(order), "slices_at_least_0.5": int(high.sum()), "n_boot": n_boot, "estimators": rows}


def plot_compare(comparison: dict[str, Any], results: dict[str, dict[str, Any]], path: str | Path) -> None:
    """The comparison as a PNG: left, each estimator's median AEE with its slice-bootstrap 5-95 % range and
    its median AEE on the slices at >= 0.5; right, every estimator's estimate against the truth per slice."""
    from matplotlib.figure import Figure

    rows = comparison["estimators"]
    names = list(rows)
    fig = Figure(figsize=(11.0, 5.2), dpi=110)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
    y = np.arange(len(names))[::-1]
    med = np.array([rows[n]["median_aee"] for n in names])
    spread = np.array([med - [rows[n]["median_aee_5"] for n in names], [rows[n]["median_aee_95"] for n in names] - med])
    left.errorbar(med, y, xerr=spread, fmt="o", color="#1f77b4", capsize=3, label="median AEE, all slices (5-95 %)")
    high = [rows[n]["median_aee_at_least_0.5"] for n in names]
    left.plot(high, y, "D", color="#d62728", ms=5, label=f"median AEE, the {comparison['slices_at_least_0.5']} "
              "slices >= 0.5")
    left.set_yticks(y, [f"{n} ({rows[n]['lowest_share']:.0%})" for n in names], fontsize=8)
    left.set_xlim(left=0)
    left.set_xlabel("absolute error of the slice's accuracy (lower is better)")
    left.set_title(f"{comparison['slices']} slices (in brackets: the share of {comparison['n_boot']} slice resamples "
                   "in which it has the lowest median)", fontsize=8)
    left.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    right.plot([0, 1], [0, 1], color="#7f7f7f", lw=1)
    markers = "osD^v<>Ph*"
    for i, name in enumerate(n for n in names if n in results):
        sl = results[name]["slices"]
        right.plot([s["true"] for s in sl], [s["estimate"] for s in sl], markers[i % len(markers)], ms=4,
                   alpha=0.75, label=name)
    right.set_xlim(-0.02, 1.02)
    right.set_ylim(-0.02, 1.02)
    right.set_xlabel("true accuracy")
    right.set_ylabel("estimated accuracy (mean P(correct))")
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


def compare_lines(comparison: dict[str, Any]) -> list[str]:
    lines = [
        "| estimator | median AEE | slice bootstrap 5-95 % | lowest median AEE in | median AEE, slices >= 0.5 "
        "| Spearman rho | coverage | mean width |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in comparison["estimators"].items():
        lines.append(
            f"| {name} | {r['median_aee']:.3f} | {r['median_aee_5']:.3f}-{r['median_aee_95']:.3f} | "
            f"{r['lowest_share']:.0%} | {r['median_aee_at_least_0.5']:.3f} | {r['spearman']:.3f} | "
            f"{r['coverage']:.3f} | {r['mean_width']:.3f} |"
        )
    lines.append(
        f"\n({comparison['n_boot']} resamples of the {comparison['slices']} slices; "
        f"{comparison['slices_at_least_0.5']} of them at accuracy >= 0.5)"
    )
    return lines
