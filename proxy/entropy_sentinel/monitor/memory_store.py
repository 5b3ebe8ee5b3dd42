"""An in-memory :class:`~entropy_sentinel.monitor.store.RecordStore`: the double for tests.

It keeps rows exactly as a backend would store them (encoded, then decoded on read), applies writes
at once (so ``flush`` has nothing to wait for) and, like a file, can still be read after ``close``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from entropy_sentinel.monitor.store import COLUMNS, BucketSums, ReplayRow, decode_row, encode_value, sums_of_rows

__all__ = ["MemoryStore"]


class MemoryStore:
    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def enqueue(self, row: Mapping[str, Any]) -> None:
        stored = {c: encode_value(row.get(c), c) for c in COLUMNS}
        with self._lock:
            self._rows[stored["request_id"]] = stored

    def label(self, request_id: str, label: int, ts: float | None = None) -> None:
        self.try_label(request_id, label, ts)

    def try_label(self, request_id: str, label: int, ts: float | None = None) -> bool:
        with self._lock:  # the check and the write under one lock: the double's conditional write
            row = self._rows.get(request_id)
            if row is None or row["label"] is not None:
                return False
            row["label"], row["label_ts"] = int(label), time.time() if ts is None else ts
            return True

    def flush(self) -> None:
        return None

    def flushed(self) -> Future[bool]:
        done: Future[bool] = Future()
        done.set_result(True)  # every write is applied at once
        return done

    def close(self) -> None:
        self.closed = True

    def describe(self) -> str:
        return "memory"

    def _ordered(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r) for r in self._rows.values()]
        return sorted(rows, key=lambda r: (r["ts"], r["request_id"]))

    def get(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._rows.get(request_id)
            return decode_row(row) if row is not None else None

    def export(self, since: float = 0.0, limit: int = 10_000) -> list[dict[str, Any]]:
        return [decode_row(r) for r in self._ordered() if r["ts"] >= since][:limit]

    def replay(self) -> Iterator[ReplayRow]:
        for r in self._ordered():
            d = decode_row(r)
            yield ReplayRow(d["ts"], d["slice"], d["p_correct_all"] or [], d["p_correct"], d["label"], d["label_ts"])

    def bucket_sums(self, since: float, bucket_s: int) -> list[BucketSums]:
        return sums_of_rows(self.replay(), since, bucket_s)
