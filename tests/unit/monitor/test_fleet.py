"""Replicas that agree (issue 13): with a shared PostgreSQL store every replica's
``/sentinel/v1/slices`` gives the fleet's estimates, intervals and labels (monitor/fleet.py), and
``report --db postgresql://...`` reads every replica's records; with SQLite the view stays the
replica's own, and says so.

The PostgreSQL cases run against a real server (the ``postgres_server`` fixture, tests/postgres_server.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from entropy_sentinel.cli import main as cli_main
from entropy_sentinel.config import ConfigError, load_config
from entropy_sentinel.gateway.app import MONITOR_KEY
from entropy_sentinel.monitor.fleet import FleetView, is_shared, rebuild
from entropy_sentinel.monitor.memory_store import MemoryStore
from entropy_sentinel.monitor.slices import BUCKET_S, SliceRegistry, restore_since
from entropy_sentinel.report.data import ReportError, records_from_db

from tests.harness import ConstantScorer, one_token_answer, running_proxy, scripted_upstream
from tests.postgres_server import PASSWORD

# -- the pure part: sums in, registry out ----------------------------------------------------------


def stored_row(request_id: str, ts: float, key: str, ps: list[float] | None) -> dict[str, Any]:
    return {
        "request_id": request_id, "ts": ts, "slice": key, "route": "chat", "model": "m", "status": 200,
        "scored": ps is not None, "p_correct": ps[0] if ps else None, "p_correct_all": ps, "features": None,
        "tokens": 1, "latency_s": 0.1, "prompt": None, "completion": None,
    }


def test_rebuild_equals_replaying_every_row_and_keeps_the_settings():
    now = 1_000_000.0
    store = MemoryStore()
    rows = [
        ("r0", now - 3 * 86400, "tenant=a", [0.9]),  # before the day's buckets: lifetime only
        ("r1", now - 4000, "tenant=a", [0.2, 0.4]),  # outside 1 h, inside 24 h
        ("r2", now - 10, "tenant=b", [0.7]),
        ("r3", now - 5, "tenant=c", None),  # unscored: a request, no score
        ("r4", now - 1, "tenant=d", [0.5]),  # past max_slices: counted as "other"
    ]
    for request_id, ts, key, ps in rows:
        store.enqueue(stored_row(request_id, ts, key, ps))
    store.try_label("r1", 1, ts=now - 2)
    store.try_label("r2", 0, ts=now - 1)
    settings = SliceRegistry(max_slices=3, level=0.8, tau=0.05, min_labels=1)
    got = rebuild(settings, store.bucket_sums(restore_since(now), BUCKET_S))
    want = settings.empty_copy()
    for ts, key, ps, p, label, label_ts in store.replay():
        want.replay(want.admit(key), ts, ps, p, label, label_ts)
    assert (got.max_slices, got.level, got.tau, got.min_labels) == (3, 0.8, 0.05, 1)
    assert sorted(got.counters) == ["other", "tenant=a", "tenant=b", "tenant=c"]
    assert _same(got.snapshot(now), want.snapshot(now))
    assert not settings.counters  # the template is never written to
    life = got.summary("tenant=a", now)["windows"]
    assert (life["lifetime"]["requests"], life["24h"]["requests"], life["1h"]["requests"]) == (2, 1, 0)


def _same(got: Any, want: Any) -> bool:
    """Equal, floats to 1e-9 (sums taken in another order)."""
    if isinstance(want, float) and isinstance(got, float):
        assert got == pytest.approx(want, abs=1e-9)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want)
        for key in want:
            _same(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            _same(g, w)
    else:
        assert got == want
    return True


class FlakyStore(MemoryStore):
    """Fails its aggregate read on demand, with the URL's password in the error (as a driver might)."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.reads = 0

    def bucket_sums(self, since: float, bucket_s: int):
        self.reads += 1
        if self.fail:
            raise OSError(f"could not connect to postgresql://u:{PASSWORD}@db/x")
        return super().bucket_sums(since, bucket_s)

    def redact(self, error: BaseException) -> str:
        return f"{type(error).__name__}: {str(error).replace(PASSWORD, '***')}"


