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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded_upstream import run_on_upstream

ROOT = Path(__file__).resolve().parents[1]

MESSAGE = {"model": "gemma-3-270m", "max_tokens": 2, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"prompt": "1+1=", "max_tokens": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def start_serve(src: str, config: Path, upstream: str, port: int, tmp: Path, name: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "entropy_sentinel", "serve", "--config", str(config), "--upstream", upstream,
           "--port", str(port), "--store", str(tmp / f"{name}.db")]
    with open(tmp / f"{name}.log", "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": src})


async def ready(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited ({proc.returncode}) during start-up")
            try:
                async with session.get(url + "/sentinel/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("serve did not become ready")


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
            proc = start_serve(src, config, upstream, port, Path(tmp), name)
            try:
                url = f"http://127.0.0.1:{port}"
                await ready(url, proc)
                messages, completions = await load(url, args.clients, args.rounds)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
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
