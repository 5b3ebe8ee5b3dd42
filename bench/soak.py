#!/usr/bin/env python3
"""Soak: ``entropy-sentinel serve`` as a real process under a long run of requests, then stopped.

Starts a scripted vLLM-shaped upstream in this process (``GET /v1/models`` owned by vllm; chat
completions of ``--tokens`` tokens with top-20 logprobs, streamed or not), then the proxy in its
own process (``python -m entropy_sentinel serve``, built-in estimator, a fresh SQLite store). Sends
``--requests`` chat requests at ``--concurrency`` (every other one streamed, ten slices, the client
asking for no logprobs), reads every answer to its last byte, then stops the proxy with
``--signal`` (TERM: a clean stop; KILL: kill -9 right after the last answer) and counts the stored
rows against the request ids the clients received. Prints: requests done and failed, records
stored / sent / lost, the proxy's RSS and open fds when its port opened, after the warm-up
(``--warmup`` requests) and after each quarter of the rest. (RSS grows until the in-memory window
of ``server.recent_requests`` = 10,000 records is full, then should stay flat.) Asserts nothing.

    .venv/bin/python bench/soak.py --requests 20000 --concurrency 16           # ~2 minutes here
    .venv/bin/python bench/soak.py --requests 2000 --signal KILL               # the batched bound
    .venv/bin/python bench/soak.py --requests 2000 --signal KILL --durability strict
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
TOP = [(f" t{i}", math.log(0.6 / (i + 1) ** 1.5)) for i in range(20)]
CHAT = {"model": "soak-model", "messages": [{"role": "user", "content": "2+2"}], "max_tokens": 32}


# -- the scripted upstream -----------------------------------------------------------------------
def _token(i: int) -> dict:
    token, logprob = TOP[i % 3]
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in TOP]}


def upstream_app(tokens: int) -> web.Application:
    """vLLM's shapes: a chat.completion, or chat.completion.chunk events then ``[DONE]``."""
    entries = [_token(i) for i in range(tokens)]
    unary = orjson.dumps({
        "id": "chatcmpl-soak", "object": "chat.completion", "created": 1, "model": "soak-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(e["token"] for e in entries)},
                     "logprobs": {"content": entries}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
    })
    events = [
        b"data: " + orjson.dumps({
            "id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 1, "model": "soak-model",
            "choices": [{"index": 0, "delta": {"content": e["token"]}, "logprobs": {"content": [e]},
                         "finish_reason": "length" if i == tokens - 1 else None}],
        }) + b"\n\n"
        for i, e in enumerate(entries)
    ]

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=unary, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "soak-model", "object": "model",
                                                             "owned_by": "vllm", "max_model_len": 4096}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


