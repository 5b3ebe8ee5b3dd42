#!/usr/bin/env python3
"""Streams on routes the proxy forwards without reading them (llama-server's ``/v1/messages``), and
what they do to the requests that follow through the proxy's upstream pool.

llama-server drops its connection after every streamed answer without ``Connection: close``. Each
``entropy-sentinel serve`` (this checkout's, or the source trees given with ``--sentinel NAME=DIR``)
runs in front of the same llama-server with a small upstream pool (``upstream.max_connections``,
default 2, so a dropped connection is soon handed on); ``--clients`` concurrent clients each send
``--rounds`` times a streamed ``/v1/messages`` (2 tokens) then a unary ``/v1/completions`` (1 token).
Prints, per proxy, how many of each were not answered 200. Asserts nothing.

    .venv/bin/python bench/forwarded_stream_close.py [--url http://127.0.0.1:8080] \\
        [--sentinel before=/tmp/before/proxy --sentinel after=proxy]

Without ``--url`` it starts the embedded llama-server (Gemma 3 270M), as ``serve --upstream local`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded_upstream import run_on_upstream
from throughput import free_port, start

ROOT = Path(__file__).resolve().parents[1]

MESSAGE = {"model": "gemma-3-270m", "max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"prompt": "1+1=", "max_tokens": 1}


async def load(url: str, clients: int, rounds: int) -> tuple[int, int]:
    failed = {"messages": 0, "completions": 0}

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in range(rounds):
            async with session.post(url + "/v1/messages", json=MESSAGE) as resp:
                await resp.read()
                failed["messages"] += resp.status != 200
            async with session.post(url + "/v1/completions", json=COMPLETION) as resp:
                await resp.read()
                failed["completions"] += resp.status != 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return failed["messages"], failed["completions"]


async def run(upstream: str, args: argparse.Namespace) -> None:
    trees = [tuple(s.split("=", 1)) for s in args.sentinel] or [("entropy-sentinel", str(ROOT / "proxy"))]
    n = args.clients * args.rounds
    print(f"{args.clients} clients x {args.rounds}: a streamed /v1/messages, then a /v1/completions; "
          f"upstream.max_connections {args.max_connections}\n")
    print("| proxy | message streams not 200 | completions not 200 |\n|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        config = Path(tmp) / "sentinel.yaml"
        config.write_text(f"upstream:\n  max_connections: {args.max_connections}\n")
        for name, src in trees:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "entropy_sentinel", "serve", "--config", str(config), "--upstream", upstream,
                   "--port", str(port), "--store", str(Path(tmp) / f"{name}.db")]
            proc = await asyncio.to_thread(start, cmd, url + "/sentinel/readyz", Path(tmp) / f"{name}.log",
                                           {**os.environ, "PYTHONPATH": src})
            try:
                messages, completions = await load(url, args.clients, args.rounds)
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 30)
            print(f"| {name} | {messages} of {n} | {completions} of {n} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="a llama-server (default: the embedded one, started for the run)")
    parser.add_argument("--sentinel", action="append", default=[], metavar="NAME=DIR",
                        help="entropy-sentinel from source tree DIR (a proxy/ folder); repeatable")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--max-connections", type=int, default=2)
    args = parser.parse_args()
    run_on_upstream(args.url, lambda url: run(url, args))


if __name__ == "__main__":
    main()
