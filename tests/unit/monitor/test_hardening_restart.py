"""Issue 11.12: a restart rebuilds the slice counters from the store's per-bucket sums (one aggregate
read instead of a replay of every row), and they are the counters the proxy had before it stopped."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.memory_store import MemoryStore
from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import OTHER, REQUESTS, WINDOWS, SliceRegistry
from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.types import UnscoredReason

HOUR, DAY = 3600.0, 86400.0


def serve_traffic(monitor: Monitor, now: float, n: int = 400, seed: int = 5) -> None:
    """``n`` finished requests over the last three days (in time order, as they arrive), over 7 slices
    of which the registry admits fewer (the rest count as ``other``): one to three choices, some
    unscored, some refused before the upstream (never stored), a third labelled."""
    rng = random.Random(seed)
    for i, started in enumerate(sorted(now - rng.random() * 3 * DAY for _ in range(n))):
        key = monitor.slice_of(f"tenant=t{rng.randrange(7)}", None)
        roll = rng.random()
        if roll < 0.1:
            record = RequestRecord(f"r{i:04d}", "chat", key, started, status=502,
                                   unscored_reason=UnscoredReason.UPSTREAM_STATUS)
        elif roll < 0.15:
            record = RequestRecord(f"r{i:04d}", "chat", key, started, status=400,
                                   unscored_reason=UnscoredReason.INVALID_REQUEST)
        else:
            scores = [rng.random() for _ in range(rng.choice((1, 1, 1, 2, 3)))]
            record = RequestRecord(f"r{i:04d}", "chat", key, started, status=200, scored=True, p_correct=scores)
        monitor.finish(record)
        if record.status != 400 and rng.random() < 0.33:
            monitor.label(key, rng.random() < 0.6, record.p_correct[0] if record.p_correct else None, record.request_id)


def assert_same_counters(got: SliceRegistry, want: SliceRegistry, at: float) -> None:
    assert sorted(got.counters) == sorted(want.counters)
    for key, counter in want.counters.items():
        for name, seconds in (("lifetime", None), *WINDOWS.items()):
            a, b = got.counters[key].window(seconds, at), counter.window(seconds, at)
            assert np.allclose(a, b, rtol=1e-12, atol=1e-12), (key, name, a, b)
        assert_close(got.summary(key, at), want.summary(key, at))


def assert_close(got: object, want: object) -> None:
    """Equal, floats to 1e-9 (sums added in another order); a nested summary compared leaf by leaf."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want)
        for key in want:
            assert_close(got[key], want[key])
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    else:
        assert got == want


def test_a_restart_rebuilds_exactly_the_counters_the_proxy_had(tmp_path: Path):
    now = time.time()
    live = Monitor(SliceRegistry(max_slices=4), SQLiteStore(tmp_path / "s.db"))
    serve_traffic(live, now)
    live.close()  # a clean stop: everything queued is committed
    assert OTHER in live.slices.counters and len(live.slices.counters) == 5  # 4 admitted + other
    counted = int(sum(c.lifetime[REQUESTS] for c in live.slices.counters.values()))
    assert 300 < counted < 400  # requests refused before the upstream are neither counted nor stored

    restarted = Monitor(SliceRegistry(max_slices=4), SQLiteStore(tmp_path / "s.db"))
    try:
        assert restarted.replay_store() == counted
        for at in (time.time(), now + HOUR, now + DAY - 1, now + 2 * DAY):  # windows read later still agree
            assert_same_counters(restarted.slices, live.slices, at)
        life = restarted.slices.counters[OTHER].lifetime
        assert life.sum() > 0  # the slices past the bound were folded into other, as they were live
    finally:
        restarted.close()


@pytest.mark.parametrize("max_slices", [1000, 3])
def test_the_aggregate_restore_equals_replaying_every_row(max_slices: int):
    """The reference: what a start-up did before (every row through SliceRegistry.replay). With a
    bound lowered since the records were written, the slices first seen are the ones admitted."""
    now = time.time()
    store = MemoryStore()
    serve_traffic(Monitor(SliceRegistry(), store), now, seed=9)
    by_rows = SliceRegistry(max_slices)
    for ts, key, scores, p, label, label_ts in store.replay():
        by_rows.replay(by_rows.admit(key), ts, scores, p, label, label_ts)
    restored = Monitor(SliceRegistry(max_slices), store)
    restored.replay_store(now)
    assert len(restored.slices.counters) == (7 if max_slices > 7 else max_slices + 1)
    for at in (now, now + 6 * HOUR):
        assert_same_counters(restored.slices, by_rows, at)


def test_buckets_older_than_a_day_reach_lifetime_only():
    store = MemoryStore()
    now = 1_000_000_000.0
    live = Monitor(SliceRegistry(), store)
    for i, age in enumerate((2 * DAY, DAY + 600, DAY - 600, HOUR / 2)):
        live.finish(RequestRecord(f"r{i}", "chat", "tenant=a", now - age, status=200, scored=True, p_correct=[0.5]))
    restored = Monitor(SliceRegistry(), store)
    assert restored.replay_store(now) == 4
    counter = restored.slices.counters["tenant=a"]
    assert (counter.ring_epoch >= 0).sum() == 2  # only the two requests of the last day are in the ring
    windows = restored.slices.summary("tenant=a", now)["windows"]
    assert [windows[w]["requests"] for w in ("lifetime", "24h", "1h")] == [4, 2, 1]