async def start_upstream(tokens: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(upstream_app(tokens), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


# -- the proxy process ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proxy:
    proc: asyncio.subprocess.Process
    url: str
    db: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


async def start_proxy(upstream: str, folder: Path, durability: str, estimator: str) -> Proxy:
    port, db = free_port(), folder / "soak.db"
    env = {**os.environ, "SENTINEL_STORE_DURABILITY": durability, "PYTHONPATH": str(ROOT / "proxy")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entropy_sentinel", "serve", "--upstream", upstream, "--port", str(port),
        "--store", str(db), "--estimator", estimator, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    proxy = Proxy(proc, f"http://127.0.0.1:{port}", db)
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):
            if proc.returncode is not None:
                raise SystemExit(f"the proxy exited during start-up ({proc.returncode})")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(proxy.url + "/sentinel/healthz") as resp:
                    if resp.status == 200:
                        return proxy
            await asyncio.sleep(0.1)
    raise SystemExit("the proxy did not open its port in 120 s")


async def stop(proxy: Proxy, sig: signal.Signals) -> int | None:
    proxy.proc.send_signal(sig)
    try:
        return await asyncio.wait_for(proxy.proc.wait(), 60)
    except TimeoutError:
        proxy.proc.kill()
        return await proxy.proc.wait()


def stored(db: Path, ids: list[str]) -> int:
    """How many of ``ids`` the store file holds (read as a new process would)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TEMP TABLE sent (request_id TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO sent VALUES (?)", [(i,) for i in ids])
        return conn.execute("SELECT COUNT(*) FROM requests JOIN sent USING (request_id)").fetchone()[0]


# -- the load --------------------------------------------------------------------------------------
@dataclass
class Load:
    ids: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failed: int = 0


async def one_request(session: aiohttp.ClientSession, url: str, i: int, load: Load) -> None:
    body = {**CHAT, "stream": i % 2 == 1}
    headers = {"X-Sentinel-Slice": f"tenant=t{i % 10}"}
    t0 = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
            data = await resp.read()
            ok = resp.status == 200 and (not body["stream"] or data.endswith(b"data: [DONE]\n\n"))
            request_id = resp.headers.get("X-Sentinel-Request-Id")
    except aiohttp.ClientError:
        ok, request_id = False, None
    load.latencies.append(time.perf_counter() - t0)
    if ok and request_id:
        load.ids.append(request_id)
    else:
        load.failed += 1


async def drive(url: str, n: int, concurrency: int, load: Load, first: int = 0) -> float:
    """``n`` requests, ``concurrency`` at a time; the wall seconds they took."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, first + n):
        queue.put_nowait(i)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                await one_request(session, url, queue.get_nowait(), load)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


async def soak(args: argparse.Namespace) -> None:
    upstream_runner, upstream = await start_upstream(args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        t_start = time.perf_counter()
        proxy = await start_proxy(upstream, Path(tmp), args.durability, args.estimator)
        print(f"proxy pid {proxy.proc.pid} up in {time.perf_counter() - t_start:.1f} s "
              f"(durability {args.durability}, estimator {args.estimator})")
        snapshots = [("port open", proxy.rss_mb(), proxy.fds())]
        load = Load()
        await drive(proxy.url, args.warmup, args.concurrency, load)
        await asyncio.sleep(1.0)  # the clients' connections closed: the proxy has reaped them
        snapshots.append((f"after {args.warmup} warm-up", proxy.rss_mb(), proxy.fds()))
        wall, sent, parts = 0.0, args.warmup, 4
        for part in range(parts):  # the main run in quarters, a snapshot after each
            n = (args.requests - args.warmup) * (part + 1) // parts - (sent - args.warmup)
            wall += await drive(proxy.url, n, args.concurrency, load, first=sent)
            sent += n
            if part < parts - 1 or args.signal == "TERM":  # (a kill comes right after the last answer)
                await asyncio.sleep(1.0)
            snapshots.append((f"after {sent}", proxy.rss_mb(), proxy.fds()))
        code = await stop(proxy, signal.Signals[f"SIG{args.signal}"])
        rows = stored(proxy.db, load.ids)
    await upstream_runner.cleanup()
    done = len(load.ids)
    print(f"requests: {done + load.failed} sent, {done} answered 200 to the last byte, {load.failed} failed "
          f"({(args.requests - args.warmup) / wall:.0f} req/s at concurrency {args.concurrency}, "
          f"p50 {percentile(load.latencies, 0.5) * 1e3:.1f} ms, p99 {percentile(load.latencies, 0.99) * 1e3:.1f} ms)")
    print(f"SIG{args.signal} -> exit {code}; records stored {rows} of {done} answered: {done - rows} lost")
    for name, rss, fds in snapshots:
        print(f"  {name:>22}: RSS {rss:6.1f} MB, {fds} open fds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per response")
    parser.add_argument("--signal", choices=("TERM", "KILL"), default="TERM")
    parser.add_argument("--durability", choices=("batched", "strict"), default="batched")
    parser.add_argument("--estimator", default="builtin", help="builtin (scores every response) or none")
    asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    main()
