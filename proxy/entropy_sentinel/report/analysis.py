"""The numbers of ``entropy-sentinel report``: slice estimates, time series, ranking, what to label next.

:func:`analyse` replays the records, in time order, into a :class:`SliceRegistry` exactly as the live
proxy counts them (request and score at ``ts``, label at ``label_ts``), so lifetime, 1 h and 24 h
figures are the ones ``/sentinel/v1/slices`` would have shown at the last recorded event. On top of
that it adds a per-slice time series, a worst-first ranking, and the requests worth labelling next.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.report.data import choice_scores, normalize_record
from entropy_sentinel.stats.intervals import Tau, label_free, observed, spread_of

#: time-series bucket widths to choose from (seconds): the smallest giving at most MAX_BUCKETS buckets
BUCKET_WIDTHS = (300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 72
MIN_BUCKETS = 6
MIN_BUCKET_N = 20


def _interval(iv: Any) -> dict[str, float] | None:
    return None if iv is None else iv.as_dict()


def _headline(s: dict[str, Any]) -> dict[str, Any] | None:
    """The slice's best estimate: recalibrated when it has enough labels, else label-free, else observed."""
    if s["recalibrated"] is not None:
        return {"source": "recalibrated", **s["recalibrated"]}
    if s["estimate"] is not None:
        return {"source": "label_free", **s["estimate"]}
    if s["labels"]["n"] > 0:
        return {"source": "observed", **{k: s["labels"][k] for k in ("estimate", "lower", "upper")}}
    return None


