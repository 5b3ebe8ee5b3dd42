"""Plots (PNG bytes) of ``entropy-sentinel report``.

Figures are ``matplotlib.figure.Figure`` objects on the Agg canvas, never pyplot global state.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np

MAX_PLOT_SLICES = 40
TIMESERIES_SLICES = 5

BLUE, GREEN, ORANGE, GREY = "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f"
SERIES_COLORS = ("#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def slice_name(key: str) -> str:
    return key if key else "(untagged)"


def _plain(text: str, limit: int = 48) -> str:
    """A slice key as matplotlib text: no mathtext, bounded length."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()

def plot_slices(data: dict[str, Any]) -> bytes | None:
    """Estimates ranked worst-first (top row = worst) with interval bars; observed where labelled."""
    from matplotlib.figure import Figure

    slices = [s for s in data["slices"] if s["headline"] is not None][:MAX_PLOT_SLICES]
    if not slices:
        return None
    rows = len(slices)
    fig = Figure(figsize=(8.5, 1.6 + 0.34 * rows), dpi=110)
    ax = fig.add_subplot()
    y = np.arange(rows)[::-1].astype(float)  # rank 1 at the top
    seen: set[str] = set()

    def mark(kind: str, iv: dict[str, float] | None, yy: float, dy: float, **style: Any) -> None:
        if iv is None or iv.get("estimate") is None:
            return
        lo, hi = iv["estimate"] - iv["lower"], iv["upper"] - iv["estimate"]
        ax.errorbar(iv["estimate"], yy + dy, xerr=[[lo], [hi]], capsize=3, lw=1.4,
                    label=None if kind in seen else kind, **style)
        seen.add(kind)

    level = round(100 * data["level"])
    for s, yy in zip(slices, y, strict=True):
        mark(f"label-free estimate ({level}% interval)", s["estimate"], yy, 0.0, fmt="o", color=BLUE, ms=6)
        labels = s["labels"]
        if labels["n"] > 0:
            mark("observed accuracy (labelled, Wilson)", labels, yy, -0.22, fmt="D", color=ORANGE, ms=5,
                 alpha=0.85)
        mark("recalibrated (labels + scores)", s["recalibrated"], yy, 0.22, fmt="s", color=GREEN, ms=5)
    ax.set_yticks(y)
    ax.set_yticklabels([f"{s['rank']}. {_plain(slice_name(s['slice']))}" for s in slices], fontsize="small")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, rows - 0.3)
    ax.set_xlabel("accuracy")
    shown = "" if len(slices) == len([s for s in data["slices"] if s["headline"]]) else f" ({rows} worst shown)"
    ax.set_title(f"Slice accuracy, worst first{shown}", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: ("label-free" not in names[i], "observed" not in names[i]))
    ax.legend([handles[i] for i in order], [names[i] for i in order], fontsize="x-small", loc="lower center",
              bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.set_title(ax.get_title(), fontsize="medium", pad=22)
    fig.tight_layout()
    return _png(fig)


def _series(points: list[dict[str, Any]], width: float) -> tuple[list[datetime], np.ndarray, np.ndarray, np.ndarray]:
    """Bucket midpoints and estimate / lower / upper, with a NaN where buckets are missing (a gap)."""
    xs: list[datetime] = []
    est, lo, hi = [], [], []
    prev_end = None
    for p in points:
        if p["estimate"] is None:
            continue
        if prev_end is not None and p["start"] > prev_end + 1e-6:
            xs.append(_utc((prev_end + p["start"]) / 2))
            est.append(np.nan), lo.append(np.nan), hi.append(np.nan)
        xs.append(_utc(p["start"] + width / 2))
        est.append(p["estimate"]), lo.append(p["lower"]), hi.append(p["upper"])
        prev_end = p["end"]
    return xs, np.array(est, float), np.array(lo, float), np.array(hi, float)


def plot_timeseries(data: dict[str, Any]) -> bytes | None:
    """Label-free estimate per time bucket with its band: all traffic, then one panel per slice for the
    worst-ranked few (all traffic repeated dashed in each, for reference)."""
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure

    width = data["bucket_s"]
    overall = data["totals"]["overall_timeseries"]
    if not any(p["estimate"] is not None for p in overall):
        return None
    picks = [s for s in data["slices"] if any(p["estimate"] is not None for p in s["timeseries"])]
    picks = picks[:TIMESERIES_SLICES] if len(picks) > 1 else []
    panels = [("all traffic", overall, GREY)] + [
        (f"{s['rank']}. {_plain(slice_name(s['slice']), 44)}", s["timeseries"], c)
        for s, c in zip(picks, SERIES_COLORS, strict=False)
    ]
    cols = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5.2 * cols, 0.6 + 2.4 * rows), dpi=110)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    ref = _series(overall, width)
    locator = mdates.AutoDateLocator(tz=UTC, maxticks=6)
    for ax, (title, points, color) in zip(axes, panels, strict=False):
        xs, est, lo, hi = _series(points, width)
        if points is not overall:
            ax.plot(ref[0], ref[1], color=GREY, lw=1, ls="--")
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
        ax.plot(xs, est, color=color, lw=1.6, marker="o", ms=3)
        ax.set_title(title, fontsize="small", loc="left")
        ax.set_ylim(0, 1)
        ax.set_xlim(_utc(overall[0]["start"]), _utc(overall[-1]["end"]))  # never a zero-width range
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[len(panels) - cols: len(panels)]:
        ax.tick_params(labelbottom=True)
    span = f"{width // 3600} h" if width >= 3600 else f"{width // 60} min"
    fig.suptitle(f"Label-free estimate per {span} bucket, {round(100 * data['level'])}% band "
                 "(dashed: all traffic), time UTC", fontsize="medium")
    fig.supylabel("estimated accuracy", fontsize="small")
    fig.tight_layout()
    return _png(fig)


