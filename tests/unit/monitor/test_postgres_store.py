"""The PostgreSQL record store beyond the shared contract (test_store_contract.py runs that on it too):
several replicas on one database, start-up migration, lost connections, retention, refused rows,
the password kept out of every message, the configuration that selects it, and two proxies on it.

All but the configuration checks run against a real server (the ``postgres_server`` fixture,
tests/postgres_server.py), each test in a database of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from entropy_sentinel import optional
from entropy_sentinel.config import ConfigError, StoreConfig, load_config
from entropy_sentinel.gateway.app import MONITOR_KEY
from entropy_sentinel.monitor.postgres_store import SCHEMA_VERSION, PostgresStore, StoreError, mask_url
from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.monitor.store import ReplayRow, sums_of_rows
from entropy_sentinel.monitor.store_factory import open_store
from entropy_sentinel.optional import MissingExtra

from tests.harness import one_token_answer, running_proxy, scripted_upstream
from tests.postgres_server import PASSWORD


@pytest.fixture
def db_url(postgres_server, tmp_path: Path) -> str:
    return postgres_server.database(tmp_path.name)


@pytest.fixture
def replicas(db_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two proxy replicas would open it (no retention: the rows here
    are from 1970, and either replica's start-up pruning would delete the other's)."""
    a, b = PostgresStore(db_url, retention_days=0), PostgresStore(db_url, retention_days=0)
    yield a, b
    a.close()
    b.close()


def row(request_id: str, ts: float, **values: Any) -> dict[str, Any]:
    return {
        "request_id": request_id, "ts": ts, "slice": "tenant=acme", "route": "chat", "model": "m", "status": 200,
        "scored": True, "p_correct": 0.75, "p_correct_all": [0.75], "features": {"mean": 0.5}, "tokens": 3,
        "latency_s": 0.1, "prompt": None, "completion": None, **values,
    }


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# -- replicas ------------------------------------------------------------------------------------


def test_a_row_written_by_one_replica_is_labelled_once_by_all_of_them_concurrently(replicas):
    a, b = replicas
    a.enqueue(row("r1", 100.0))
    a.flush()
    start = threading.Barrier(24)
    taken: list[tuple[str, bool]] = []

    def attempt(i: int) -> None:
        store, name = (a, "a") if i % 2 else (b, "b")
        start.wait(timeout=30)
        taken.append((name, store.try_label("r1", i % 2, ts=float(i))))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [name for name, ok in taken if ok]
    assert len(taken) == 24 and len(winners) == 1
    label = 1 if winners == ["a"] else 0
    assert a.get("r1")["label"] == b.get("r1")["label"] == label
    assert b.try_label("r1", 1 - label) is False and a.try_label("r1", 1 - label) is False


def test_a_label_taken_by_one_replica_is_never_overwritten_by_another(replicas):
    a, b = replicas
    a.enqueue(row("r1", 100.0, p_correct=0.1))
    a.flush()
    assert b.try_label("r1", 0, ts=110.0) is True
    a.label("r1", 1, ts=120.0)  # replica A's queued label (its in-memory path): conditional too
    a.enqueue(row("r1", 100.0, p_correct=0.9))  # A writes the row again: the row is replaced, not the label
    a.flush()
    got = b.get("r1")
    assert (got["label"], got["label_ts"], got["p_correct"]) == (0, 110.0, 0.9)


def test_export_and_replay_from_either_replica_see_every_replicas_rows(replicas):
    a, b = replicas
    a.enqueue(row("a1", 10.0, slice="tenant=a"))
    b.enqueue(row("b1", 20.0, slice="tenant=b", p_correct=0.5, p_correct_all=[0.5, 0.25]))
    a.enqueue(row("a2", 30.0, slice="tenant=a"))
    b.label("b1", 1, ts=25.0)
    a.flush()
    b.flush()
    exported = a.export()
    assert [r["request_id"] for r in exported] == ["a1", "b1", "a2"]
    assert b.export() == exported
    assert list(a.replay()) == list(b.replay()) == [
        ReplayRow(10.0, "tenant=a", [0.75], 0.75, None, None),
        ReplayRow(20.0, "tenant=b", [0.5, 0.25], 0.5, 1, 25.0),
        ReplayRow(30.0, "tenant=a", [0.75], 0.75, None, None),
    ]


# -- schema --------------------------------------------------------------------------------------


