#!/usr/bin/env python3
"""What ``store.durability: strict`` costs, next to ``batched``, in one run. Prints figures.

The scripted vLLM-shaped upstream and ``entropy-sentinel serve`` of bench/soak.py, a fresh proxy
and store per measurement, the two modes interleaved over ``--rounds`` rounds. Each measurement:
200 warm-up requests, ``--sequential`` requests one at a time (the latency a commit adds to a
request), ``--requests`` at concurrency ``--concurrency`` (requests/s), then kill -9 right after
the last answer and count the answered requests whose record is not in the file. Medians over the
rounds; the losses of every round.

    .venv/bin/python bench/durability.py             # ~2 minutes here
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import Load, drive, percentile, start_proxy, start_upstream, stop, stored

MODES = ("batched", "strict")


async def measure(upstream: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proxy = await start_proxy(upstream, Path(tmp), mode, args.estimator)
        load = Load()
        await drive(proxy.url, 200, args.concurrency, load)
        one = Load()
        await drive(proxy.url, args.sequential, 1, one, first=200)
        many = Load()
        wall = await drive(proxy.url, args.requests, args.concurrency, many, first=200 + args.sequential)
        await stop(proxy, signal.SIGKILL)
        ids = load.ids + one.ids + many.ids
        lost = len(ids) - stored(proxy.db, ids)
    return {
        "p50_ms": percentile(one.latencies, 0.5) * 1e3,
        "p99_ms": percentile(one.latencies, 0.99) * 1e3,
        "rps": args.requests / wall,
        "lost": lost,
        "answered": len(ids),
        "failed": load.failed + one.failed + many.failed,
    }


async def run(args: argparse.Namespace) -> None:
    runner, upstream = await start_upstream(args.tokens)
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            results[mode].append(await measure(upstream, mode, args))
    await runner.cleanup()
    print(f"{args.rounds} rounds; {args.sequential} sequential requests, {args.requests} at concurrency "
          f"{args.concurrency}; {args.tokens}-token responses, every other one streamed")
    print(f"{'mode':>8} {'sequential p50 ms':>18} {'p99 ms':>7} {'req/s':>6}  lost on kill -9 (of answered)")
    for mode in MODES:
        rows = results[mode]
        losses = ", ".join(f"{r['lost']:.0f}/{r['answered']:.0f}" for r in rows)
        failed = sum(r["failed"] for r in rows)
        print(f"{mode:>8} {statistics.median(r['p50_ms'] for r in rows):>18.2f} "
              f"{statistics.median(r['p99_ms'] for r in rows):>7.2f} {statistics.median(r['rps'] for r in rows):>6.0f}"
              f"  {losses}" + (f"  ({failed:.0f} failed)" if failed else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--estimator", default="builtin")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
