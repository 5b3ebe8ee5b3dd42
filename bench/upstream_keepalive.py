#!/usr/bin/env python3
"""The keep-alive race with a real upstream, and what ``upstream.keepalive_timeout_s`` does to it.

llama-server (like vLLM's uvicorn) closes a keep-alive connection idle 5 s. A client that still pools it
and writes a request at that moment loses the request (connection reset): the proxy would answer 502,
and a load balancer in front would resend it to another replica (one client request, two stored rows).
For each pool setting this reuses connections after idle times around the upstream's close (4.990 to
5.020 s, 2 ms apart, in shuffled order, ``--workers`` connections at once) and counts the failures:
aiohttp's own default (15 s) against the proxy's (``upstream.keepalive_timeout_s``). Prints figures;
asserts nothing. Takes ~3 minutes (every sample waits 5 s).

    .venv/bin/python bench/upstream_keepalive.py [--url http://127.0.0.1:8080] [--workers 4]

Without ``--url`` it starts the embedded llama-server (Gemma 3 270M), as ``serve --upstream local`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

import aiohttp
from entropy_sentinel.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded_upstream import run_on_upstream

IDLES_S = [4.990 + 0.002 * i for i in range(16)]
BODY = {"prompt": "1+1=", "max_tokens": 1}


async def one_connection(url: str, keepalive_s: float, out: list[tuple[float, str]]) -> None:
    """One pooled connection: a request, an idle pause, a request on the same connection (if pooled)."""
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=keepalive_s)
    async with aiohttp.ClientSession(connector=connector) as session:
        for idle in random.sample(IDLES_S, len(IDLES_S)):
            async with session.post(url + "/v1/completions", json=BODY) as resp:
                await resp.read()
            await asyncio.sleep(idle)
            try:
                async with session.post(url + "/v1/completions", json=BODY) as resp:
                    await resp.read()
                    out.append((idle, str(resp.status)))
            except aiohttp.ClientError as exc:
                out.append((idle, type(exc).__name__))


async def run(url: str, workers: int) -> None:
    settings = {"aiohttp default": 15.0, "proxy default": load_config(environ={}).upstream.keepalive_timeout_s}
    print(f"{'pool keep-alive':>24} {'samples':>8} {'failed':>7}  failures (idle s: error)")
    for name, keepalive_s in settings.items():
        out: list[tuple[float, str]] = []
        await asyncio.gather(*(one_connection(url, keepalive_s, out) for _ in range(workers)))
        failed = sorted((round(idle, 3), what) for idle, what in out if what != "200")
        print(f"{name + f' ({keepalive_s:g} s)':>24} {len(out):>8} {len(failed):>7}  "
              f"{dict(Counter(failed)) or '-'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="an upstream's base URL (default: start the embedded one)")
    parser.add_argument("--workers", type=int, default=4, help="connections sampled at once")
    args = parser.parse_args()
    run_on_upstream(args.url, lambda url: run(url, args.workers))


if __name__ == "__main__":
    main()