async def test_the_view_is_swapped_whole_each_refresh_and_a_failed_one_keeps_the_last(caplog):
    store = FlakyStore()
    store.enqueue(stored_row("r1", time.time(), "tenant=a", [0.6]))
    view = FleetView(store, SliceRegistry(), refresh_s=0.05)
    assert is_shared(store) and not is_shared(MemoryStore()) and not is_shared(None)
    await view.refresh()
    first, first_at = view.registry, view.refreshed_at
    assert first is not None and first.summary("tenant=a")["windows"]["lifetime"]["requests"] == 1
    store.enqueue(stored_row("r2", time.time(), "tenant=a", [0.4]))
    assert first.summary("tenant=a")["windows"]["lifetime"]["requests"] == 1  # a served view never changes
    task = asyncio.create_task(view.run())
    for _ in range(100):
        if view.registry is not first:
            break
        await asyncio.sleep(0.02)
    second = view.registry
    assert second is not first and second.summary("tenant=a")["windows"]["lifetime"]["requests"] == 2
    assert view.refreshed_at > first_at
    store.fail = True
    caplog.set_level(logging.WARNING)
    reads = store.reads
    for _ in range(100):
        if view.failures >= 2:
            break
        await asyncio.sleep(0.02)
    assert view.failures >= 2 and store.reads > reads
    assert view.registry is second  # still served
    assert "refresh failed" in caplog.text and PASSWORD not in caplog.text and "***" in caplog.text
    view.stop()
    await asyncio.wait_for(task, 2)


class SlowStore(MemoryStore):
    shared = True

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s, self.reads = delay_s, 0

    def bucket_sums(self, since: float, bucket_s: int):
        self.reads += 1
        time.sleep(self.delay_s)  # in the view's worker thread
        return super().bucket_sums(since, bucket_s)


async def test_a_slow_refresh_spaces_out_the_next_ones_and_never_blocks_the_loop():
    store = SlowStore(0.1)
    view = FleetView(store, SliceRegistry(), refresh_s=0.01)
    task = asyncio.create_task(view.run())
    ticks = 0
    started = time.monotonic()
    while time.monotonic() - started < 1.2:
        await asyncio.sleep(0.01)  # the loop keeps turning while queries run in the thread
        ticks += 1
    view.stop()
    await asyncio.wait_for(task, 2)
    # each refresh 0.1 s, then a wait of >= 0.3 s: about 3 in 1.2 s (12 without the backoff)
    assert 2 <= store.reads <= 4
    assert view.took_s >= 0.1 and view.scope()["refresh_took_s"] >= 0.1
    assert ticks > 50


# -- two proxies on one PostgreSQL database ------------------------------------------------------------


