"""The shared :class:`~entropy_sentinel.monitor.store.RecordStore`: one PostgreSQL database for every replica.

``store.url: postgresql://...`` selects it (:mod:`~entropy_sentinel.monitor.store_factory`). It
behaves like :class:`~entropy_sentinel.monitor.sqlite_store.SQLiteStore`: the gateway only
enqueues, a writer thread commits in batches (every ``flush_interval_s`` or ``batch_size`` rows) on
its own connection, in one transaction per batch, and a clean shutdown drains the queue first.
When the server goes away the writer keeps the batch and retries it on a new connection (with
backoff) instead of dropping it. Reads and :meth:`PostgresStore.try_label` use a small connection
pool (``psycopg_pool``), from worker threads.

Several replicas share the tables. A label is taken once by the database itself: ``UPDATE ... WHERE
request_id = %s AND label IS NULL`` and its row count (PostgreSQL re-checks the condition on the row
a concurrent update just committed, so of any number of replicas exactly one gets a row). A row
enqueued again replaces the old one but never clears a label another replica already set. Another
replica finds a request once this one's writer committed it: within ``flush_interval_s``.

The schema is created or migrated at start-up under an advisory lock (replicas starting together
take turns): ``sentinel_schema_version`` records the migrations applied; a database migrated by a
newer release is refused. Values are stored as SQLite stores them (JSON columns as text, 0/1
flags); text loses only NUL characters, which PostgreSQL cannot hold (they become U+FFFD).

The URL's password never reaches a log line or :meth:`describe` (:func:`mask_url`).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from entropy_sentinel.monitor.store import COLUMNS, BucketSums, ReplayRow, decode_row, encode_value
from entropy_sentinel.monitor.write_queue import STOP, Label, next_batch, request_flush, resolve

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "StoreError", "mask_url", "read_rows"]

log = logging.getLogger(__name__)

TABLE = "sentinel_requests"
VERSION_TABLE = "sentinel_schema_version"
#: (version, its statements), applied in order, each once per database
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
              request_id TEXT PRIMARY KEY,
              ts DOUBLE PRECISION NOT NULL,
              slice TEXT NOT NULL,
              route TEXT NOT NULL,
              model TEXT,
              status INTEGER,
              scored INTEGER NOT NULL,
              p_correct DOUBLE PRECISION,
              p_correct_all TEXT,
              features TEXT,
              tokens INTEGER,
              latency_s DOUBLE PRECISION,
              label INTEGER,
              label_ts DOUBLE PRECISION,
              prompt TEXT,
              completion TEXT
            )""",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_slice_ts ON {TABLE} (slice, ts)",
            f"CREATE INDEX IF NOT EXISTS {TABLE}_ts ON {TABLE} (ts, request_id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: pg_advisory_xact_lock key serialising start-up migrations across replicas
_MIGRATION_LOCK = 0x5E171E1_0001

_SELECT = ", ".join(COLUMNS)
_INSERT = (
    f"INSERT INTO {TABLE} ({_SELECT}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
    "ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = COALESCE({TABLE}.{c}, EXCLUDED.{c})" if c in ("label", "label_ts") else f"{c} = EXCLUDED.{c}"
        for c in COLUMNS
        if c != "request_id"
    )
)
#: labels are set once: never overwritten, by the queue or by feedback from any replica
_LABEL = f"UPDATE {TABLE} SET label = %s, label_ts = %s WHERE request_id = %s AND label IS NULL"
#: RecordStore.bucket_sums in one statement (one snapshot, every replica's rows): each request, each
#: choice's score and each label as an event at its time, summed per slice and bucket; the bucket is
#: floor(t / bucket_s) exactly as Python computes it (a rounded quotient corrected by one either
#: way); slices ordered by their first request (ts, then request_id), as a replay of every row admits them
_BUCKET_SUMS = f"""
WITH events(slice, t, requests, scores, sum_p, sum_p2, labels, sum_y, sum_r, sum_r2) AS (
  SELECT slice, ts, 1, 0, 0.0::float8, 0.0::float8, 0, 0, 0.0::float8, 0.0::float8 FROM {TABLE}
  UNION ALL
  SELECT r.slice, r.ts, 0, 1, (j.value #>> '{{}}')::float8, ((j.value #>> '{{}}')::float8) ^ 2, 0, 0, 0.0, 0.0
    FROM {TABLE} AS r, jsonb_array_elements(r.p_correct_all::jsonb) AS j
    WHERE r.p_correct_all IS NOT NULL AND jsonb_typeof(j.value) = 'number'
  UNION ALL
  SELECT slice, GREATEST(COALESCE(label_ts, ts), ts), 0, 0, 0.0, 0.0, 1, label,
         COALESCE(label - p_correct, 0.0), COALESCE((label - p_correct) ^ 2, 0.0)
    FROM {TABLE} WHERE label IS NOT NULL
),
truncated AS (
  SELECT *, CASE WHEN t >= %(since)s THEN floor(t / %(bucket)s)::bigint END AS e FROM events
),
bucketed AS (
  SELECT *, e - (e * %(bucket)s > t)::int + ((e + 1) * %(bucket)s <= t)::int AS epoch FROM truncated
),
sums AS (
  SELECT slice, epoch, SUM(requests) AS requests, SUM(scores) AS scores, SUM(sum_p) AS sum_p,
         SUM(sum_p2) AS sum_p2, SUM(labels) AS labels, SUM(sum_y) AS sum_y, SUM(sum_r) AS sum_r,
         SUM(sum_r2) AS sum_r2
    FROM bucketed GROUP BY slice, epoch
),
firsts AS (
  SELECT DISTINCT ON (slice) slice, ts AS first_ts, request_id AS first_id FROM {TABLE} ORDER BY slice, ts, request_id
)
SELECT s.slice, s.epoch, s.requests, s.scores, s.sum_p, s.sum_p2, s.labels, s.sum_y, s.sum_r, s.sum_r2
  FROM sums AS s JOIN firsts AS f ON f.slice = s.slice
  ORDER BY f.first_ts, f.first_id, s.epoch IS NOT NULL, s.epoch
"""

