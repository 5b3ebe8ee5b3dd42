"""Graceful rollout (issue 13): on SIGTERM readiness goes false first (``/sentinel/readyz`` 503,
``/sentinel/healthz`` still 200), requests are still served for ``server.shutdown_delay_s``, then the
listener closes while in-flight streams run to their end (bounded by ``server.drain_timeout_s``),
the store is flushed and closed, and ``serve`` exits 0 (gateway/server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from entropy_sentinel.config import ConfigError, load_config
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.gateway import server
from entropy_sentinel.gateway.app import create_app
from entropy_sentinel.gateway.readiness import READINESS_KEY

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse, wait_serve_ready

TOP = [("4", -0.1), ("5", -2.5)]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "2+2"}]}
TOKEN = "admin-Secret-31c9"
STEPS, STEP_S = 10, 0.5  # the slow stream: 5 s, against a 1.5 s pre-drain delay


def slow_upstream(steps: int, step_s: float):
    async def handler(request: web.Request, up: Any) -> web.StreamResponse:
        if not request.path.endswith("completions"):
            return web.json_response({"object": "list", "data": []})
        if not (await request.json()).get("stream"):
            content = chat_chunk("4", TOP)["choices"][0]["logprobs"]["content"]
            return web.json_response({
                "id": "c", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                             "logprobs": {"content": content}, "finish_reason": "stop"}],
            })
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(steps):
            await resp.write(sse(chat_chunk("4", TOP, "stop" if i == steps - 1 else None)))
            await asyncio.sleep(step_s)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return handler


async def status_of(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.json()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def stored_ids(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT request_id FROM requests")}


async def test_sigterm_turns_readiness_false_first_serves_the_delay_then_drains_the_stream_and_exits_0(tmp_path):
    async with scripted_upstream(slow_upstream(STEPS, STEP_S)) as up:
        port, db = free_port(), tmp_path / "s.db"
        env = {**os.environ, "SENTINEL_SERVER_SHUTDOWN_DELAY_S": "1.5", "SENTINEL_SERVER_DRAIN_TIMEOUT_S": "20",
               "SENTINEL_UPSTREAM_DIALECT": "openai", "SENTINEL_ADMIN_TOKEN": TOKEN,
               "SENTINEL_STORE_FLUSH_INTERVAL_S": "30"}  # only the stop's flush can commit the records in time
        root = f"http://127.0.0.1:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entropy_sentinel", "serve", "--upstream", up.url, "--port", str(port),
            "--store", str(db), "--estimator", "none", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        log = asyncio.create_task(proc.stderr.read())  # read all along: a full pipe would stall the proxy
        try:
            async with aiohttp.ClientSession() as probes, aiohttp.ClientSession() as streams:
                await wait_serve_ready(probes, root, proc)
                assert await status_of(probes, root + "/sentinel/readyz") == (200, {"status": "ready"})
                async with streams.post(root + "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
                    assert stream.status == 200
                    stream_id = stream.headers["X-Sentinel-Request-Id"]
                    head = await stream.content.readuntil(b"\n\n")  # the stream is under way
                    signalled = time.monotonic()
                    proc.send_signal(signal.SIGTERM)

                    # readiness false first, without the admin token; liveness unchanged
                    while (ready := await status_of(probes, root + "/sentinel/readyz"))[0] == 200:
                        assert time.monotonic() - signalled < 1.0, "readyz still 200 a second after SIGTERM"
                        await asyncio.sleep(0.02)
                    assert ready[0] == 503 and ready[1]["status"] == "draining"
                    assert (await status_of(probes, root + "/sentinel/healthz"))[0] == 200
                    # the pre-drain delay: a new client on a new connection is still served in full
                    async with (
                        aiohttp.ClientSession() as late,
                        late.post(root + "/v1/chat/completions", json=CHAT) as resp,
                    ):
                        assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "4"
                        late_id = resp.headers["X-Sentinel-Request-Id"]
                    assert time.monotonic() - signalled < 1.5

                    # after the delay: new connections are refused while the stream still runs
                    while not await refused(port):
                        assert time.monotonic() - signalled < 4.0, "the listener stayed open past the delay"
                        await asyncio.sleep(0.05)
                    refused_at = time.monotonic() - signalled
                    assert refused_at >= 1.4 and proc.returncode is None
                    rest = await stream.content.read()
                    ended_at = time.monotonic() - signalled
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = (await log).decode(errors="replace")
    body = head + rest
    assert code == 0, text[-3000:]
    assert ended_at > refused_at + 1.0  # the stream outlived the listener: it was drained, not cut
    assert body.count(b"data: {") == STEPS
    assert b"\n: sentinel {" in body and body.endswith(b"data: [DONE]\n\n")
    assert body.index(b": sentinel") < body.index(b"data: [DONE]")
    assert stored_ids(db) == {stream_id, late_id}  # flushed at the stop (a batch would have waited 30 s)
    assert "listener closed" in text and "store flushed and closed" in text
    assert TOKEN not in text



async def test_a_stream_longer_than_drain_timeout_is_cancelled_and_the_stop_is_bounded():
    async with scripted_upstream(slow_upstream(steps=100, step_s=1.0)) as up:
        cfg = load_config(
            overrides={"server": {"drain_timeout_s": 0.5}, "upstream": {"dialect": "openai"}, "store": {"path": ""}},
            environ={},
        )
        app = create_app(cfg, up.url)
        runner, port = await server.start(app, cfg.server, port=0)
        readiness = app[READINESS_KEY]
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={**CHAT, "stream": True}) as stream,
        ):
            await stream.content.readuntil(b"\n\n")
            assert readiness.ready
            started = time.monotonic()
            await server.drain(runner, readiness, cfg.server)
            took = time.monotonic() - started
            with contextlib.suppress(aiohttp.ClientError):
                rest = await stream.content.read()
                assert b"[DONE]" not in rest
        await asyncio.wait_for(up.cancelled.wait(), 5)  # the upstream request was cancelled, not left running
    assert not readiness.ready and readiness.draining_since is not None
    assert 0.4 <= took < 3.0  # drain_timeout_s, then the cancellation: never the stream's 100 s
    assert await refused(port)


async def test_readyz_is_a_probe_outside_the_admin_token_and_healthz_stays_liveness():
    async with (
        scripted_upstream(slow_upstream(1, 0.0)) as up,
        running_proxy(up.url, dialect="openai", admin={"token": TOKEN}) as proxy,
        aiohttp.ClientSession() as session,
    ):
        assert await status_of(session, proxy.root + "/sentinel/readyz") == (200, {"status": "ready"})
        assert (await status_of(session, proxy.root + "/sentinel/v1/slices"))[0] == 401  # the control
        proxy.app[READINESS_KEY].drain()
        status, body = await status_of(session, proxy.root + "/sentinel/readyz")
        assert status == 503 and body["status"] == "draining" and body["draining_since"] <= time.time()
        assert (await status_of(session, proxy.root + "/sentinel/healthz"))[0] == 200


@pytest.mark.parametrize(("key", "value"), [("SHUTDOWN_DELAY_S", "-1"), ("DRAIN_TIMEOUT_S", "0"),
                                            ("DRAIN_TIMEOUT_S", "nan"), ("SHUTDOWN_DELAY_S", "inf")])
def test_the_stop_timings_are_validated(key, value):
    with pytest.raises(ConfigError, match=f"server.{key.lower()}"):
        load_config(environ={f"SENTINEL_SERVER_{key}": value})
    cfg = load_config(environ={})
    assert (cfg.server.shutdown_delay_s, cfg.server.drain_timeout_s) == (0.0, 30.0)
