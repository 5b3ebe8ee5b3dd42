"""Writes a protocol run to disk: CSV, markdown tables and PNG plots.

Plots are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas) rather than through pyplot,
so nothing here touches matplotlib's global backend or needs a display.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from entropy_sentinel.stats.scores import ReliabilityBins

__all__ = ["markdown_summary", "write_evaluation"]

#: The paper's own numbers (docs/architecture.md, "The paper's method and numbers"), printed under the
#: summary for comparison.
PAPER_REFERENCE = (
    "Paper (its CSVs): median AEE at k=4 from 0.082 (Phi-3.5) to 0.196 (Qwen3-8B); median Spearman 0.939; "
    "per-benchmark AUROC 0.58 (GPQA) to 0.84 (MATH); ATC on max entropy beats the forest on median AEE, "
    "0.077 vs 0.128."
)

_SUMMARY_COLUMNS = (
    ("estimator", "estimator"),
    ("k", "k"),
    ("n_compositions", "compositions"),
    ("median_aee", "median AEE"),
    ("aee_iqr", "AEE IQR"),
    ("mean_aee", "mean AEE"),
    ("median_spearman", "median ρ"),
    ("mean_auroc", "mean AUROC"),
    ("mean_pooled_auroc", "pooled AUROC"),
    ("mean_ece", "ECE"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if isinstance(v, float) and math.isnan(v) else v) for c, v in row.items()})


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def markdown_summary(rows: Sequence[Mapping[str, Any]], summary: Sequence[Mapping[str, Any]]) -> str:
    """The summary table, then median AEE per estimator x held-out benchmark at the largest k."""
    body = []
    for s in summary:
        cells = []
        for key, _ in _SUMMARY_COLUMNS:
            if key == "aee_iqr":
                cells.append(f"{_fmt(s['aee_q25'])}–{_fmt(s['aee_q75'])}")
            else:
                cells.append(_fmt(s[key]))
        body.append(cells)
    parts = ["## Summary per estimator and number of training benchmarks k", ""]
    parts += [_md_table([label for _, label in _SUMMARY_COLUMNS], body), "", PAPER_REFERENCE, ""]
    if rows:
        k_max = max(int(r["k"]) for r in rows)
        estimators = list(dict.fromkeys(r["estimator"] for r in rows))
        benchmarks = sorted({r["heldout"] for r in rows if int(r["k"]) == k_max})
        cell: dict[tuple[str, str], list[float]] = {}
        truth: dict[str, float] = {}
        for r in rows:
            if int(r["k"]) == k_max:
                cell.setdefault((r["estimator"], r["heldout"]), []).append(float(r["aee"]))
                truth[r["heldout"]] = float(r["true_acc"])
        table = [
            [b, _fmt(truth[b])] + [_fmt(float(np.median(cell[(e, b)]))) if (e, b) in cell else "–" for e in estimators]
            for b in benchmarks
        ]
        parts += [f"## Median AEE per held-out benchmark at k = {k_max}", ""]
        parts += [_md_table(["held-out", "true acc", *estimators], table), ""]
    return "\n".join(parts)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _plot_aee_vs_k(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    names = list(dict.fromkeys(s["estimator"] for s in summary))
    for name, color in zip(names, _colors(len(names)), strict=True):
        ss = sorted((s for s in summary if s["estimator"] == name), key=lambda s: s["k"])
        k = [s["k"] for s in ss]
        ax.plot(k, [s["median_aee"] for s in ss], marker="o", color=color, label=name)
        ax.fill_between(k, [s["aee_q25"] for s in ss], [s["aee_q75"] for s in ss], color=color, alpha=0.15)
    ax.set_xlabel("training benchmarks k")
    ax.set_ylabel("AEE on held-out benchmarks (median, IQR)")
    ax.set_xticks(sorted({s["k"] for s in summary}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def _plot_est_vs_true(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["estimator"] for r in rows))
    ks = sorted({int(r["k"]) for r in rows})
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4 * cols, 4 * nrows), dpi=110)
    colors = dict(zip(ks, _colors(len(ks)), strict=True))
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        for k in ks:
            rs = [r for r in rows if r["estimator"] == name and int(r["k"]) == k]
            true_acc, est_acc = [r["true_acc"] for r in rs], [r["est_acc"] for r in rs]
            ax.scatter(true_acc, est_acc, s=10, alpha=0.6, color=colors[k], label=f"k={k}")
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("true accuracy")
        ax.set_ylabel("estimated accuracy")
        ax.legend(fontsize="x-small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def _plot_reliability(reliability: Mapping[tuple[str, int], ReliabilityBins], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=120)
    ax = fig.add_subplot()
    names = list(dict.fromkeys(name for name, _ in reliability))
    for name, color in zip(names, _colors(len(names)), strict=True):
        k = max(kk for nn, kk in reliability if nn == name)
        rel = reliability[(name, k)]
        used = rel.count > 0
        sizes = 10 + 90 * rel.count[used] / max(rel.count.max(), 1)
        label = f"{name} (k={k}, pooled ECE {rel.ece:.3f})"
        ax.plot(rel.confidence[used], rel.accuracy[used], color=color, lw=1, label=label)
        ax.scatter(rel.confidence[used], rel.accuracy[used], s=sizes, color=color)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(correct)")
    ax.set_ylabel("observed accuracy (pooled held-out responses)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def write_evaluation(
    rows: Sequence[Mapping[str, Any]],
    summary: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    reliability: Mapping[tuple[str, int], ReliabilityBins] | None = None,
) -> dict[str, Path]:
    """Write rows.csv, summary.csv, summary.md, aee_vs_k.png, est_vs_true.png and, given the
    protocol's reliability bins, reliability.png (largest k per estimator). Returns the paths.

    The summary's ECE is the mean over compositions of the ECE of each one's held-out responses;
    the reliability plot pools the responses of *all* compositions of a k, where the per-benchmark
    level errors of opposite sign partly cancel, so its ECE is usually lower.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "rows_csv": out / "rows.csv",
        "summary_csv": out / "summary.csv",
        "summary_md": out / "summary.md",
    }
    _write_csv(paths["rows_csv"], rows)
    _write_csv(paths["summary_csv"], summary)
    paths["summary_md"].write_text(markdown_summary(rows, summary), encoding="utf-8")
    if summary:
        paths["aee_vs_k"] = out / "aee_vs_k.png"
        _plot_aee_vs_k(summary, paths["aee_vs_k"])
    if rows:
        paths["est_vs_true"] = out / "est_vs_true.png"
        _plot_est_vs_true(rows, paths["est_vs_true"])
    if reliability:
        paths["reliability"] = out / "reliability.png"
        _plot_reliability(reliability, paths["reliability"])
    return paths
