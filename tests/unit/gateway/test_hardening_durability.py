"""Issue 11.16: ``store.durability: strict`` commits a request's record before the response's last
byte, so a kill -9 right after the last answer loses no record; ``batched`` (the default) keeps the
fire-and-forget queue, whose bound (``store.flush_interval_s``) the README documents."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from entropy_sentinel.config import ConfigError, load_config
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.gateway import instrumented
from entropy_sentinel.gateway.admin import MONITOR_KEY
from entropy_sentinel.monitor.memory_store import MemoryStore

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse

TOP = [("4", -0.1), ("5", -2.5)]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "2+2"}]}
BULK = {"X-Sentinel-Slice": "tenant=bulk"}  # sampled at 0: forwarded untouched (gateway/forward.py)
#: the four ways an instrumented route answers: rewritten or forwarded, unary (Content-Length) or streamed
KINDS = [("unary", {}), ("stream", {}), ("unary", BULK), ("stream", BULK)]


async def answer(request: web.Request, up: Any) -> web.StreamResponse:
    """A vLLM-shaped chat completion (two tokens with logprobs), streamed when asked."""
    if not request.path.endswith("completions"):
        return web.json_response({"object": "list", "data": []})
    if (await request.json()).get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for token, finish in (("4", None), (".", "stop")):
            await resp.write(sse(chat_chunk(token, TOP, finish)))
        await resp.write(b"data: [DONE]\n\n")
        return resp
    content = chat_chunk("4", TOP)["choices"][0]["logprobs"]["content"] * 2
    return web.json_response({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4."},
                     "logprobs": {"content": content}, "finish_reason": "stop"}],
    })


async def ask(session: aiohttp.ClientSession, url: str, kind: str, headers: dict[str, str]) -> str:
    """One request, read to its last byte; its request id."""
    body = {**CHAT, "stream": kind == "stream"}
    async with session.post(f"{url}/chat/completions", json=body, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200
        return resp.headers["X-Sentinel-Request-Id"]


def stored(path: Path, ids: list[str]) -> set[str]:
    """Which of ``ids`` another process reading the file sees committed now."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        marks = ",".join("?" * len(ids))
        return {row[0] for row in conn.execute(f"SELECT request_id FROM requests WHERE request_id IN ({marks})", ids)}


def store_cfg(path: Path, durability: str) -> dict[str, Any]:
    # a batch would wait 30 s: whatever is committed when the answer arrives was committed for it
    return {"store": {"path": str(path), "durability": durability, "flush_interval_s": 30.0},
            "monitor": {"slice_sample_rates": {"tenant=bulk": 0.0}}}


@pytest.mark.parametrize(("kind", "headers"), KINDS, ids=["unary", "stream", "forwarded-unary", "forwarded-stream"])
async def test_strict_commits_the_record_before_the_last_byte(tmp_path, kind, headers):
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai", **store_cfg(tmp_path / "s.db", "strict")) as proxy,
        aiohttp.ClientSession() as session,
    ):
        request_id = await ask(session, proxy.url, kind, headers)
        assert stored(tmp_path / "s.db", [request_id]) == {request_id}
        record = proxy.records.get(request_id)
        assert record is not None and record.status == 200
        assert record.scored is (not headers)  # the bulk slice really was forwarded unscored


async def test_batched_answers_without_waiting_for_the_commit(tmp_path):
    """The control: the same requests under the default leave their records queued (the batch is
    30 s away), which is what a kill -9 can lose."""
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai", **store_cfg(tmp_path / "s.db", "batched")) as proxy,
        aiohttp.ClientSession() as session,
    ):
        ids = [await ask(session, proxy.url, kind, headers) for kind, headers in KINDS]
        assert stored(tmp_path / "s.db", ids) == set()
    assert stored(tmp_path / "s.db", ids) == set(ids)  # a clean stop drains the queue


class SlowOrFailingStore(MemoryStore):
    """Commits that fail, or never finish."""

    def __init__(self, outcome: bool | None) -> None:
        super().__init__()
        self.outcome = outcome

    def flushed(self) -> Future[bool]:
        done: Future[bool] = Future()
        if self.outcome is not None:
            done.set_result(self.outcome)
        return done


@pytest.mark.parametrize("outcome", [False, None], ids=["commit-failed", "commit-hangs"])
async def test_strict_still_answers_when_the_commit_fails_or_hangs(tmp_path, monkeypatch, caplog, outcome):
    monkeypatch.setattr(instrumented, "COMMIT_TIMEOUT_S", 0.3)
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai", **store_cfg(tmp_path / "s.db", "strict")) as proxy,
        aiohttp.ClientSession() as session,
    ):
        proxy.app[MONITOR_KEY].store = SlowOrFailingStore(outcome)
        with caplog.at_level(logging.ERROR, logger="entropy_sentinel.gateway.instrumented"):
            for kind, headers in KINDS:
                await asyncio.wait_for(ask(session, proxy.url, kind, headers), 10)
    failures = [r for r in caplog.records if "store.durability strict" in r.getMessage()]
    assert len(failures) == len(KINDS)


def test_durability_is_validated():
    assert load_config(overrides={"store": {"durability": "strict"}}, environ={}).store.durability == "strict"
    assert load_config(environ={}).store.durability == "batched"
    with pytest.raises(ConfigError, match="store.durability"):
        load_config(overrides={"store": {"durability": "sometimes"}}, environ={})
    with pytest.raises(ConfigError, match="store.durability"):
        load_config(environ={"SENTINEL_STORE_DURABILITY": "fsync"})


async def test_strict_loses_no_record_to_a_kill_9_right_after_the_last_answer(tmp_path):
    """``entropy-sentinel serve`` in its own process, strict, 80 requests of the four kinds 8 at a
    time; SIGKILL as soon as the last answer is read: every one of them is in the file."""
    config = tmp_path / "sentinel.yaml"
    config.write_text("monitor:\n  slice_sample_rates: {tenant=bulk: 0.0}\n")
    async with scripted_upstream(answer) as up:
        port, db = free_port(), tmp_path / "s.db"
        env = {**os.environ, "SENTINEL_STORE_DURABILITY": "strict", "SENTINEL_STORE_FLUSH_INTERVAL_S": "30",
               "SENTINEL_UPSTREAM_DIALECT": "openai"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entropy_sentinel", "serve", "--config", str(config), "--upstream", up.url,
            "--port", str(port), "--store", str(db), "--estimator", "none", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            async with aiohttp.ClientSession() as session:
                await wait_until_up(session, f"http://127.0.0.1:{port}/sentinel/healthz", proc)
                gate = asyncio.Semaphore(8)

                async def one(i: int) -> str:
                    async with gate:
                        kind, headers = KINDS[i % len(KINDS)]
                        return await ask(session, url, kind, headers)

                ids = await asyncio.gather(*(one(i) for i in range(80)))
                proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 30) == -signal.SIGKILL
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert len(set(ids)) == 80
    assert stored(db, ids) == set(ids)


async def wait_until_up(session: aiohttp.ClientSession, healthz: str, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):
        assert proc.returncode is None, "serve exited during start-up"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(healthz) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError("serve did not open its port within 60 s")
