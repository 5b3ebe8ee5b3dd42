"""``entropy-sentinel report``: slice accuracy estimates from stored request records.

Records come from the proxy's SQLite store (:func:`records_from_db`) or from a running proxy's
``GET /sentinel/v1/export`` (:func:`records_from_proxy`); both give the same dicts, one per request,
with the ``requests`` table's columns (``features`` / ``p_correct_all`` parsed).

:func:`build_report` replays the records, in time order, into a :class:`SliceRegistry` exactly as
the live proxy counts them (request and score at ``ts``, label at ``label_ts``), so lifetime, 1 h and
24 h figures are the ones ``/sentinel/v1/slices`` would have shown at the last recorded event. On top
of that it adds a per-slice time series, a worst-first ranking, and the requests worth labelling
next. Plots and the HTML page are drawn by :mod:`entropy_sentinel.monitor.report_html`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from entropy_sentinel.monitor.intervals import label_free, observed, transfer_rms
from entropy_sentinel.monitor.slices import SliceRegistry

COLUMNS = (
    "request_id", "ts", "slice", "route", "model", "status", "scored", "p_correct", "p_correct_all",
    "features", "tokens", "latency_s", "label", "label_ts", "prompt", "completion",
)
REQUIRED_COLUMNS = ("request_id", "ts", "slice", "scored", "p_correct", "label")
#: time-series bucket widths to choose from (seconds): the smallest giving at most MAX_BUCKETS buckets
BUCKET_WIDTHS = (300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 72
MIN_BUCKETS = 6
MIN_BUCKET_N = 20
EXPORT_PAGE = 5000
ACQUIRE_CSV_FIELDS = (
    "slice_rank", "slice", "slice_estimate", "slice_lower", "slice_upper", "estimate_source",
    "request_id", "ts", "time_utc", "p_correct", "prompt", "completion",
)


class ReportError(RuntimeError):
    """A report input that cannot be read; the message says what to do about it."""


# ---------------------------------------------------------------------------------------------- input


def parse_since(value: str | float | None, now: float | None = None) -> float | None:
    """``--since``: unix seconds (``1732200000``), an ISO time (``2024-11-21T09:00``, UTC unless it
    carries an offset) or an age (``90m``, ``24h``, ``7d``, ``2w``, ``30s``)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    text = value.strip()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text, re.IGNORECASE)
    if age:
        scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[age.group(2).lower()]
        return (time.time() if now is None else now) - float(age.group(1)) * scale
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"--since {text!r}: give unix seconds, an ISO time (2024-11-21T09:00) or an age (90m, 24h, 7d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _json_field(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def normalize_record(raw: dict[str, Any]) -> dict[str, Any]:
    """One record with every column present and typed; JSON columns parsed."""
    rec = {col: raw.get(col) for col in COLUMNS}
    rec["request_id"] = str(rec["request_id"])
    rec["ts"] = _float(rec["ts"]) or 0.0
    rec["slice"] = "" if rec["slice"] is None else str(rec["slice"])
    rec["scored"] = bool(rec["scored"])
    p = _float(rec["p_correct"])
    rec["p_correct"] = p if p is not None and 0.0 <= p <= 1.0 else None
    rec["p_correct_all"] = _json_field(rec["p_correct_all"])
    rec["features"] = _json_field(rec["features"])
    label = rec["label"]
    rec["label"] = None if label is None or isinstance(label, str) and not label.strip() else int(bool(int(label)))
    rec["label_ts"] = _float(rec["label_ts"])
    rec["status"] = None if rec["status"] is None else int(rec["status"])
    for col in ("prompt", "completion"):  # TEXT in the store; a JSON value from elsewhere becomes its text
        if rec[col] is not None and not isinstance(rec[col], str):
            rec[col] = json.dumps(rec[col], ensure_ascii=False)
    return rec


def choice_scores(rec: dict[str, Any]) -> list[float]:
    """Every choice's P(correct) (``p_correct_all``), else ``[p_correct]``: what the proxy counts, one
    score per choice, in ``sentinel_scored_total`` and its slice counters."""
    every = rec.get("p_correct_all")
    if isinstance(every, list) and every:
        ps = [q for q in (_float(v) for v in every) if q is not None and 0.0 <= q <= 1.0]
        if ps:
            return ps
    return [] if rec.get("p_correct") is None else [rec["p_correct"]]


