"""``entropy-sentinel report``: slice accuracy estimates from stored request records.

Records come from the proxy's store (:func:`records_from_db`: the SQLite file, or a shared
PostgreSQL database by its ``postgresql://`` URL) or from a running proxy's
``GET /sentinel/v1/export`` (:func:`records_from_proxy`); both give the same dicts, one per request,
with the ``requests`` table's columns (``features`` / ``p_correct_all`` parsed). Reading them lives in
:mod:`entropy_sentinel.report.data`.

:func:`build_report` replays the records, in time order, into a :class:`SliceRegistry` exactly as
the live proxy counts them (request and score at ``ts``, label at ``label_ts``), so lifetime, 1 h and
24 h figures are the ones ``/sentinel/v1/slices`` would have shown at the last recorded event. On top
of that it adds a per-slice time series, a worst-first ranking, and the requests worth labelling
next (:mod:`entropy_sentinel.report.analysis`). Plots are drawn by
:mod:`entropy_sentinel.report.plots`, the HTML page by :mod:`entropy_sentinel.report.html`.
This module writes the files and re-exports the names of the modules above.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from entropy_sentinel.report.analysis import (
    BUCKET_WIDTHS,
    MAX_BUCKETS,
    MIN_BUCKET_N,
    MIN_BUCKETS,
    analyse,
    bucket_width,
)
from entropy_sentinel.report.data import (
    COLUMNS,
    EXPORT_PAGE,
    REQUIRED_COLUMNS,
    ReportError,
    choice_scores,
    describe_source,
    normalize_record,
    parse_since,
    proxy_settings,
    records_from_db,
    records_from_proxy,
    tau_from_artifact,
)
from entropy_sentinel.stats.intervals import Tau

__all__ = [
    "ACQUIRE_CSV_FIELDS",
    "BUCKET_WIDTHS",
    "COLUMNS",
    "EXPORT_PAGE",
    "MAX_BUCKETS",
    "MIN_BUCKETS",
    "MIN_BUCKET_N",
    "REQUIRED_COLUMNS",
    "ReportError",
    "analyse",
    "bucket_width",
    "build_report",
    "choice_scores",
    "describe_source",
    "normalize_record",
    "parse_since",
    "proxy_settings",
    "records_from_db",
    "records_from_proxy",
    "tau_from_artifact",
    "write_acquire_csv",
]

ACQUIRE_CSV_FIELDS = (
    "slice_rank", "slice", "slice_estimate", "slice_lower", "slice_upper", "estimate_source",
    "request_id", "ts", "time_utc", "p_correct", "prompt", "completion",
)


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
    records: list[dict[str, Any]], out_dir: str | Path, level: float = 0.9, tau: Tau = 0.0,
    min_labels: int = 30, top_requests: int = 20, *, acquire_slices: int = 5, source: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``acquire_next.csv``, the PNGs that have data to show (``slices.png``,
    ``timeseries.png``, ``reliability.png`` when labelled scored responses exist) and ``report.html``.
    Returns the written files by name (``"json"``, ``"csv"``, ``"slices"``, ``"timeseries"``,
    ``"reliability"``, ``"html"``)."""
    from entropy_sentinel.report.html import render_html
    from entropy_sentinel.report.plots import render_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = analyse(records, level, tau, min_labels, top_requests, acquire_slices)
    data["source"] = describe_source(source)  # a database URL's password never reaches the files
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
