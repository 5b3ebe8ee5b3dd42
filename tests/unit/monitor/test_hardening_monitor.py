"""Issue 11 (hardening), the monitoring side: bounded metric series, scrapes off the event loop,
scored requests counted once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web
from entropy_sentinel.gateway.app import MONITOR_KEY
from entropy_sentinel.monitor.prometheus import PrometheusSink
from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import SliceRegistry
from prometheus_client import generate_latest

from tests.harness import running_proxy, scripted_upstream


def scored(slice_key: str, p: list[float], request_id: str = "r") -> RequestRecord:
    return RequestRecord(request_id=request_id, route="chat", slice=slice_key, status=200, scored=True, p_correct=p)


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# -- 13: scored requests are counted once, their choices explicitly ----------------------------------


def test_a_response_of_n_choices_counts_one_scored_response_and_n_choices():
    sink = PrometheusSink(SliceRegistry())
    sink.record_finished(scored("tenant=a", [0.25, 0.5, 0.75]))
    sink.record_finished(scored("tenant=a", [1.0]))
    text = generate_latest(sink.registry).decode()
    assert 'sentinel_scored_total{slice="tenant=a"} 2.0' in text
    assert 'sentinel_p_correct_count{slice="tenant=a"} 4.0' in text
    assert 'sentinel_p_correct_sum{slice="tenant=a"} 2.5' in text  # the estimate: 2.5 / 4, not 2.5 / 2
    assert 'sentinel_p_correct_distribution_count 4.0' in text


# -- 4: per-slice series do not multiply; the scrape is rendered off the loop -------------------------


def test_no_histogram_bucket_carries_a_slice_label():
    registry = SliceRegistry(max_slices=100)
    sink = PrometheusSink(registry)
    for i in range(100):
        key = registry.admit(f"tenant=t{i}")
        registry.record_request(key)
        registry.record_score(key, 0.5)
        sink.record_finished(scored(key, [0.5]))
    lines = samples(generate_latest(sink.registry).decode())
    assert not [line for line in lines if "_bucket{" in line and "slice=" in line]
    per_slice = [line for line in lines if 'slice="tenant=t7"' in line]
    # requests, scored (+created), p_correct sum/count (+created), 9 estimate gauges: no buckets
    assert len(per_slice) <= 16, per_slice
    assert len(lines) <= 16 * 100 + 50


async def test_a_scrape_of_1000_slices_does_not_stall_the_loop():
    async def unused(request: web.Request, up) -> web.Response:
        return web.json_response({})

    async with scripted_upstream(unused) as up, running_proxy(up.url, dialect="openai") as proxy:
        monitor = proxy.app[MONITOR_KEY]
        (sink,) = [s for s in monitor.sinks if isinstance(s, PrometheusSink)]
        for i in range(1000):
            key = monitor.slices.admit(f"tenant=t{i}")
            monitor.slices.record_request(key)
            monitor.slices.record_score(key, 0.5)
            sink.record_finished(scored(key, [0.5], request_id=str(i)))
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session, session.get(proxy.root + "/sentinel/metrics") as resp:
            text = await resp.text()
        scrape = time.perf_counter() - started
        stop.set()
        await task
    assert resp.status == 200 and 'slice="tenant=t999"' in text
    # rendered on the loop, the longest gap would be the whole rendering (most of the scrape)
    assert max(gaps) < max(scrape / 2, 0.05), (max(gaps), scrape)