def records_from_db(path: str | Path, since: str | float | None = None) -> list[dict[str, Any]]:
    """Every record of the proxy's SQLite store with ``ts >= since``, oldest first (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"no store at {path}: give the SQLite file the proxy writes (its store path)")
    since_ts = parse_since(since)
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise ReportError(f"cannot open {path} read-only: {exc}") from None
    try:
        try:
            present = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        except sqlite3.DatabaseError as exc:
            raise ReportError(f"{path} is not a readable SQLite database: {exc}") from None
        if not present:
            raise ReportError(f"{path} has no 'requests' table: is it an Entropy Sentinel store?")
        missing = [c for c in REQUIRED_COLUMNS if c not in present]
        if missing:
            raise ReportError(f"{path}: table 'requests' lacks column(s) {', '.join(missing)}")
        cols = [c for c in COLUMNS if c in present]
        sql = f"SELECT {', '.join(cols)} FROM requests"
        params: tuple = ()
        if since_ts is not None:
            sql += " WHERE ts >= ?"
            params = (since_ts,)
        sql += " ORDER BY ts, request_id"
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise ReportError(f"reading {path}: {exc}") from None
    finally:
        conn.close()
    return [normalize_record(dict(zip(cols, row, strict=True))) for row in rows]


def _get_json(url: str, token: str | None, timeout: float) -> Any:
    headers = {"Accept": "application/json", "User-Agent": "entropy-sentinel-report"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = "pass the proxy's admin token (--token)" if not token else "the admin token was refused"
            raise ReportError(f"{url}: HTTP {exc.code}: {hint}") from None
        if exc.code == 404:
            raise ReportError(f"{url}: HTTP 404: is this an Entropy Sentinel proxy (base URL, not .../v1)?") from None
        raise ReportError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ReportError(f"cannot reach the proxy at {url}: {exc.reason}") from None
    except TimeoutError:
        raise ReportError(f"{url}: no answer within {timeout:.0f} s") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ReportError(f"{url}: the answer is not JSON (is this an Entropy Sentinel proxy?)") from None


def _base(url: str) -> str:
    if not re.match(r"^https?://", url):
        raise ReportError(f"--proxy {url!r}: give the proxy's base URL, e.g. http://127.0.0.1:8080")
    return url.rstrip("/")


def records_from_proxy(
    url: str, token: str | None = None, since: str | float | None = None, *, page: int = EXPORT_PAGE,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Every record a running proxy exports with ``ts >= since``, paging on ``since`` (oldest first).

    Pages are asked with ``since`` = the newest ``ts`` seen so far; ids already seen are dropped, and
    paging stops at the first page that brings nothing new.
    """
    base = _base(url)
    since_ts = parse_since(since)
    cursor = since_ts if since_ts is not None else 0.0
    seen: dict[str, dict[str, Any]] = {}
    while True:
        query = urllib.parse.urlencode({"since": repr(cursor), "limit": page})
        data = _get_json(f"{base}/sentinel/v1/export?{query}", token, timeout)
        batch = data.get("records") if isinstance(data, dict) else None
        if not isinstance(batch, list):
            raise ReportError(f"{base}/sentinel/v1/export: expected {{\"records\": [...]}}")
        fresh = 0
        for raw in batch:
            if not isinstance(raw, dict) or raw.get("request_id") is None:
                continue
            rec = normalize_record(raw)
            if rec["request_id"] not in seen and (since_ts is None or rec["ts"] >= since_ts):
                seen[rec["request_id"]] = rec
                fresh += 1
        if not fresh or not batch:
            break
        newest = max(_float(r.get("ts")) or 0.0 for r in batch if isinstance(r, dict))
        if newest <= cursor and len(batch) >= page:
            # a full page of one timestamp: the export cannot page past it; take what came
            break
        cursor = max(cursor, newest)
    return sorted(seen.values(), key=lambda r: (r["ts"], r["request_id"]))


def proxy_settings(url: str, token: str | None = None, timeout: float = 30.0) -> dict[str, float]:
    """``level`` and ``tau`` the proxy itself uses (from ``/sentinel/v1/slices``)."""
    data = _get_json(f"{_base(url)}/sentinel/v1/slices", token, timeout)
    if not isinstance(data, dict):
        raise ReportError(f"{url}/sentinel/v1/slices: unexpected answer")
    return {k: float(data[k]) for k in ("level", "tau") if _float(data.get(k)) is not None}