def test_replicas_starting_together_create_the_schema_once(db_url):
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait(timeout=30)
        try:
            stores.append(PostgresStore(db_url))
        except BaseException as exc:  # collected: the assertion names it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 4
    assert {s.schema_version for s in stores} == {SCHEMA_VERSION}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT version FROM sentinel_schema_version").fetchall() == [(SCHEMA_VERSION,)]
    PostgresStore(db_url).close()  # and again on an existing schema: nothing to do, no error


def test_a_database_migrated_by_a_newer_release_is_refused(db_url):
    PostgresStore(db_url).close()
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO sentinel_schema_version VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this release"):
        PostgresStore(db_url)


# -- failures ------------------------------------------------------------------------------------


def test_the_writer_and_the_readers_survive_the_server_dropping_their_connections(db_url):
    store = PostgresStore(db_url)
    try:
        store.enqueue(row("before", 1.0))
        store.flush()
        assert store.get("before") is not None  # the pool's connection exists now
        with psycopg.connect(db_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'entropy-sentinel' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        assert killed >= 2  # the writer's and the pool's
        store.enqueue(row("after", 2.0))
        store.label("before", 1, ts=3.0)
        store.flush()
        assert [r["request_id"] for r in store.export()] == ["before", "after"]
        assert store.get("before")["label"] == 1
        assert store.try_label("after", 0) is True
    finally:
        store.close()


def test_a_row_the_database_refuses_costs_only_itself_and_its_content_is_not_logged(db_url, caplog):
    store = PostgresStore(db_url)
    try:
        with caplog.at_level(logging.ERROR, logger="entropy_sentinel.monitor.postgres_store"):
            store.enqueue(row("ok1", 1.0))
            store.enqueue(row("bad", 2.0, tokens=2**40, prompt="SECRET-PROMPT"))  # past INTEGER
            store.enqueue(row("ok2", 3.0, prompt="a\x00b"))  # NUL: PostgreSQL text cannot hold it
            store.flush()
        assert [r["request_id"] for r in store.export()] == ["ok1", "ok2"]
        assert store.get("ok2")["prompt"] == "a\ufffdb"
        assert any("refused" in r.getMessage() for r in caplog.records)
        assert not any("SECRET-PROMPT" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_retention_deletes_rows_older_than_retention_days(db_url):
    now = time.time()
    store = PostgresStore(db_url, retention_days=1.0, prune_interval_s=0.0)
    try:
        store.enqueue(row("old", now - 2 * 86400))
        store.enqueue(row("new", now))
        store.flush()
        assert wait_until(lambda: store.get("old") is None)  # pruned by the writer once the batch is in
        assert store.get("new") is not None
    finally:
        store.close()


# -- the password --------------------------------------------------------------------------------


def test_mask_url_hides_the_password_wherever_the_url_carries_one():
    assert mask_url("postgresql://u:s3cr%40t@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgres://u:p@ss@h/db") == "postgres://u:***@h/db"  # an unencoded @: masked whole
    assert mask_url("postgresql://h/db?sslmode=require&password=pw") == "postgresql://h/db?sslmode=require&password=***"
    assert mask_url("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


def test_describe_and_start_up_errors_never_show_the_password(postgres_server, db_url, caplog):
    store = PostgresStore(db_url)
    try:
        assert store.describe() == db_url.replace(PASSWORD, "***") and PASSWORD not in store.describe()
    finally:
        store.close()
    wrong = db_url.replace(PASSWORD, "Wrong-Pass-123")
    bad_escape = db_url.replace(PASSWORD, "Bad%ZZPass-456")  # the driver's parse error quotes this part
    with caplog.at_level(logging.DEBUG):
        for url, secret in ((wrong, "Wrong-Pass-123"), (bad_escape, "Bad%ZZPass-456")):
            with pytest.raises(StoreError) as refused:
                PostgresStore(url, connect_timeout_s=5)
            assert secret not in str(refused.value) and "***" in str(refused.value)
    assert not any(s in r.getMessage() for r in caplog.records for s in ("Wrong-Pass-123", "Bad%ZZPass-456"))


# -- selection: store.url ------------------------------------------------------------------------


def test_store_url_selects_postgres_and_path_sqlite_and_neither_no_store(db_url, tmp_path):
    chosen = open_store(StoreConfig(url=db_url))
    try:
        assert isinstance(chosen, PostgresStore) and chosen.describe().startswith("postgresql://")
    finally:
        chosen.close()
    sqlite = open_store(StoreConfig(path=str(tmp_path / "s.db")))
    assert isinstance(sqlite, SQLiteStore)
    sqlite.close()
    assert open_store(StoreConfig(path="")) is None


def test_sentinel_store_url_sets_store_url_and_a_bad_one_is_refused_without_echoing_it():
    url = "postgresql://u:Env-Secret-1@db.internal:5432/sentinel"
    assert load_config(environ={"SENTINEL_STORE_URL": url}).store.url == url
    with pytest.raises(ConfigError, match="store.url: must be a postgresql:// URL") as refused:
        load_config(environ={"SENTINEL_STORE_URL": "mysql://u:Env-Secret-2@h/db"})
    assert "Env-Secret-2" not in str(refused.value)


def test_without_the_postgres_extra_store_url_names_it(monkeypatch):
    monkeypatch.setattr(optional, "_missing", lambda modules: list(modules))
    with pytest.raises(ConfigError, match=r"entropy-sentinel\[postgres\]"):
        load_config(environ={"SENTINEL_STORE_URL": "postgresql://u:pw@h/db"})
    with pytest.raises(MissingExtra, match=r"entropy-sentinel\[postgres\]"):
        open_store(StoreConfig(url="postgresql://u:pw@h/db"))


# -- two proxies, one store ----------------------------------------------------------------------


async def ask(session: aiohttp.ClientSession, url: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/chat/completions", json=body, headers={"X-Sentinel-Slice": "tenant=t"}) as resp:
        await resp.read()
        assert resp.status == 200
        return resp.headers["X-Sentinel-Request-Id"]


async def label(session: aiohttp.ClientSession, root: str, request_id: str) -> int:
    async with session.post(root + "/sentinel/v1/feedback", json={"request_id": request_id, "correct": True}) as resp:
        await resp.read()
        return resp.status


def labels_counted(proxy) -> int:
    return proxy.app[MONITOR_KEY].slices.summary("tenant=t")["labels"]["n"]


async def test_two_proxies_on_one_store_take_each_label_once_whichever_replica_gets_it(db_url):
    store = {"url": db_url}
    async with (
        scripted_upstream(one_token_answer) as up,
        running_proxy(up.url, dialect="openai", store=store) as a,
        running_proxy(up.url, dialect="openai", store=store) as b,
        aiohttp.ClientSession() as session,
    ):
        served_by_a = await ask(session, a.url)
        await asyncio.to_thread(a.app[MONITOR_KEY].store.flush)  # committed (a second after the answer at most)
        via_b = [await label(session, b.root, served_by_a) for _ in range(2)]
        via_a = await label(session, a.root, served_by_a)  # still in A's memory: A must not take it again
        raced = await ask(session, b.url)
        await asyncio.to_thread(b.app[MONITOR_KEY].store.flush)
        racing = await asyncio.gather(*(label(session, p.root, raced) for p in (a, b) * 10))
        counted = labels_counted(a) + labels_counted(b)
        exported = {r["request_id"]: r for r in await asyncio.to_thread(a.app[MONITOR_KEY].store.export)}
    assert via_b == [200, 409] and via_a == 409
    assert sorted(racing) == [200] + [409] * 19
    assert counted == 2  # one per request, across both replicas
    assert {exported[served_by_a]["label"], exported[raced]["label"]} == {1}
    assert {exported[r]["slice"] for r in (served_by_a, raced)} == {"tenant=t"}


# -- bucket sums: the aggregate query against its reference ----------------------------------------


def test_bucket_sums_equal_the_reference_over_replay_on_every_replicas_rows(replicas):
    a, b = replicas
    bucket = 300
    edges = [600.0, 899.9999999999999, 900.0, 1200.0 - 1e-9, 0.1 * 3 * 1000]  # floats at bucket edges
    for i, ts in enumerate(edges):
        (a if i % 2 else b).enqueue(row(f"e{i}", ts, slice=f"tenant={'xy'[i % 2]}", p_correct_all=[0.1 * (i + 1), 0.3]))
    a.enqueue(row("none", 50.0, slice="tenant=z", scored=False, p_correct=None, p_correct_all=None))
    a.enqueue(row("empty", 950.0, slice="tenant=z", p_correct=None, p_correct_all=[]))
    a.flush()
    b.flush()
    assert a.try_label("e0", 1, ts=5000.0) and b.try_label("e1", 0, ts=100.0)  # a label before its request
    assert a.try_label("none", 1, ts=700.0)
    reference = sums_of_rows(a.replay(), 620.0, bucket)
    for store in (a, b):
        got = store.bucket_sums(620.0, bucket)
        assert [(s.slice, s.epoch) for s in got] == [(s.slice, s.epoch) for s in reference]
        assert got == [pytest.approx(s) for s in reference]
        assert all(isinstance(s.requests, int) and isinstance(s.sum_y, float) for s in got)