def bucket_width(ts: np.ndarray, groups: np.ndarray | None = None) -> int:
    """Time-series bucket width for records at ``ts`` (slice ids ``groups``): the finest width with at
    most MAX_BUCKETS buckets whose typical (slice, bucket) cell holds MIN_BUCKET_N records, never so
    coarse that the span has fewer than MIN_BUCKETS buckets."""
    if len(ts) == 0:
        return 3600
    span = float(ts.max() - ts.min())
    fitting = [w for w in BUCKET_WIDTHS if span / w < MAX_BUCKETS] or [BUCKET_WIDTHS[-1]]
    groups = np.zeros(len(ts), np.int64) if groups is None else groups
    previous = None
    for width in fitting:
        if previous is not None and span / width < MIN_BUCKETS:
            return previous  # coarser would flatten the series
        previous = width
        _, counts = np.unique(np.stack([groups, (ts // width).astype(np.int64)]), axis=1, return_counts=True)
        # the cell size a typical record sits in (count-weighted median over cells)
        order = np.sort(counts)
        weight = np.cumsum(order)
        if order[np.searchsorted(weight, weight[-1] / 2)] >= MIN_BUCKET_N:
            return width
    return fitting[-1]


def _timeseries(recs: list[dict[str, Any]], width: int, level: float, tau: Tau) -> list[dict[str, Any]]:
    """Label-free estimate per time bucket (buckets without traffic are left out)."""
    if not recs:
        return []
    ts = np.fromiter((r["ts"] for r in recs), float, len(recs))
    per = [choice_scores(r) for r in recs]
    y = np.fromiter((np.nan if r["label"] is None else r["label"] for r in recs), float, len(recs))
    keys = (ts // width).astype(np.int64)
    uniq, idx = np.unique(keys, return_inverse=True)
    k = len(uniq)
    has_y = ~np.isnan(y)
    count = np.bincount(idx, minlength=k)
    n = np.bincount(idx, weights=np.fromiter((len(ps) for ps in per), float, len(per)), minlength=k)
    sp = np.bincount(idx, weights=np.fromiter((sum(ps) for ps in per), float, len(per)), minlength=k)
    sp2 = np.bincount(idx, weights=np.fromiter((sum(q * q for q in ps) for ps in per), float, len(per)), minlength=k)
    m = np.bincount(idx, weights=has_y, minlength=k)
    sy = np.bincount(idx, weights=np.where(has_y, y, 0.0), minlength=k)
    out = []
    for i, key in enumerate(uniq):
        est = label_free(int(n[i]), float(sp[i]), float(sp2[i]), level, tau)
        out.append({
            "start": float(key * width), "end": float((key + 1) * width),
            "requests": int(count[i]), "n": int(n[i]), "labels": int(m[i]),
            "observed": float(sy[i] / m[i]) if m[i] else None,
            **(est.as_dict() if est else {"estimate": None, "lower": None, "upper": None}),
        })
    return out


def _reliability(recs: Iterable[dict[str, Any]], bins: int = 10) -> dict[str, Any] | None:
    pairs = [(r["p_correct"], r["label"]) for r in recs if r["p_correct"] is not None and r["label"] is not None]
    if not pairs:
        return None
    from entropy_sentinel.stats.scores import reliability_bins

    rb = reliability_bins([q for q, _ in pairs], [y for _, y in pairs], bins)
    def clean(values: Iterable[float]) -> list[float | None]:
        return [float(v) if math.isfinite(v) else None for v in values]

    return {
        "n": len(pairs),
        "edges": [float(e) for e in rb.edges],
        "count": [int(c) for c in rb.count],
        "mean_p": clean(rb.confidence),
        "accuracy": clean(rb.accuracy),
        "ece": float(rb.ece) if math.isfinite(rb.ece) else None,
        "mean_p_all": float(np.mean([q for q, _ in pairs])),
        "accuracy_all": float(np.mean([y for _, y in pairs])),
    }


def analyse(
    records: list[dict[str, Any]], level: float = 0.9, tau: Tau = 0.0, min_labels: int = 30,
    top_requests: int = 20, acquire_slices: int = 5,
) -> dict[str, Any]:
    """The report's data (what ``report.json`` holds, less the file list)."""
    recs = sorted((normalize_record(r) for r in records), key=lambda r: (r["ts"], r["request_id"]))
    by_slice: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_slice.setdefault(r["slice"], []).append(r)

    # replay as the proxy counted: request + scores at ts, the label when it arrived
    registry = SliceRegistry(max_slices=len(by_slice) + 1, level=level, tau=tau, min_labels=min_labels)
    for r in recs:
        registry.replay(r["slice"], r["ts"], choice_scores(r), r["p_correct"], r["label"], r["label_ts"])
    times = [max(r["ts"], r["label_ts"] or r["ts"]) if r["label"] is not None else r["ts"] for r in recs]
    as_of = max(times) if times else time.time()

    first, last = (recs[0]["ts"], recs[-1]["ts"]) if recs else (as_of, as_of)
    scored_recs = [r for r in recs if choice_scores(r)] or recs
    slice_ids = {key: i for i, key in enumerate(by_slice)}
    width = bucket_width(
        np.fromiter((r["ts"] for r in scored_recs), float, len(scored_recs)),
        np.fromiter((slice_ids[r["slice"]] for r in scored_recs), np.int64, len(scored_recs)),
    )
    slices = []
    for key, srecs in by_slice.items():
        try:
            summary = registry.summary(key, as_of)
        except ValueError:  # not k=v pairs (the proxy never writes such a key): same numbers, no tags
            alone = SliceRegistry(level=level, tau=tau, min_labels=min_labels)
            alone.counters[""] = registry.counters[key]
            summary = {**alone.summary("", as_of), "slice": key, "tags": {}}
        life = summary["windows"]["lifetime"]
        entry = {
            "slice": key,
            "tags": summary["tags"],
            "requests": life["requests"],
            "n": life["n_scored"],  # scored choices (a request with n > 1 choices counts n times)
            "errors": sum(1 for r in srecs if r["status"] is None or r["status"] >= 400),
            "estimate": None if life["estimate"] is None else {k: life[k] for k in ("estimate", "lower", "upper")},
            "windows": summary["windows"],
            "labels": summary["labels"],
            "recalibrated": summary["recalibrated"],
        }
        entry["headline"] = _headline(entry)
        entry["timeseries"] = _timeseries(srecs, width, level, tau)
        slices.append(entry)
    # worst first by the headline estimate; slices with no estimate at all last
    slices.sort(key=lambda s: (s["headline"] is None, s["headline"]["estimate"] if s["headline"] else 0.0, s["slice"]))
    for rank, s in enumerate(slices, 1):
        s["rank"] = rank

    acquire = []
    candidates = [s for s in slices if s["headline"] is not None]
    candidates.sort(key=lambda s: (s["headline"]["upper"], s["headline"]["estimate"], s["slice"]))
    for s in candidates[:acquire_slices]:
        unlabelled = [r for r in by_slice[s["slice"]] if r["p_correct"] is not None and r["label"] is None]
        unlabelled.sort(key=lambda r: (r["p_correct"], r["ts"], r["request_id"]))
        picks = []
        for r in unlabelled[:top_requests]:
            pick = {"request_id": r["request_id"], "ts": r["ts"], "p_correct": r["p_correct"]}
            for col in ("prompt", "completion"):
                if r[col] is not None:
                    pick[col] = r[col]
            picks.append(pick)
        acquire.append({
            "slice": s["slice"], "rank": s["rank"], "headline": s["headline"], "scored": s["n"],
            "unlabelled_scored": len(unlabelled), "requests": picks,
        })

    scored = [q for r in recs for q in choice_scores(r)]
    labels = [r["label"] for r in recs if r["label"] is not None]
    sp = float(sum(scored))
    total_est = label_free(len(scored), sp, float(sum(q * q for q in scored)), level, tau)
    total_obs = observed(len(labels), float(sum(labels)), level)
    return {
        "generated_at": time.time(),
        "as_of": as_of,
        "level": level,
        "tau": spread_of(tau).tau0,
        "tau_shape": spread_of(tau).shape,
        "min_labels": min_labels,
        "range": {"first_ts": first if recs else None, "last_ts": last if recs else None},
        "bucket_s": width,
        "totals": {
            "requests": len(recs),
            "scored": len(scored),
            "labelled": len(labels),
            "slices": len(slices),
            "estimate": _interval(total_est),
            "observed": _interval(total_obs),
            "overall_timeseries": _timeseries(recs, width, level, tau),
        },
        "slices": slices,
        "acquire_next": acquire,
        "reliability": _reliability(recs),
    }
