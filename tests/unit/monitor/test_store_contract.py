"""The contracts of the live path's two seams, run on every implementation.

:class:`~entropy_sentinel.monitor.store.RecordStore`: each test below is one clause of its
docstring and runs on every backend in :data:`BACKENDS`. A new backend (PostgreSQL) adds one
:class:`Backend` entry there; a new clause is one more ``test_*`` function taking ``store`` (and
``backend`` when it must reopen the store).

:class:`~entropy_sentinel.monitor.sinks.RecordSink`: every shipped sink is one, takes finished
records and labels without raising, and a sink that does raise never reaches the request path.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.memory_store import MemoryStore
from entropy_sentinel.monitor.prometheus import PrometheusSink
from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.sinks import RecordingSink, RecordSink
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.monitor.store import COLUMNS, BucketSums, RecordStore, ReplayRow, sums_of_rows
from entropy_sentinel.types import UnscoredReason

from tests import postgres_server

# -- the backends ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    #: a fresh, empty store whose files (if any) live under the given folder
    open: Callable[[Path], Any]
    #: a store reading what a closed one left behind (a new process would see the same)
    reopen: Callable[[Any, Path], Any]
    #: configuration values the backend must never print (a database password)
    secrets: tuple[str, ...] = ()
    #: a session fixture starting the server the backend talks to (PostgreSQL), requested first
    server: str | None = None


def _postgres(folder: Path) -> Any:
    """A PostgreSQL store on the session's server, in a database of this test's own (``folder``'s name):
    a second store on the same folder is a second replica on the same database. No retention: the
    rows here are from 1970, and a second replica's start-up pruning would delete the first's."""
    from entropy_sentinel.monitor.postgres_store import PostgresStore

    return PostgresStore(postgres_server.running().database(folder.name), retention_days=0)


BACKENDS = [
    Backend("memory", lambda _: MemoryStore(), lambda closed, _: closed),  # a double: readable after close
    Backend(
        "sqlite",
        # no retention either: it prunes after the first batch, and these rows are from 1970
        lambda folder: SQLiteStore(folder / "records.db", retention_days=0),
        lambda _, folder: SQLiteStore(folder / "records.db", retention_days=0),
    ),
    Backend(
        "postgresql",
        _postgres,
        lambda _, folder: _postgres(folder),  # another replica on the same database
        secrets=(postgres_server.PASSWORD,),
        server="postgres_server",
    ),
]


@pytest.fixture(params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request) -> Backend:
    if request.param.server is not None:
        request.getfixturevalue(request.param.server)  # started once per session; skips where it cannot run
    return request.param


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[Any]:
    opened = backend.open(tmp_path)
    yield opened
    opened.close()


def row(request_id: str, ts: float, **values: Any) -> dict[str, Any]:
    """A row as the monitor enqueues it (``label``/``label_ts`` are the store's to set)."""
    return {
        "request_id": request_id,
        "ts": ts,
        "slice": "domain=algebra,tenant=acme",
        "route": "chat",
        "model": "gemma-3-270m",
        "status": 200,
        "scored": True,
        "p_correct": 0.75,
        "p_correct_all": [0.75, 0.25],
        "features": {"mean": 0.5, "max": 2.25, "n_tokens": 12.0},
        "tokens": 12,
        "latency_s": 0.125,
        "prompt": None,
        "completion": None,
        **values,
    }


# -- RecordStore -------------------------------------------------------------------------------


def test_every_backend_is_a_record_store(store):
    assert isinstance(store, RecordStore)
    assert not isinstance(object(), RecordStore)  # the check can fail


def test_a_flushed_row_reads_back_with_its_json_columns_decoded(store):
    store.enqueue(row("r1", 100.0))
    store.flush()
    got = store.get("r1")
    assert got is not None and set(got) == set(COLUMNS)
    assert got["features"] == {"mean": 0.5, "max": 2.25, "n_tokens": 12.0}
    assert got["p_correct_all"] == [0.75, 0.25]
    assert got["scored"] == 1 and not isinstance(got["scored"], bool)  # stays 0/1, as stored
    assert (got["ts"], got["slice"], got["p_correct"], got["tokens"]) == (100.0, "domain=algebra,tenant=acme", 0.75, 12)
    assert got["label"] is None and got["label_ts"] is None
    assert store.export() == [got]
    assert store.get("missing") is None


def test_null_json_columns_stay_null_and_replay_as_no_scores(store):
    store.enqueue(row("u1", 5.0, scored=False, p_correct=None, p_correct_all=None, features=None, status=502))
    store.flush()
    got = store.get("u1")
    assert got["features"] is None and got["p_correct_all"] is None and got["scored"] == 0
    assert list(store.replay()) == [ReplayRow(5.0, "domain=algebra,tenant=acme", [], None, None, None)]


def test_export_filters_by_since_orders_by_time_then_id_and_stops_at_limit(store):
    for request_id, ts in (("c", 30.0), ("a", 10.0), ("e", 50.0), ("b2", 20.0), ("b1", 20.0), ("d", 40.0)):
        store.enqueue(row(request_id, ts))
    store.flush()
    assert [r["request_id"] for r in store.export()] == ["a", "b1", "b2", "c", "d", "e"]
    assert [r["request_id"] for r in store.export(since=20.0)] == ["b1", "b2", "c", "d", "e"]  # since is inclusive
    assert [r["request_id"] for r in store.export(since=20.0, limit=3)] == ["b1", "b2", "c"]
    assert store.export(since=50.5) == []


def test_replay_yields_what_the_slice_counters_need_in_time_order(store):
    store.enqueue(row("late", 20.0, slice="tenant=b", p_correct=0.5, p_correct_all=[0.5]))
    store.enqueue(row("early", 10.0, slice="tenant=a", p_correct=0.9, p_correct_all=[0.9, 0.1]))
    store.label("early", 1, ts=15.0)
    store.flush()
    replayed = list(store.replay())
    assert all(isinstance(r, ReplayRow) for r in replayed)
    assert replayed == [
        ReplayRow(10.0, "tenant=a", [0.9, 0.1], 0.9, 1, 15.0),
        ReplayRow(20.0, "tenant=b", [0.5], 0.5, None, None),
    ]


def test_bucket_sums_are_every_request_score_and_label_summed_per_slice_and_bucket(store):
    # since 1000, buckets of 100 s: 10 = [1000, 1100), ...; everything earlier sums into bucket None
    store.enqueue(row("a1", 500.0, slice="tenant=a", p_correct=0.5, p_correct_all=[0.5, 0.25]))  # two choices
    store.enqueue(row("a2", 1150.0, slice="tenant=a", p_correct=0.75, p_correct_all=[0.75]))
    store.enqueue(row("a3", 1199.0, slice="tenant=a", scored=False, p_correct=None, p_correct_all=None))
    store.enqueue(row("b1", 600.0, slice="tenant=b", p_correct=1.0, p_correct_all=[1.0]))
    store.enqueue(row("a0", 500.0, slice="tenant=c", p_correct=0.5, p_correct_all=[0.5]))  # ties a1: id first
    store.label("a1", 1, ts=1234.0)  # an old request labelled in bucket 12: r = 1 - 0.5
    store.label("a2", 0, ts=1000.0)  # a label time before its request counts at the request's (bucket 11)
    store.label("a3", 1, ts=1201.0)  # unscored: a label without a residual
    store.label("b1", 0, ts=700.0)
    store.flush()
    sums = store.bucket_sums(since=1000.0, bucket_s=100)
    assert all(isinstance(s, BucketSums) for s in sums)
    assert sums == [  # slices in the order of their first request (ts, then request_id), not by name
        BucketSums("tenant=c", None, requests=1, scores=1, sum_p=0.5, sum_p2=0.25),
        BucketSums("tenant=a", None, requests=1, scores=2, sum_p=0.75, sum_p2=0.3125),
        BucketSums("tenant=a", 11, requests=2, scores=1, sum_p=0.75, sum_p2=0.5625,
                   labels=1, sum_y=0.0, sum_r=-0.75, sum_r2=0.5625),
        BucketSums("tenant=a", 12, labels=2, sum_y=2.0, sum_r=0.5, sum_r2=0.25),
        BucketSums("tenant=b", None, requests=1, scores=1, sum_p=1.0, sum_p2=1.0,
                   labels=1, sum_y=0.0, sum_r=-1.0, sum_r2=1.0),
    ]
    assert sums == sums_of_rows(store.replay(), 1000.0, 100)  # the reference: replay's rows, folded


def test_bucket_sums_floor_times_at_bucket_boundaries_as_python_does(store):
    k = 5_678_901  # bucket k of 300 s starts at 1_703_670_300 (December 2023)
    edge = 300.0 * k
    times = [math.nextafter(edge, 0.0), edge, math.nextafter(edge, math.inf), edge + 299.99999]
    for i, ts in enumerate(times):
        store.enqueue(row(f"r{i}", ts))
    store.flush()
    sums = store.bucket_sums(since=edge, bucket_s=300)  # since is inclusive
    assert [(s.epoch, s.requests) for s in sums] == [(None, 1), (k, 3)]
    assert [int(t // 300) for t in times] == [k - 1, k, k, k]
    assert [(s.epoch, s.requests) for s in store.bucket_sums(since=0.0, bucket_s=300)] == [(k - 1, 1), (k, 3)]


def test_bucket_sums_equal_the_replayed_rows_folded_on_varied_traffic(store):
    rng = random.Random(11)
    now, since = 1_000_000.0, 1_000_000.0 - 86_400
    for i in range(300):
        ts = now - rng.random() * 3 * 86_400
        scores = [rng.random() for _ in range(rng.choice((0, 1, 1, 1, 2, 3)))]
        store.enqueue(row(f"r{i:04d}", ts, slice=f"tenant=t{rng.randrange(6)}", p_correct=scores[0] if scores else None,
                          p_correct_all=scores or None, scored=bool(scores)))
        if rng.random() < 0.3:
            store.label(f"r{i:04d}", rng.randrange(2), ts=ts + rng.uniform(-60, 7_200))
    store.flush()
    got, want = store.bucket_sums(since, 300), sums_of_rows(store.replay(), since, 300)
    assert [s[:4] + s[6:7] for s in got] == [s[:4] + s[6:7] for s in want]  # keys and counts: exact
    assert [s[4:6] + s[7:] for s in got] == [pytest.approx(s[4:6] + s[7:], rel=1e-12, abs=1e-12) for s in want]
    assert sum(s.requests for s in got) == 300 and any(s.epoch is None for s in got) and len(got) > 12


def test_flushed_is_a_flush_that_does_not_block(store):
    store.enqueue(row("r1", 100.0))
    done = store.flushed()  # called on the event loop: returns at once
    assert done.result(timeout=30) is True
    assert store.get("r1") is not None


def test_label_sets_label_and_its_time_in_the_order_it_was_queued(store):
    store.enqueue(row("r1", 100.0))
    store.enqueue(row("r2", 101.0))
    store.label("r1", 0, ts=123.5)  # queued right behind its row: applied after it
    before = time.time()
    store.label("r2", 1)  # no ts: now
    store.flush()
    after = time.time()
    r1, r2 = store.get("r1"), store.get("r2")
    assert (r1["label"], r1["label_ts"]) == (0, 123.5)
    assert r2["label"] == 1 and before <= r2["label_ts"] <= after


def test_labelling_an_unknown_request_does_nothing(store):
    store.enqueue(row("r1", 100.0))
    store.label("nobody", 1, ts=5.0)
    store.flush()
    assert store.get("nobody") is None
    assert [r["request_id"] for r in store.export()] == ["r1"]
    assert store.get("r1")["label"] is None


def test_try_label_takes_a_label_once_and_the_queued_label_never_overwrites(store):
    store.enqueue(row("r1", 100.0))
    store.flush()
    assert store.try_label("r1", 0, ts=110.0) is True
    assert store.try_label("r1", 1, ts=120.0) is False
    assert store.try_label("r1", 0, ts=130.0) is False
    store.label("r1", 1, ts=140.0)  # queued: conditional too
    store.flush()
    got = store.get("r1")
    assert (got["label"], got["label_ts"]) == (0, 110.0)
    assert store.try_label("nobody", 1) is False
    assert store.get("nobody") is None


def test_try_label_from_20_concurrent_threads_takes_exactly_one(backend, store, tmp_path):
    store.enqueue(row("r1", 100.0))
    store.flush()
    other = backend.reopen(store, tmp_path)  # SQLite: a second store on the file, as a second process
    start = threading.Barrier(20)
    taken: list[tuple[int, bool]] = []

    def attempt(i: int) -> None:
        start.wait(timeout=30)
        taken.append((i, (store if i % 2 else other).try_label("r1", i % 2, ts=float(i))))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if other is not store:
        other.close()
    winners = [i for i, ok in taken if ok]
    assert len(taken) == 20 and len(winners) == 1
    got = store.get("r1")
    assert (got["label"], got["label_ts"]) == (winners[0] % 2, float(winners[0]))


def test_enqueuing_an_existing_request_id_replaces_the_row(store):
    store.enqueue(row("r1", 100.0, p_correct=0.1, p_correct_all=[0.1], status=502))
    store.flush()
    store.enqueue(row("r1", 200.0, p_correct=0.9, p_correct_all=[0.9], status=200))
    store.flush()
    rows = store.export()
    assert len(rows) == 1
    got = rows[0]
    assert (got["ts"], got["p_correct"], got["p_correct_all"], got["status"]) == (200.0, 0.9, [0.9], 200)


def test_close_drains_the_queue_a_clean_stop_loses_nothing(backend, tmp_path):
    store = backend.open(tmp_path)
    n = 1234  # more than one SQLite batch (500), never flushed
    for i in range(n):
        store.enqueue(row(f"r{i:05d}", 1000.0 + i))
    store.label("r00007", 1, ts=2000.0)
    store.close()
    reader = backend.reopen(store, tmp_path)
    try:
        rows = reader.export(limit=10 * n)
        assert len(rows) == n
        assert [r["request_id"] for r in rows] == [f"r{i:05d}" for i in range(n)]
        assert reader.get("r00007")["label"] == 1
    finally:
        reader.close()


def test_reads_work_from_another_thread(store):
    store.enqueue(row("r1", 100.0))
    store.flush()
    out: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: out.update(get=store.get("r1"), export=store.export()))
    worker.start()
    worker.join(timeout=30)
    assert out["get"]["request_id"] == "r1" and len(out["export"]) == 1


def test_describe_names_the_backend_and_leaks_neither_content_nor_secrets(backend, store):
    store.enqueue(row("r1", 100.0, prompt="SECRET-PROMPT-TEXT", completion="SECRET-COMPLETION"))
    store.flush()
    text = store.describe()
    assert isinstance(text, str) and text.startswith(backend.name)
    for secret in ("SECRET-PROMPT-TEXT", "SECRET-COMPLETION", *backend.secrets):
        assert secret not in text


# -- RecordSink --------------------------------------------------------------------------------

SINKS = {
    "recording": lambda: RecordingSink(),
    "prometheus": lambda: PrometheusSink(SliceRegistry()),
}


def record(request_id: str = "r1", **values: Any) -> RequestRecord:
    return RequestRecord(
        **{
            "request_id": request_id,
            "route": "chat",
            "slice": "tenant=acme",
            "status": 200,
            "scored": True,
            "p_correct": [0.8],
            "features": {0: {"mean": 0.4}},
            "tokens": {0: 5},
            "latency_s": 0.05,
            **values,
        }
    )


@pytest.mark.parametrize("make", SINKS.values(), ids=SINKS.keys())
def test_every_shipped_sink_is_a_record_sink_and_takes_any_outcome(make):
    sink = make()
    assert isinstance(sink, RecordSink)
    assert not isinstance(object(), RecordSink)
    for reason in (None, *UnscoredReason):
        scored = reason is None
        sink.record_finished(record(scored=scored, unscored_reason=reason, p_correct=[0.8] if scored else None))
    sink.label_received("tenant=acme", True, 0.8)
    sink.label_received("tenant=acme", False, None)


class ExplodingSink:
    def record_finished(self, record: RequestRecord) -> None:
        raise RuntimeError("sink down")

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None:
        raise RuntimeError("sink down")


def test_a_raising_sink_never_reaches_the_request_path(caplog):
    slices, store, after = SliceRegistry(), MemoryStore(), RecordingSink()
    monitor = Monitor(slices, store, [ExplodingSink(), after])
    finished = record("r1", started_at=1000.0)
    with caplog.at_level(logging.ERROR, logger="entropy_sentinel.monitor.hub"):
        monitor.finish(finished)
        monitor.label("tenant=acme", True, 0.8, "r1")
    # the slice counters, the store and the next sink all still got the request and its label
    life = slices.summary("tenant=acme", now=1001.0)["windows"]["lifetime"]
    assert (life["requests"], life["n_scored"], life["estimate"]) == (1, 1, pytest.approx(0.8))
    assert slices.summary("tenant=acme")["labels"]["n"] == 1
    assert store.get("r1")["p_correct_all"] == [0.8] and store.get("r1")["label"] == 1
    assert after.records == [finished] and after.labels == [("tenant=acme", True, 0.8)]
    assert sum("sink ExplodingSink failed" in r.getMessage() for r in caplog.records) == 2