async def ask(session: aiohttp.ClientSession, url: str, key: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/chat/completions", json=body, headers={"X-Sentinel-Slice": key}) as resp:
        await resp.read()
        assert resp.status == 200
        return resp.headers["X-Sentinel-Request-Id"]


async def post_label(session: aiohttp.ClientSession, root: str, request_id: str, correct: bool) -> int:
    async with session.post(root + "/sentinel/v1/feedback", json={"request_id": request_id, "correct": correct}) as r:
        await r.read()
        return r.status


async def slices_of(session: aiohttp.ClientSession, root: str) -> dict[str, Any]:
    async with session.get(root + "/sentinel/v1/slices") as resp:
        assert resp.status == 200
        return await resp.json()


def by_slice(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["slice"]: s for s in view["slices"]}


def total_requests(view: dict[str, Any]) -> int:
    return sum(s["windows"]["lifetime"]["requests"] for s in view["slices"])


@pytest.fixture
def db_url(postgres_server, tmp_path: Path) -> str:
    return postgres_server.database(tmp_path.name)


async def test_every_replica_serves_the_fleets_slices_and_report_reads_every_replicas_records(
    db_url, tmp_path, capsys, caplog
):
    caplog.set_level(logging.INFO)
    fleet = {"store": {"url": db_url, "flush_interval_s": 0.05}, "monitor": {"fleet_refresh_s": 0.2,
                                                                             "min_labels": 2}}
    own = {"store": {"url": db_url}, "monitor": {"fleet_refresh_s": 0.0}}
    async with (
        scripted_upstream(one_token_answer) as up,
        running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8), **fleet) as a,
        running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.3), **fleet) as b,
        running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.5), **own) as c,
        aiohttp.ClientSession() as session,
    ):
        before = await slices_of(session, a.root)
        served_by_a = [await ask(session, a.url, "tenant=x") for _ in range(3)]
        served_by_b = [await ask(session, b.url, "tenant=x") for _ in range(5)]
        served_by_b += [await ask(session, b.url, "tenant=y") for _ in range(2)]
        for proxy in (a, b):
            await asyncio.to_thread(proxy.app[MONITOR_KEY].store.flush)
        # labels posted to the replica that did not serve the request
        assert await post_label(session, b.root, served_by_a[0], True) == 200
        assert await post_label(session, a.root, served_by_b[0], False) == 200
        deadline = time.monotonic() + 15
        while True:
            views = [await slices_of(session, p.root) for p in (a, b)]
            labelled = [by_slice(v).get("tenant=x", {}).get("labels", {}).get("n") for v in views]
            if all(total_requests(v) == 10 for v in views) and labelled == [2, 2]:
                break
            assert time.monotonic() < deadline, f"the fleet view never caught up: {views}"
            await asyncio.sleep(0.1)
        replica_view = await slices_of(session, c.root)
        own_share = a.app[MONITOR_KEY].slices.summary("tenant=x")["windows"]["lifetime"]["requests"]
    va, vb = views
    assert before["scope"] == "fleet" and total_requests(before) == 0
    assert va["scope"] == vb["scope"] == "fleet" and va["refresh_s"] == 0.2
    assert time.time() - 15 < va["refreshed_at"] <= time.time()
    assert replica_view["scope"] == "replica" and replica_view["refreshed_at"] is None
    assert own_share == 3  # the replica's own counters: its share only (what /slices showed before)
    assert va["slices"] == vb["slices"]  # the replicas agree, to the last digit
    x, y = by_slice(va)["tenant=x"], by_slice(va)["tenant=y"]
    life = x["windows"]["lifetime"]
    assert (life["requests"], life["n_scored"]) == (8, 8)
    assert life["estimate"] == pytest.approx((3 * 0.8 + 5 * 0.3) / 8)
    assert life["lower"] < life["estimate"] < life["upper"]
    assert x["windows"]["1h"]["requests"] == 8
    assert x["labels"]["n"] == 2 and x["labels"]["estimate"] == pytest.approx(0.5)
    assert x["recalibrated"] is not None  # min_labels 2: the labels of both replicas count
    assert y["windows"]["lifetime"]["requests"] == 2 and y["windows"]["lifetime"]["estimate"] == pytest.approx(0.3)

    # report --db postgresql://...: every replica's records, the same lifetime figures as the fleet view
    out = tmp_path / "report"
    assert await asyncio.to_thread(cli_main, ["report", "--db", db_url, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rx = {s["slice"]: s for s in report["slices"]}["tenant=x"]
    assert rx["requests"] == 8 and rx["labels"]["n"] == 2
    assert rx["estimate"]["estimate"] == pytest.approx(life["estimate"])
    assert rx["estimate"]["lower"] == pytest.approx(life["lower"]) and rx["estimate"]["upper"] == pytest.approx(
        life["upper"]
    )
    assert sum(s["requests"] for s in report["slices"]) == 10
    assert report["source"].endswith("/" + db_url.rsplit("/", 1)[1]) and "***" in report["source"]
    printed = capsys.readouterr()
    for text in (printed.out, printed.err, caplog.text, *(p.read_text(errors="replace") for p in out.glob("*.*")
                                                          if p.suffix in (".json", ".html", ".csv"))):
        assert PASSWORD not in text


def test_report_db_url_errors_name_the_problem_without_the_password(postgres_server, tmp_path):
    empty = postgres_server.database(tmp_path.name + "_empty")
    with pytest.raises(ReportError, match="no sentinel_requests table") as err:
        records_from_db(empty)
    assert PASSWORD not in str(err.value)
    wrong = empty.replace(PASSWORD, PASSWORD + "x")
    with pytest.raises(ReportError, match="reading postgresql://") as err:
        records_from_db(wrong)
    assert PASSWORD not in str(err.value)


async def test_a_sqlite_store_serves_the_replicas_own_counters_and_says_so(tmp_path):
    async with (
        scripted_upstream(one_token_answer) as up,
        running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8), store={"path": str(tmp_path / "s.db")})
        as proxy,
        aiohttp.ClientSession() as session,
    ):
        await ask(session, proxy.url, "tenant=x")
        view = await slices_of(session, proxy.root)
    assert view["scope"] == "replica" and view["refreshed_at"] is None
    assert by_slice(view)["tenant=x"]["windows"]["lifetime"]["requests"] == 1  # at once: no refresh to wait for


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_fleet_refresh_s_is_validated(value):
    with pytest.raises(ConfigError, match="monitor.fleet_refresh_s"):
        load_config(environ={"SENTINEL_MONITOR_FLEET_REFRESH_S": value})
    assert load_config(environ={}).monitor.fleet_refresh_s == 15.0
