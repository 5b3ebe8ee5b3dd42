"""Request records for ``entropy-sentinel report``: read from the store or a running proxy.

Records come from the proxy's store (:func:`records_from_db`: its SQLite file, or the PostgreSQL
database replicas share, by its ``postgresql://`` URL) or from a running proxy's
``GET /sentinel/v1/export`` (:func:`records_from_proxy`); all give the same dicts, one per request,
with the ``requests`` table's columns (``features`` / ``p_correct_all`` parsed). The proxy's own
settings (:func:`proxy_settings`) and an artifact's τ (:func:`tau_from_artifact`) come from here too.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from entropy_sentinel.monitor.store import COLUMNS
from entropy_sentinel.stats.intervals import TAU_SHAPES, TransferSpread, transfer_tau

REQUIRED_COLUMNS = ("request_id", "ts", "slice", "scored", "p_correct", "label")
EXPORT_PAGE = 5000


class ReportError(RuntimeError):
    """A report input that cannot be read; the message says what to do about it."""


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


#: ``--db`` values that name a PostgreSQL database rather than a SQLite file
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(POSTGRES_SCHEMES)


def describe_source(source: str | None) -> str | None:
    """``--db``/``--proxy`` as the report may show it: a database URL with its password masked."""
    if source is None or not is_postgres_url(source):
        return source
    from entropy_sentinel.monitor.postgres_store import mask_url  # psycopg only when a URL is given

    return mask_url(source)


def records_from_postgres(url: str, since: str | float | None = None) -> list[dict[str, Any]]:
    """Every record of a shared PostgreSQL store (every replica's) with ``ts >= since``, oldest first,
    read in one read-only transaction. The password never appears in an error."""
    from entropy_sentinel.optional import MissingExtra, require

    try:
        require("postgres", what="report --db postgresql://...")
    except MissingExtra as exc:
        raise ReportError(str(exc)) from None
    from entropy_sentinel.monitor.postgres_store import StoreError, read_rows

    try:
        rows = read_rows(url, parse_since(since))
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    return [normalize_record(row) for row in rows]


def records_from_db(path: str | Path, since: str | float | None = None) -> list[dict[str, Any]]:
    """Every record of the proxy's store with ``ts >= since``, oldest first (read-only): its SQLite
    file, or a ``postgresql://`` URL (:func:`records_from_postgres`)."""
    if is_postgres_url(path):
        return records_from_postgres(str(path), since)
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


def proxy_settings(url: str, token: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """``level`` and ``tau`` (a :class:`TransferSpread`) the proxy itself uses (``/sentinel/v1/slices``)."""
    data = _get_json(f"{_base(url)}/sentinel/v1/slices", token, timeout)
    if not isinstance(data, dict):
        raise ReportError(f"{url}/sentinel/v1/slices: unexpected answer")
    out: dict[str, Any] = {}
    if _float(data.get("level")) is not None:
        out["level"] = float(data["level"])
    if _float(data.get("tau")) is not None:
        shape = data.get("tau_shape") if data.get("tau_shape") in TAU_SHAPES else "constant"
        out["tau"] = TransferSpread(float(data["tau"]), shape)
    return out


def tau_from_artifact(path: str | Path, level: float = 0.9) -> TransferSpread:
    """τ (predictive spread of the leave-one-benchmark-out errors) of an artifact, as the proxy derives it."""
    from entropy_sentinel.estimator.artifact import load_artifact

    _, metadata = load_artifact(path)
    return transfer_tau(metadata.get("validation"), level)