def plot_reliability(data: dict[str, Any]) -> bytes | None:
    """Binned predicted P(correct) against the observed accuracy of labelled responses."""
    from matplotlib.figure import Figure

    rel = data.get("reliability")
    if not rel:
        return None
    fig = Figure(figsize=(5.5, 6), dpi=110)
    gs = fig.add_gridspec(2, 1, height_ratios=(3.2, 1), hspace=0.08)
    ax = fig.add_subplot(gs[0])
    hist = fig.add_subplot(gs[1], sharex=ax)
    count = np.array(rel["count"], float)
    used = count > 0
    conf = np.array([np.nan if v is None else v for v in rel["mean_p"]], float)
    acc = np.array([np.nan if v is None else v for v in rel["accuracy"]], float)
    sizes = 15 + 120 * count[used] / max(count.max(), 1.0)
    ax.plot([0, 1], [0, 1], color=GREY, lw=1, ls="--", label="perfect calibration")
    ax.plot(conf[used], acc[used], color=BLUE, lw=1.2)
    ax.scatter(conf[used], acc[used], s=sizes, color=BLUE, zorder=3, label="bins (size = responses)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed accuracy")
    ece = rel["ece"]
    ax.set_title(f"Reliability on {rel['n']} labelled responses" + ("" if ece is None else f" — ECE {ece:.3f}"),
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left")
    ax.tick_params(labelbottom=False)
    edges = np.array(rel["edges"], float)
    hist.bar(edges[:-1], count, width=np.diff(edges), align="edge", color=BLUE, alpha=0.5, edgecolor="white")
    hist.set_xlabel("predicted P(correct)")
    hist.set_ylabel("responses")
    fig.subplots_adjust(left=0.14, right=0.96, top=0.93, bottom=0.09)
    return _png(fig)


def render_plots(data: dict[str, Any]) -> dict[str, bytes]:
    """``{"slices": png, "timeseries": png, "reliability": png}`` for those with data to show."""
    out = {}
    for name, fn in (("slices", plot_slices), ("timeseries", plot_timeseries), ("reliability", plot_reliability)):
        png = fn(data)
        if png is not None:
            out[name] = png
    return out
