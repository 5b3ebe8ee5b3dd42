#!/usr/bin/env python3
"""How long does a restart spend rebuilding the slice counters from the store? Prints figures.

Writes ``--rows`` synthetic records (``--slices`` slices, timestamps spread over the last ``--days``
days, 10 % with two choices, 5 % unscored, 10 % labelled up to an hour later, each with the 16
feature values a real record stores) into a fresh SQLite store, then times, in this order:

1. row by row: every stored request replayed into a :class:`SliceRegistry` (what a start-up did
   before issue 11.12: ``SQLiteStore.replay`` + ``SliceRegistry.replay``);
2. ``Monitor.replay_store()``: what a start-up does now;

and checks that both give the same counters (lifetime, 1 h and 24 h windows of every slice). Wall
seconds, then this process's CPU seconds (steadier on a shared machine).

    .venv/bin/python bench/replay.py --rows 100000 400000
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.slices import WINDOWS, SliceRegistry
from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.monitor.store import COLUMNS
from entropy_sentinel.signal import FEATURE_NAMES


def synthetic_rows(n: int, slices: int, days: float, now: float, seed: int = 0) -> list[tuple]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ts = now - rng.random() * days * 86400
        scored = rng.random() >= 0.05
        p_all = [rng.random() for _ in range(2 if rng.random() < 0.1 else 1)] if scored else None
        labelled = scored and rng.random() < 0.1
        values = {
            "request_id": f"{i:012x}", "ts": ts, "slice": f"tenant=t{rng.randrange(slices)}", "route": "chat",
            "model": "m", "status": 200, "scored": int(scored), "p_correct": p_all[0] if p_all else None,
            "p_correct_all": json.dumps(p_all) if p_all else None, "tokens": 12,
            "features": json.dumps({name: rng.random() for name in FEATURE_NAMES}) if scored else None,
            "latency_s": 0.1, "label": rng.randrange(2) if labelled else None,
            "label_ts": min(ts + rng.random() * 3600, now) if labelled else None, "prompt": None, "completion": None,
        }
        rows.append(tuple(values[c] for c in COLUMNS))
    return rows


def write_store(path: Path, rows: list[tuple]) -> None:
    SQLiteStore(path).close()  # the schema
    with sqlite3.connect(path) as conn:
        conn.executemany(f"INSERT INTO requests VALUES ({', '.join('?' * len(COLUMNS))})", rows)


def row_by_row(store: SQLiteStore, max_slices: int) -> SliceRegistry:
    registry = SliceRegistry(max_slices)
    for ts, key, p_all, p, label, label_ts in store.replay():
        registry.replay(registry.admit(key), ts, p_all, p, label, label_ts)
    return registry


def same_counters(a: SliceRegistry, b: SliceRegistry, now: float) -> bool:
    if sorted(a.counters) != sorted(b.counters):
        return False
    for key, counter in a.counters.items():
        for seconds in (None, *WINDOWS.values()):
            got, want = counter.window(seconds, now), b.counters[key].window(seconds, now)
            if not np.allclose(got, want, rtol=1e-9, atol=1e-9):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    parser.add_argument("--slices", type=int, default=50)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--max-slices", type=int, default=1000)
    args = parser.parse_args()
    now = time.time()
    head = f"{'rows':>8} {'row by row: wall s':>19} {'cpu s':>6} {'replay_store: wall s':>21} {'cpu s':>6}"
    print(head + "  same counters")
    for n in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.db"
            write_store(path, synthetic_rows(n, args.slices, args.days, now))
            store = SQLiteStore(path)
            t0, c0 = time.perf_counter(), time.process_time()
            before = row_by_row(store, args.max_slices)
            t1, c1 = time.perf_counter(), time.process_time()
            monitor = Monitor(SliceRegistry(args.max_slices), store)
            replayed = monitor.replay_store()
            t2, c2 = time.perf_counter(), time.process_time()
            store.close()
            assert replayed == n, (replayed, n)
            same = same_counters(before, monitor.slices, time.time())  # windows read after the restart
            print(f"{n:>8} {t1 - t0:>19.2f} {c1 - c0:>6.2f} {t2 - t1:>21.2f} {c2 - c1:>6.2f}  {same}")


if __name__ == "__main__":
    main()
