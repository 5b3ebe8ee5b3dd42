"""The write queue behind a record store: what the request path puts on it, and how a writer thread
takes it off in batches. Shared by the SQLite and PostgreSQL backends (their writer loops differ only
in how a batch is committed)."""

from __future__ import annotations

import contextlib
import queue
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STOP", "Batch", "Flush", "Label", "request_flush", "next_batch", "resolve"]


@dataclass(frozen=True, slots=True)
class Label:
    """A queued label (written behind the rows queued before it)."""

    request_id: str
    label: int
    ts: float


@dataclass(frozen=True, slots=True)
class Flush:
    """Asks the writer to commit now; ``done`` answers whether everything since the last flush was written."""

    done: Future[bool]


#: the last item of a closing store's queue
STOP = object()


def request_flush(q: queue.Queue[Any]) -> Future[bool]:
    """Queue a Flush: its Future is done once everything queued before it is committed (False if a
    write failed since the last flush was answered)."""
    done: Future[bool] = Future()
    q.put_nowait(Flush(done))
    return done


def resolve(future: Future[bool], ok: bool) -> None:
    """Answer a flush (a waiter may have given up, cancelled, already)."""
    with contextlib.suppress(InvalidStateError):
        future.set_result(ok)


@dataclass(slots=True)
class Batch:
    items: list[Any] = field(default_factory=list)  # rows and Labels, in queue order
    flushes: list[Flush] = field(default_factory=list)  # to answer once ``items`` are committed
    stop: bool = False  # STOP was taken: commit, answer, then end the writer


def next_batch(q: queue.Queue[Any], batch_size: int, flush_interval_s: float) -> Batch:
    """Up to ``batch_size`` items, waiting at most ``flush_interval_s``; a Flush ends the wait at once
    (whatever else is already queued still joins the batch), STOP ends the batch."""
    batch = Batch()
    deadline = time.monotonic() + flush_interval_s
    while len(batch.items) < batch_size:
        try:
            item = q.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            break
        if item is STOP:
            batch.stop = True
            break
        if isinstance(item, Flush):
            batch.flushes.append(item)
            deadline = 0.0  # commit now, with whatever else is already queued
            continue
        batch.items.append(item)
    return batch
