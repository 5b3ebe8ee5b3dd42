#!/usr/bin/env python3
"""How much latency does the proxy add? Prints figures; asserts nothing.

1. CPU cost of the streaming rewrite per event (one token with 20 candidates, vLLM/llama.cpp shape),
   for a client that asked for no logprobs (the common case: parse, extract, strip, dump).
2. CPU cost of a non-streaming response of 512 tokens.
3. End to end over loopback against a scripted upstream that streams 256 tokens 2 ms apart (faster
   than any real server): time to first token and total time, direct vs through the proxy.

    .venv/bin/python bench/overhead.py [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from entropy_sentinel.gateway.instrumented import Instrumenter, _StreamRelay
from entropy_sentinel.gateway.logprob_cut import fast_process
from entropy_sentinel.gateway.wire import ChoiceExtractor, plan_logprobs
from entropy_sentinel.monitor.records import RecentRecords, RequestRecord

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse

TOP = [(f"t{i}", math.log(0.5 / (i + 1))) for i in range(20)]


def bench_stream_events(n: int = 20_000) -> float:
    plan = plan_logprobs({"messages": [], "stream": True}, "chat")
    owner = Instrumenter(upstream=None, records=RecentRecords(10))  # type: ignore[arg-type]
    relay = _StreamRelay(owner, plan, RequestRecord("bench", "chat"))
    event = sse(chat_chunk("tok", TOP))[:-2]
    t0 = time.perf_counter()
    for _ in range(n):
        relay.rewrite([event])
    asyncio.run(relay.close())  # features of all n tokens, as at the end of a stream
    return (time.perf_counter() - t0) / n


def bench_unary(tokens: int = 512, reps: int = 50) -> float:
    content = chat_chunk("tok", TOP)["choices"][0]["logprobs"]["content"] * tokens
    body = orjson.dumps({"choices": [{"index": 0, "message": {"content": "x"}, "logprobs": {"content": content}}]})
    t0 = time.perf_counter()
    for _ in range(reps):  # what the proxy does: the fast path (logprob_cut), features of every variant
        plan = plan_logprobs({"messages": []}, "chat")
        extractor = ChoiceExtractor(plan)
        assert fast_process(body, extractor) is not None
        extractor.trajectories[0].features_by_variant()
    return (time.perf_counter() - t0) / reps


async def bench_end_to_end(tokens: int, runs: int, gap_ms: float) -> dict[str, float]:
    import aiohttp

    async def instant(request, up):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(tokens):
            await resp.write(sse(chat_chunk("tok", TOP, "length" if i == tokens - 1 else None)))
            if gap_ms:
                await asyncio.sleep(gap_ms / 1000)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    body = {"model": "m", "messages": [{"role": "user", "content": "go"}], "stream": True,
            "logprobs": True, "top_logprobs": 20}
    results: dict[str, list[tuple[float, float]]] = {"direct": [], "proxy": []}
    async with (
        scripted_upstream(instant) as up,
        running_proxy(up.url, dialect="openai") as proxy,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(runs):
            for name, url in (("direct", up.url + "/v1"), ("proxy", proxy.url)):
                t0 = time.perf_counter()
                ttft = None
                async with session.post(url + "/chat/completions", json=body) as resp:
                    async for _line in resp.content:
                        if ttft is None:
                            ttft = time.perf_counter() - t0
                results[name].append((ttft or 0.0, time.perf_counter() - t0))
    out = {}
    for name, rows in results.items():
        out[f"{name}_ttft_ms"] = statistics.median(r[0] for r in rows) * 1e3
        out[f"{name}_total_ms"] = statistics.median(r[1] for r in rows) * 1e3
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--gap-ms", type=float, default=2.0,
                        help="pause between upstream tokens (real servers: 10-30 ms; 0 = one burst, which the "
                             "proxy then rewrites as one chunk before the first byte leaves)")
    args = parser.parse_args()
    per_event = bench_stream_events()
    print(f"stream rewrite, 1 token x 20 candidates, client wants no logprobs: {per_event * 1e6:.1f} us/event")
    print(f"non-stream rewrite + features, 512 tokens x 20 candidates: {bench_unary() * 1e3:.2f} ms/response")
    e2e = asyncio.run(bench_end_to_end(args.tokens, args.runs, args.gap_ms))
    print(f"end to end, {args.tokens}-token stream, {args.gap_ms} ms between upstream tokens (median of {args.runs}):")
    print(f"  TTFT   direct {e2e['direct_ttft_ms']:.2f} ms   proxy {e2e['proxy_ttft_ms']:.2f} ms")
    print(f"  total  direct {e2e['direct_total_ms']:.2f} ms   proxy {e2e['proxy_total_ms']:.2f} ms"
          f"   (+{(e2e['proxy_total_ms'] - e2e['direct_total_ms']) / args.tokens * 1e3:.0f} us/token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
