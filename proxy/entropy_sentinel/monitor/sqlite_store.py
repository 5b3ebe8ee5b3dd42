"""The embedded :class:`~entropy_sentinel.monitor.store.RecordStore`: one SQLite file.

The gateway only enqueues (``put_nowait``); a writer thread commits in batches (every
``flush_interval_s`` or ``batch_size`` rows) in WAL mode, so a committed batch survives a kill and
a clean shutdown drains the queue first. A kill (SIGKILL, OOM) loses what was still queued: at most
``flush_interval_s`` of records, or ``batch_size`` rows. ``flushed()`` (what ``store.durability:
strict`` awaits) makes the writer commit what is queued at once, together with whatever else is
already waiting (one commit for many concurrent requests). ``try_label`` is the one synchronous
write: a conditional ``UPDATE`` on its own connection (SQLite serialises it with the writer
thread's batches). ``bucket_sums`` rebuilds the slice counters' sums in four aggregate reads.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from pathlib import Path
from typing import Any

from entropy_sentinel.monitor.store import COLUMNS, BucketSums, ReplayRow, decode_row, encode_value
from entropy_sentinel.monitor.write_queue import STOP, Label, next_batch, request_flush, resolve

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  request_id TEXT PRIMARY KEY,
  ts REAL NOT NULL,
  slice TEXT NOT NULL,
  route TEXT NOT NULL,
  model TEXT,
  status INTEGER,
  scored INTEGER NOT NULL,
  p_correct REAL,
  p_correct_all TEXT,
  features TEXT,
  tokens INTEGER,
  latency_s REAL,
  label INTEGER,
  label_ts REAL,
  prompt TEXT,
  completion TEXT
);
CREATE INDEX IF NOT EXISTS requests_slice_ts ON requests(slice, ts);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
"""
_INSERT = f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
#: labels are set once: never overwritten, by the queue or by feedback (RecordStore.try_label)
_LABEL = "UPDATE requests SET label = ?, label_ts = ? WHERE request_id = ? AND label IS NULL"


def _epoch(t: str) -> str:
    """SQL for the bucket of time ``t`` (NULL before ``:since``): Python's ``int(t // bucket)``. For
    t >= 0 and an integer bucket, truncating the rounded quotient is the floor: t < bucket*k puts
    t / bucket at least ulp(bucket*k) / bucket below k, more than half the spacing of floats there,
    so it never rounds up to k (tests/unit/monitor/test_store_contract.py checks boundary times)."""
    return f"CASE WHEN {t} >= :since THEN CAST({t} / :bucket AS INTEGER) END"


#: RecordStore.bucket_sums, in four reads of one snapshot. Requests with their first choice's score
#: (the p_correct column), the further choices of the rows with several (json_each; most have one),
#: labels at their time, and the order slices were first seen (ts, then request_id: the order a replay
#: of every row admits them). NOT INDEXED: one sequential scan each (for the GROUP BY's order SQLite
#: would otherwise walk the (slice, ts) index and fetch every row by rowid: several times slower).
_REQUEST_SUMS = f"""
SELECT slice, {_epoch("ts")} AS epoch, COUNT(*), COUNT(p_correct), TOTAL(p_correct), TOTAL(p_correct * p_correct)
  FROM requests NOT INDEXED GROUP BY slice, epoch
"""
_MORE_CHOICE_SUMS = f"""
SELECT r.slice, {_epoch("r.ts")} AS epoch, COUNT(*), TOTAL(j.value), TOTAL(j.value * j.value)
  FROM requests AS r NOT INDEXED, json_each(r.p_correct_all) AS j
 WHERE instr(r.p_correct_all, ',') > 0 AND j.key > 0 AND j.type IN ('real', 'integer')
 GROUP BY r.slice, epoch
"""
_LABEL_SUMS = f"""
SELECT slice, {_epoch("MAX(COALESCE(label_ts, ts), ts)")} AS epoch, COUNT(*), TOTAL(label),
       TOTAL(label - p_correct), TOTAL((label - p_correct) * (label - p_correct))
  FROM requests NOT INDEXED WHERE label IS NOT NULL GROUP BY slice, epoch
"""
_FIRST_SEEN = """
SELECT f.slice, f.first_ts,
       (SELECT MIN(request_id) FROM requests AS r WHERE r.slice = f.slice AND r.ts = f.first_ts)
  FROM (SELECT slice, MIN(ts) AS first_ts FROM requests GROUP BY slice) AS f
"""


class SQLiteStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        retention_days: float = 30.0,
    ) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_s = retention_days * 86400.0
        self._queue: queue.Queue[Any] = queue.Queue()
        self.written = 0
        self._label_conn: sqlite3.Connection | None = None
        self._label_lock = threading.Lock()
        with self._connect() as conn:
            conn.executescript(SCHEMA)
        self._thread = threading.Thread(target=self._writer, name="sentinel-store", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.row_factory = sqlite3.Row
        return conn

    # -- request path: never blocks ------------------------------------------------------------
    def enqueue(self, row: dict[str, Any]) -> None:
        self._queue.put_nowait(tuple(encode_value(row.get(c), c) for c in COLUMNS))

    def label(self, request_id: str, label: int, ts: float | None = None) -> None:
        self._queue.put_nowait(Label(request_id, int(label), time.time() if ts is None else ts))

    # -- feedback: synchronous, from a thread --------------------------------------------------
    def try_label(self, request_id: str, label: int, ts: float | None = None) -> bool:
        """Set the label of a committed row that has none; True when this call set it."""
        with self._label_lock:
            if self._label_conn is None:
                self._label_conn = self._connect()
            with self._label_conn as conn:
                cursor = conn.execute(_LABEL, (int(label), time.time() if ts is None else ts, request_id))
            return cursor.rowcount == 1

    # -- writer thread -------------------------------------------------------------------------
    def _writer(self) -> None:
        conn = self._connect()
        last_prune = -math.inf  # prune after the first batch, then hourly (never dependent on the uptime)
        stop = False
        failed = False  # a batch failed since the last flush was answered
        while not stop:
            batch = next_batch(self._queue, self.batch_size, self.flush_interval_s)
            stop = batch.stop
            if batch.items and not self._commit(conn, batch.items):
                failed = True
            for flush in batch.flushes:
                resolve(flush.done, not failed)
            if batch.flushes:
                failed = False
            if self.retention_s > 0 and time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                with conn:
                    conn.execute("DELETE FROM requests WHERE ts < ?", (time.time() - self.retention_s,))
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> bool:
        try:
            with conn:
                for item in batch:
                    if isinstance(item, Label):
                        conn.execute(_LABEL, (item.label, item.ts, item.request_id))
                    else:
                        conn.execute(_INSERT, item)
            self.written += sum(1 for item in batch if not isinstance(item, Label))
            return True
        except sqlite3.Error:
            log.exception("store: a batch of %d writes failed", len(batch))
            return False

    def flushed(self) -> Future[bool]:
        """A Future done once everything queued so far is committed (False if a write failed)."""
        return request_flush(self._queue)

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        wait_for_futures([self.flushed()], timeout=60)

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        """Drain everything queued, then stop the writer (a clean shutdown loses nothing)."""
        self._queue.put(STOP)
        self._thread.join(timeout=60)
        with self._label_lock:
            if self._label_conn is not None:
                self._label_conn.close()
                self._label_conn = None

    # -- reads (from a thread: asyncio.to_thread) ----------------------------------------------
    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        return decode_row(row) if row else None

    def export(self, since: float = 0.0, limit: int = 10_000) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM requests WHERE ts >= ? ORDER BY ts, request_id LIMIT ?", (since, limit)
            ).fetchall()
        return [decode_row(r) for r in rows]

    def replay(self) -> Iterator[ReplayRow]:
        """(ts, slice, every choice's P(correct), first P, label, label_ts) of each retained request."""
        conn = self._connect()
        try:
            for ts, key, p_all, p, label, label_ts in conn.execute(
                "SELECT ts, slice, p_correct_all, p_correct, label, label_ts FROM requests ORDER BY ts, request_id"
            ):
                p_all_decoded = decode_row({"p_correct_all": p_all})["p_correct_all"] or []
                yield ReplayRow(ts, key, p_all_decoded, p, label, label_ts)
        finally:
            conn.close()

    def bucket_sums(self, since: float, bucket_s: int) -> list[BucketSums]:
        """Per slice and bucket, the sums a replay of every row would add (aggregate queries)."""
        params = {"since": since, "bucket": int(bucket_s)}
        conn = self._connect()
        try:
            conn.execute("BEGIN")  # one snapshot for the four reads
            reads = [conn.execute(q, params).fetchall() for q in (_REQUEST_SUMS, _MORE_CHOICE_SUMS, _LABEL_SUMS)]
            first_seen = {key: (ts, request_id) for key, ts, request_id in conn.execute(_FIRST_SEEN)}
            conn.rollback()
        finally:
            conn.close()
        sums: dict[tuple[str, int | None], BucketSums] = {}
        for key, epoch, n, *values in reads[0]:
            sums[key, epoch] = BucketSums(key, epoch, n, *values)
        for key, epoch, n, sum_p, sum_p2 in reads[1]:
            bucket = sums.get((key, epoch)) or BucketSums(key, epoch)
            sums[key, epoch] = bucket._replace(
                scores=bucket.scores + n, sum_p=bucket.sum_p + sum_p, sum_p2=bucket.sum_p2 + sum_p2
            )
        for key, epoch, n, sum_y, sum_r, sum_r2 in reads[2]:
            bucket = sums.get((key, epoch)) or BucketSums(key, epoch)
            sums[key, epoch] = bucket._replace(labels=n, sum_y=sum_y, sum_r=sum_r, sum_r2=sum_r2)
        return sorted(sums.values(), key=lambda b: (*first_seen[b.slice], b.epoch is not None, b.epoch or 0))
