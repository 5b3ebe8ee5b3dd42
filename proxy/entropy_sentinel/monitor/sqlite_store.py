"""The embedded :class:`~entropy_sentinel.monitor.store.RecordStore`: one SQLite file.

The gateway only enqueues (``put_nowait``); a writer thread commits in batches (every
``flush_interval_s`` or ``batch_size`` rows) in WAL mode, so a committed batch survives a kill and
a clean shutdown drains the queue first. ``try_label`` is the one synchronous write: a conditional
``UPDATE`` on its own connection (SQLite serialises it with the writer thread's batches).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from entropy_sentinel.monitor.store import COLUMNS, ReplayRow, decode_row, encode_value

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


@dataclass(frozen=True, slots=True)
class _Label:
    request_id: str
    label: int
    ts: float


_STOP = object()


@dataclass(frozen=True, slots=True)
class _Flush:
    done: threading.Event


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
        self._queue.put_nowait(_Label(request_id, int(label), time.time() if ts is None else ts))

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
        last_prune = 0.0
        stop = False
        flushes: list[_Flush] = []
        while not stop:
            batch: list[Any] = []
            deadline = time.monotonic() + self.flush_interval_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, _Flush):
                    flushes.append(item)
                    break
                batch.append(item)
            if batch:
                self._commit(conn, batch)
            for flush in flushes:
                flush.done.set()
            flushes.clear()
            if self.retention_s > 0 and time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                with conn:
                    conn.execute("DELETE FROM requests WHERE ts < ?", (time.time() - self.retention_s,))
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        try:
            with conn:
                for item in batch:
                    if isinstance(item, _Label):
                        conn.execute(_LABEL, (item.label, item.ts, item.request_id))
                    else:
                        conn.execute(_INSERT, item)
            self.written += sum(1 for item in batch if not isinstance(item, _Label))
        except sqlite3.Error:
            log.exception("store: a batch of %d writes failed", len(batch))

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        done = threading.Event()
        self._queue.put(_Flush(done))
        done.wait(timeout=60)

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        """Drain everything queued, then stop the writer (a clean shutdown loses nothing)."""
        self._queue.put(_STOP)
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