def tau_from_artifact(path: str | Path) -> float:
    """τ (RMS leave-one-benchmark-out error) of an estimator artifact, as the proxy derives it."""
    from entropy_sentinel.estimator.artifact import load_artifact

    _, metadata = load_artifact(path)
    return transfer_rms(metadata.get("validation"))


# ---------------------------------------------------------------------------------------------- analysis


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


def _timeseries(recs: list[dict[str, Any]], width: int, level: float, tau: float) -> list[dict[str, Any]]:
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
    from entropy_sentinel.estimator.metrics import reliability_bins

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
    records: list[dict[str, Any]], level: float = 0.9, tau: float = 0.0, min_labels: int = 30,
    top_requests: int = 20, acquire_slices: int = 5,
) -> dict[str, Any]:
    """The report's data (what ``report.json`` holds, less the file list)."""
    recs = sorted((normalize_record(r) for r in records), key=lambda r: (r["ts"], r["request_id"]))
    by_slice: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_slice.setdefault(r["slice"], []).append(r)

    # replay in event-time order, as the proxy saw it: request + score at ts, label at label_ts
    registry = SliceRegistry(max_slices=len(by_slice) + 1, level=level, tau=tau, min_labels=min_labels)
    events: list[tuple[float, int, dict[str, Any]]] = [(r["ts"], 0, r) for r in recs]
    events += [(max(r["label_ts"] or r["ts"], r["ts"]), 1, r) for r in recs if r["label"] is not None]
    events.sort(key=lambda e: (e[0], e[1]))
    for when, kind, r in events:
        if kind == 0:
            registry.record_request(r["slice"], when)
            for q in choice_scores(r):
                registry.record_score(r["slice"], q, when)
        else:
            registry.record_label(r["slice"], r["label"], r["p_correct"], when)
    as_of = events[-1][0] if events else time.time()

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
        "tau": tau,
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


# ---------------------------------------------------------------------------------------------- output


def _csv_safe(value: Any) -> Any:
    """Text cells that a spreadsheet would run as a formula get a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_acquire_csv(acquire: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8", errors="replace") as fh:
        writer = csv.DictWriter(fh, fieldnames=ACQUIRE_CSV_FIELDS)
        writer.writeheader()
        for entry in acquire:
            h = entry["headline"]
            for r in entry["requests"]:
                writer.writerow({
                    "slice_rank": entry["rank"], "slice": _csv_safe(entry["slice"]),
                    "slice_estimate": h["estimate"], "slice_lower": h["lower"], "slice_upper": h["upper"],
                    "estimate_source": h["source"], "request_id": _csv_safe(r["request_id"]), "ts": r["ts"],
                    "time_utc": datetime.fromtimestamp(r["ts"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    "p_correct": r["p_correct"],
                    "prompt": _csv_safe(r.get("prompt", "")), "completion": _csv_safe(r.get("completion", "")),
                })
    return path


def build_report(
    records: list[dict[str, Any]], out_dir: str | Path, level: float = 0.9, tau: float = 0.0,
    min_labels: int = 30, top_requests: int = 20, *, acquire_slices: int = 5, source: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``acquire_next.csv``, the PNGs that have data to show (``slices.png``,
    ``timeseries.png``, ``reliability.png`` when labelled scored responses exist) and ``report.html``.
    Returns the written files by name (``"json"``, ``"csv"``, ``"slices"``, ``"timeseries"``,
    ``"reliability"``, ``"html"``)."""
    from entropy_sentinel.monitor.report_html import render_html, render_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = analyse(records, level, tau, min_labels, top_requests, acquire_slices)
    data["source"] = source
    files: dict[str, Path] = {}
    pngs = render_plots(data)
    for name, png in pngs.items():
        files[name] = out / f"{name}.png"
        files[name].write_bytes(png)
    files["csv"] = write_acquire_csv(data["acquire_next"], out / "acquire_next.csv")
    files["html"] = out / "report.html"
    files["json"] = out / "report.json"
    data["files"] = {name: path.name for name, path in files.items()}
    files["html"].write_text(render_html(data, pngs), encoding="utf-8", errors="replace")
    files["json"].write_text(
        json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False), encoding="utf-8", errors="replace"
    )
    return files
