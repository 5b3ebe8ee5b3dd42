"""The record store's interface and its one schema: one row per finished request, and its label.

:class:`RecordStore` is what :class:`~entropy_sentinel.monitor.hub.Monitor`, the admin endpoints
and ``report`` rely on; :class:`~entropy_sentinel.monitor.sqlite_store.SQLiteStore` is the embedded
backend and :class:`~entropy_sentinel.monitor.memory_store.MemoryStore` the in-memory double for
tests. A new backend (PostgreSQL for many replicas) is one module implementing this protocol, plus
one line in :func:`~entropy_sentinel.gateway.app.build_monitor` choosing it from the config.

:data:`COLUMNS` is the row every backend stores and every reader returns; :func:`decode_row` turns
a stored row back into plain values (the JSON columns parsed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "COLUMNS", "JSON_COLUMNS", "TEXT_COLUMNS", "BucketSums", "RecordStore", "ReplayRow", "decode_row",
    "encode_value", "sums_of_rows",
]

#: the stored row, in order; ``label``/``label_ts`` are set by :meth:`RecordStore.try_label` (or ``label``)
COLUMNS: tuple[str, ...] = (
    "request_id", "ts", "slice", "route", "model", "status", "scored", "p_correct", "p_correct_all",
    "features", "tokens", "latency_s", "label", "label_ts", "prompt", "completion",
)
#: columns holding a JSON value (stored as its text)
JSON_COLUMNS: frozenset[str] = frozenset({"features", "p_correct_all"})
#: opt-in content capture: stored only when ``store.capture_content`` is on, never exported raw to logs
TEXT_COLUMNS: frozenset[str] = frozenset({"prompt", "completion"})


class ReplayRow(NamedTuple):
    """What the slice counters need of a retained request to be rebuilt after a restart."""

    ts: float
    slice: str
    p_correct_all: list[float]
    p_correct: float | None
    label: int | None
    label_ts: float | None


class BucketSums(NamedTuple):
    """The additive sums of one slice's stored requests whose events fall in one time bucket.

    A request counts at its ``ts`` (``requests``; ``scores``, ``sum_p``, ``sum_p2`` over every
    choice's P(correct)); its label at ``max(label_ts, ts)`` (``labels``, ``sum_y``, and the residual
    r = label - first choice's P in ``sum_r``, ``sum_r2``, when that P exists) -- as the live path
    and :meth:`~entropy_sentinel.monitor.slices.SliceRegistry.replay` count them. ``epoch`` is the
    bucket, ``floor(t / bucket_s)``, or None for every event before ``since``.
    """

    slice: str
    epoch: int | None
    requests: int = 0
    scores: int = 0
    sum_p: float = 0.0
    sum_p2: float = 0.0
    labels: int = 0
    sum_y: float = 0.0
    sum_r: float = 0.0
    sum_r2: float = 0.0


@runtime_checkable
class RecordStore(Protocol):
    """Where finished requests are kept beyond the in-memory window.

    Contract (``tests/unit/monitor/test_store_contract.py`` runs it on every backend):

    * ``enqueue(row)`` and ``label(...)`` are called on the event loop and never block: they queue;
      writing happens behind the request path, in order.
    * ``flush()`` blocks until everything queued before it is durable and readable.
    * ``close()`` drains the queue, then releases the backend; a clean stop loses nothing.
    * ``get``/``export``/``replay`` read durable rows (call them from a thread); rows are dicts over
      :data:`COLUMNS` with JSON columns decoded (:func:`decode_row`).
    * Enqueuing an existing ``request_id`` replaces that row; labelling an unknown id does nothing.
    * A label is set once: ``try_label(request_id, label, ts)`` is synchronous (call it from a thread)
      and sets the label of a durable row that has none in one conditional write (SQL:
      ``UPDATE ... SET label = ? WHERE request_id = ? AND label IS NULL``, then the affected row
      count), never a read-then-write; it returns whether this call set it. Of any number of calls
      for one row, concurrent or not, from one process or several, exactly one returns True; an
      unknown (or not yet durable) id returns False. ``/sentinel/v1/feedback`` relies on it for a
      request no longer in memory. The queued ``label`` is conditional too: it never overwrites.
    * ``flushed()`` is ``flush()`` without blocking (call it on the event loop): a Future done once
      everything queued before the call is durable and readable; its result is False when one of
      those writes failed. ``store.durability: strict`` awaits it before a response's last byte.
    * ``bucket_sums(since, bucket_s)`` (from a thread) is :func:`sums_of_rows` over ``replay()``,
      computed where the rows are (aggregate queries): what a start-up needs to rebuild the slice
      counters without reading every row. Sums of one slice come together, bucket None first, then
      by epoch; slices in the order of their first request (``ts``, then ``request_id``), the order
      in which replaying every row would admit them. Rows are as the monitor enqueues them:
      ``p_correct`` is ``p_correct_all[0]`` (None when that is empty or None).
    * ``describe()`` names the backend and its location for the start-up log (no secrets).
    """

    def enqueue(self, row: Mapping[str, Any]) -> None: ...

    def label(self, request_id: str, label: int, ts: float | None = None) -> None: ...

    def try_label(self, request_id: str, label: int, ts: float | None = None) -> bool: ...

    def flush(self) -> None: ...

    def flushed(self) -> Future[bool]: ...

    def close(self) -> None: ...

    def get(self, request_id: str) -> dict[str, Any] | None: ...

    def export(self, since: float = 0.0, limit: int = 10_000) -> list[dict[str, Any]]: ...

    def replay(self) -> Iterator[ReplayRow]: ...

    def bucket_sums(self, since: float, bucket_s: int) -> list[BucketSums]: ...

    def describe(self) -> str: ...


def encode_value(value: Any, column: str) -> Any:
    """A row value as stored: JSON columns as compact text, bools as 0/1."""
    if column in JSON_COLUMNS and value is not None:
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row back to plain values: JSON columns parsed (``scored`` stays 0/1, as stored)."""
    out = dict(row)
    for key in JSON_COLUMNS:
        if isinstance(out.get(key), str | bytes):
            out[key] = json.loads(out[key]) if out[key] else None
    return out


def _bucket(t: float, since: float, bucket_s: int) -> int | None:
    return int(t // bucket_s) if t >= since else None


def sums_of_rows(rows: Iterable[ReplayRow], since: float, bucket_s: int) -> list[BucketSums]:
    """What :meth:`RecordStore.bucket_sums` means, over rows in ``replay()`` order (time, then id):
    the reference a backend's aggregate query is checked against, and a backend without one can return."""
    totals: dict[str, dict[int | None, list[float]]] = {}
    for ts, key, scores, p, label, label_ts in rows:
        buckets = totals.setdefault(key, {})
        sums = buckets.setdefault(_bucket(ts, since, bucket_s), [0.0] * 8)
        sums[0] += 1
        for score in scores:
            sums[1] += 1
            sums[2] += score
            sums[3] += score * score
        if label is not None:
            labelled_at = max(ts if label_ts is None else label_ts, ts)  # never before its request
            sums = buckets.setdefault(_bucket(labelled_at, since, bucket_s), [0.0] * 8)
            r = 0.0 if p is None else label - p
            sums[4] += 1
            sums[5] += label
            sums[6] += r
            sums[7] += r * r
    out = []
    for key, buckets in totals.items():  # dicts keep first-seen order: slices by their first request
        for epoch in sorted(buckets, key=lambda e: (e is not None, e or 0)):
            s = buckets[epoch]
            out.append(BucketSums(key, epoch, int(s[0]), int(s[1]), s[2], s[3], int(s[4]), s[5], s[6], s[7]))
    return out
