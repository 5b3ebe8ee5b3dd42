#!/usr/bin/env python3
"""Bursts of concurrent requests to a freshly started embedded llama-server: its own ``--threads-http``
default against the one ``serve`` passes (``local.threads_http``, 0 = ``upstream.max_connections``).

With llama-server's default HTTP threads (max(slots + 2, cores - 1): 6 here), the first burst after a
start sometimes leaves about half of its requests waiting ~5 s (llama-server's keep-alive timeout) for
a thread, on an idle machine. Each round starts the server, sends bursts of 16 and 32 concurrent
2-token completions from a pooled client (as the proxy's pool sends them, ``upstream.keepalive_timeout_s``
4 s), twice each, and stops it; rounds alternate between the two settings. Prints, per setting, the
rounds with a stall, the requests slower than 4 s and the latency percentiles. Asserts nothing.
~20 s a round.

    .venv/bin/python bench/embedded_bursts.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
from entropy_sentinel.config import LocalUpstreamConfig, UpstreamConfig
from entropy_sentinel.embedded import LocalLlamaServer

STALL_S = 4.0
BODY = {"prompt": "1+1=", "max_tokens": 2}


class _OwnDefault(LocalLlamaServer):
    """The embedded server without ``--threads-http``: llama-server picks its own thread count."""

    def command(self, binary, model):  # type: ignore[no-untyped-def]
        argv = super().command(binary, model)
        at = argv.index("--threads-http")
        return argv[:at] + argv[at + 2 :]


async def bursts(url: str) -> list[float]:
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=UpstreamConfig.max_connections,
                                     keepalive_timeout=UpstreamConfig.keepalive_timeout_s)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> float:
            started = time.monotonic()
            async with session.post(url + "/v1/completions", json=BODY) as resp:
                await resp.read()
                resp.raise_for_status()
            return time.monotonic() - started

        for concurrency in (16, 16, 32, 32):
            latencies += await asyncio.gather(*(one() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="server starts per setting")
    args = parser.parse_args()
    shipped = LocalLlamaServer(LocalUpstreamConfig()).threads_http
    settings = {"llama-server default": _OwnDefault, f"shipped ({shipped} threads)": LocalLlamaServer}
    results: dict[str, list[list[float]]] = {name: [] for name in settings}
    for r in range(args.rounds):
        for name, kind in settings.items():
            server = kind(LocalUpstreamConfig())
            server.start()
            try:
                results[name].append(asyncio.run(bursts(server.url)))
            finally:
                server.stop()
            stalled = sum(t > STALL_S for t in results[name][-1])
            print(f"round {r + 1}/{args.rounds} {name}: {stalled} requests over {STALL_S:g} s", flush=True)
    print(f"\n{'setting':>28} {'rounds stalled':>15} {'requests > 4 s':>15} {'p50 s':>7} {'p99 s':>7} {'max s':>7}")
    for name, rounds in results.items():
        flat = sorted(t for one in rounds for t in one)
        stalled_rounds = sum(any(t > STALL_S for t in one) for one in rounds)
        slow = sum(t > STALL_S for t in flat)
        p50, p99 = flat[len(flat) // 2], flat[min(len(flat) - 1, int(len(flat) * 0.99))]
        print(f"{name:>28} {stalled_rounds:>9} of {len(rounds):<3} {slow:>8} of {len(flat):<5} "
              f"{p50:>7.2f} {p99:>7.2f} {flat[-1]:>7.2f}")


if __name__ == "__main__":
    main()
