"""Issue 11.16, the store's side: ``SQLiteStore.flushed()``, what ``store.durability: strict`` waits
for, commits what is queued at once (not after ``flush_interval_s``), in one commit for everything
already waiting, and says when a write failed."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

from entropy_sentinel.monitor.sqlite_store import SQLiteStore


def row(request_id: str, **values: Any) -> dict[str, Any]:
    return {"request_id": request_id, "ts": time.time(), "slice": "tenant=a", "route": "chat", "scored": True,
            "p_correct": 0.5, "p_correct_all": [0.5], **values}


def committed(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]


def test_flushed_commits_at_once_not_after_the_flush_interval(tmp_path: Path):
    store = SQLiteStore(tmp_path / "s.db", flush_interval_s=30.0)
    try:
        for i in range(3):
            store.enqueue(row(f"r{i}"))
        t0 = time.monotonic()
        assert store.flushed().result(timeout=10) is True
        assert time.monotonic() - t0 < 5.0
        assert committed(tmp_path / "s.db") == 3  # readable by another process
    finally:
        store.close()


def test_requests_ending_together_share_one_commit(tmp_path: Path):
    store = SQLiteStore(tmp_path / "s.db", flush_interval_s=30.0)
    commits: list[int] = []
    commit = store._commit
    store._commit = lambda conn, batch: commits.append(len(batch)) or commit(conn, batch)  # type: ignore[method-assign]
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer's first commit waits here while 200 more queue up
        futures = []
        for i in range(200):
            store.enqueue(row(f"r{i:03d}"))
            futures.append(store.flushed())
        time.sleep(0.3)
        blocker.execute("COMMIT")
        assert all(f.result(timeout=30) is True for f in futures)
        assert sum(commits) == 200 and len(commits) <= 3, commits
    finally:
        blocker.close()
        store.close()


def test_flushed_says_false_when_a_queued_write_failed_and_true_again_after(tmp_path: Path):
    store = SQLiteStore(tmp_path / "s.db", flush_interval_s=30.0)
    try:
        store.enqueue(row("bad", slice=None))  # NOT NULL: the batch fails
        assert store.flushed().result(timeout=10) is False
        store.enqueue(row("good"))
        assert store.flushed().result(timeout=10) is True
        assert store.get("good") is not None and store.get("bad") is None
    finally:
        store.close()