#: greedy to the last "@": a password with an unencoded "@" is still masked whole (masking more is safe)
_USERINFO = re.compile(r"(?P<head>://[^:/@?#]*:)(?P<password>.*)@")
_PASSWORD_PARAM = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&#]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (and ``?password=***``)."""
    url = _USERINFO.sub(r"\g<head>***@", url)
    return _PASSWORD_PARAM.sub(r"\g<head>***", url)


def _passwords(url: str) -> list[str]:
    found = [m.group("password") for m in (*_USERINFO.finditer(url), *_PASSWORD_PARAM.finditer(url))]
    return sorted({p for raw in found if raw for p in (raw, unquote(raw))}, key=len, reverse=True)


class StoreError(RuntimeError):
    """The PostgreSQL store cannot start (unreachable, refused, or a schema from a newer release)."""


def _clean(value: Any) -> Any:
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


class PostgresStore:
    #: other processes (replicas) write and label the same rows: ``/sentinel/v1/feedback`` takes every
    #: label through :meth:`try_label`, even for a request still in this replica's memory
    shared = True

    def __init__(
        self,
        url: str,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        retention_days: float = 30.0,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        prune_interval_s: float = 3600.0,
    ) -> None:
        self.url = url
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retention_s = retention_days * 86400.0
        self.prune_interval_s = prune_interval_s
        self.written = 0
        self._secrets = _passwords(url)
        self._connect_kwargs: dict[str, Any] = {"application_name": "entropy-sentinel"}
        if "connect_timeout" not in url:
            self._connect_kwargs["connect_timeout"] = max(1, round(connect_timeout_s))
        self._queue: queue.Queue[Any] = queue.Queue()
        self._give_up_at = float("inf")
        try:
            with self._connect() as conn:
                self.schema_version = migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.describe()}: {self.redact(exc)}") from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={**self._connect_kwargs, "autocommit": True, "row_factory": dict_row},
            timeout=max(connect_timeout_s, 1.0),
            check=ConnectionPool.check_connection,  # a connection the server dropped is replaced, not handed out
            name="sentinel-store",
            open=True,
        )
        self._thread = threading.Thread(target=self._writer, name="sentinel-store", daemon=True)
        self._thread.start()

    def _connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, **self._connect_kwargs, **kwargs)

    def redact(self, error: BaseException | str) -> str:
        """An error's text with the URL's password masked (a connection error may quote the URL)."""
        text = str(error).strip()
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"{type(error).__name__}: {text}" if isinstance(error, BaseException) else text

    # -- request path: never blocks ------------------------------------------------------------
    def enqueue(self, row: Mapping[str, Any]) -> None:
        self._queue.put_nowait(tuple(_clean(encode_value(row.get(c), c)) for c in COLUMNS))

    def label(self, request_id: str, label: int, ts: float | None = None) -> None:
        self._queue.put_nowait(Label(request_id, int(label), time.time() if ts is None else ts))

    # -- feedback: synchronous, from a thread --------------------------------------------------
    def try_label(self, request_id: str, label: int, ts: float | None = None) -> bool:
        """Set the label of a committed row that has none; True when this call (of any replica) set it."""
        with self._reader() as conn:
            cursor = conn.execute(_LABEL, (int(label), time.time() if ts is None else ts, request_id))
            return cursor.rowcount == 1

    # -- writer thread -------------------------------------------------------------------------
    def _writer(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        last_prune = -float("inf")  # prune once at start, before any new row, then every prune_interval_s
        stop = False
        failed = False  # a write failed since the last flush was answered
        while not stop:
            if self.retention_s > 0 and time.monotonic() - last_prune > self.prune_interval_s:
                last_prune = time.monotonic()
                conn = self._prune(conn)
            batch = next_batch(self._queue, self.batch_size, self.flush_interval_s)
            stop = batch.stop
            if batch.items:
                conn, ok = self._commit(conn, batch.items)
                failed = failed or not ok
            for flush in batch.flushes:
                resolve(flush.done, not failed)
            if batch.flushes:
                failed = False
        if conn is not None:
            conn.close()

    def _commit(
        self, conn: psycopg.Connection[Any] | None, batch: list[Any]
    ) -> tuple[psycopg.Connection[Any] | None, bool]:
        """Write one batch in one transaction; on a lost connection, reconnect and retry it (until
        the store is closing and its deadline passed); a batch the database refuses is written item
        by item so one bad row costs only itself. Returns the connection and whether all was written."""
        delay = 0.5
        while True:
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                with conn.transaction():
                    self._apply(conn, batch)
                self.written += sum(1 for item in batch if not isinstance(item, Label))
                return conn, True
            except psycopg.OperationalError as exc:  # server gone, restarting, deadlock, serialisation
                if conn is not None and conn.broken:
                    conn.close()
                    conn = None
                if time.monotonic() >= self._give_up_at:
                    log.error("store: %d writes lost at shutdown: %s", len(batch), self.redact(exc))
                    return conn, False
                log.warning("store: %s; retrying %d writes in %.1f s", self.redact(exc), len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
            except psycopg.Error as exc:
                log.error("store: a batch of %d writes was refused (%s); writing them one by one",
                          len(batch), type(exc).__name__)
                return self._commit_each(conn, batch)

    def _commit_each(
        self, conn: psycopg.Connection[Any] | None, batch: list[Any]
    ) -> tuple[psycopg.Connection[Any] | None, bool]:
        failed = 0
        for item in batch:
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                with conn.transaction():
                    self._apply(conn, [item])
                if not isinstance(item, Label):
                    self.written += 1
            except psycopg.Error as exc:
                failed += 1
                # the type and SQLSTATE only: a message may quote a value (a prompt, with capture on)
                log.error("store: a write was refused: %s (SQLSTATE %s)", type(exc).__name__, exc.sqlstate)
                if conn is not None and conn.broken:
                    conn.close()
                    conn = None
        if failed:
            log.error("store: %d of %d writes dropped", failed, len(batch))
        return conn, not failed

    @staticmethod
    def _apply(conn: psycopg.Connection[Any], batch: list[Any]) -> None:
        """Rows and labels in queue order: runs of rows as one pipelined executemany."""
        with conn.cursor() as cursor:
            rows: list[tuple[Any, ...]] = []
            for item in batch:
                if isinstance(item, Label):
                    if rows:
                        cursor.executemany(_INSERT, rows)
                        rows = []
                    cursor.execute(_LABEL, (item.label, item.ts, item.request_id))
                else:
                    rows.append(item)
            if rows:
                cursor.executemany(_INSERT, rows)

    def _prune(self, conn: psycopg.Connection[Any] | None) -> psycopg.Connection[Any] | None:
        try:
            if conn is None or conn.closed:
                conn = self._connect()
            with conn.transaction():
                conn.execute(f"DELETE FROM {TABLE} WHERE ts < %s", (time.time() - self.retention_s,))
        except psycopg.Error as exc:
            log.warning("store: retention pruning failed: %s", self.redact(exc))
            if conn is not None and conn.broken:
                conn.close()
                conn = None
        return conn

    def flushed(self) -> Future[bool]:
        """A Future done once everything queued so far is committed (False if a write failed)."""
        return request_flush(self._queue)

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        wait_for_futures([self.flushed()], timeout=60)

    def describe(self) -> str:
        return mask_url(self.url)

    def close(self, timeout_s: float = 60.0) -> None:
        """Drain everything queued, then stop the writer (a clean shutdown loses nothing while the
        database answers; a batch still failing ``timeout_s / 2`` after close is given up)."""
        self._give_up_at = time.monotonic() + timeout_s / 2
        self._queue.put(STOP)
        self._thread.join(timeout=timeout_s)
        self._pool.close()

    # -- reads (from a thread: asyncio.to_thread) ----------------------------------------------
    @contextmanager
    def _reader(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; after :meth:`close`, a short-lived one (a closed store stays readable)."""
        if not self._pool.closed:
            with self._pool.connection() as conn:
                yield conn
            return
        with self._connect(autocommit=True, row_factory=dict_row) as conn:
            yield conn

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._reader() as conn:
            row = conn.execute(f"SELECT {_SELECT} FROM {TABLE} WHERE request_id = %s", (request_id,)).fetchone()
        return decode_row(row) if row else None

    def export(self, since: float = 0.0, limit: int = 10_000) -> list[dict[str, Any]]:
        with self._reader() as conn:
            rows = conn.execute(
                f"SELECT {_SELECT} FROM {TABLE} WHERE ts >= %s ORDER BY ts, request_id LIMIT %s", (since, limit)
            ).fetchall()
        return [decode_row(r) for r in rows]

    def replay(self) -> Iterator[ReplayRow]:
        """(ts, slice, every choice's P(correct), first P, label, label_ts) of each retained request,
        every replica's, streamed through a server-side cursor."""
        with self._connect() as conn, conn.transaction(), conn.cursor(name="sentinel_replay") as cursor:
            cursor.itersize = 5000
            cursor.execute(
                f"SELECT ts, slice, p_correct_all, p_correct, label, label_ts FROM {TABLE} ORDER BY ts, request_id"
            )
            for ts, key, p_all, p, label, label_ts in cursor:
                p_all_decoded = decode_row({"p_correct_all": p_all})["p_correct_all"] or []
                yield ReplayRow(ts, key, p_all_decoded, p, label, label_ts)


    def bucket_sums(self, since: float, bucket_s: int) -> list[BucketSums]:
        """Per slice and bucket, the sums a replay of every replica's rows would add (one aggregate query)."""
        with self._reader() as conn, conn.cursor(row_factory=tuple_row) as cursor:
            rows = cursor.execute(_BUCKET_SUMS, {"since": since, "bucket": int(bucket_s)}).fetchall()
        return [
            BucketSums(key, epoch, int(n), int(scores), float(p), float(p2), int(labels), float(y), float(r), float(r2))
            for key, epoch, n, scores, p, p2, labels, y, r, r2 in rows
        ]


def read_rows(url: str, since: float | None = None, connect_timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every stored row (every replica's) with ``ts >= since``, oldest first: what ``report --db
    postgresql://...`` reads. One read-only transaction on one connection: no migration, no writer,
    nothing the proxies' database could notice beyond the read. Errors are :class:`StoreError`
    with the URL's password masked."""
    secrets = _passwords(url)

    def redacted(exc: BaseException) -> str:
        text = str(exc).strip()
        for secret in secrets:
            text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}"

    kwargs: dict[str, Any] = {"application_name": "entropy-sentinel-report", "autocommit": False}
    if "connect_timeout" not in url:
        kwargs["connect_timeout"] = max(1, round(connect_timeout_s))
    where, params = ("WHERE ts >= %s ", (since,)) if since is not None else ("", ())
    try:
        with psycopg.connect(url, **kwargs) as conn:
            conn.read_only = True
            with conn.transaction():
                found = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
                if not found or found[0] is None:
                    raise StoreError(f"{mask_url(url)} has no {TABLE} table: is it an Entropy Sentinel store?")
                with conn.cursor(name="sentinel_report", row_factory=dict_row) as cursor:
                    cursor.itersize = 5000
                    cursor.execute(f"SELECT {_SELECT} FROM {TABLE} {where}ORDER BY ts, request_id", params)
                    return [decode_row(row) for row in cursor]
    except psycopg.Error as exc:
        raise StoreError(f"reading {mask_url(url)}: {redacted(exc)}") from None


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or bring the schema up to :data:`SCHEMA_VERSION` (one transaction, one replica at a
    time); returns the version. A database at a newer version than this release knows is refused."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        row = conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database's schema is version {current}, newer than this release's {SCHEMA_VERSION}: "
                "upgrade entropy-sentinel (or point store.url at another database)"
            )
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {VERSION_TABLE} (version, applied_at) VALUES (%s, %s)", (version, time.time()))
            log.info("store: schema migrated to version %d", version)
    return SCHEMA_VERSION
