#!/usr/bin/env python3
"""What one upstream answer costs the proxy, piece by piece (issue 12). Prints figures; asserts nothing.

On the bytes bench/throughput.py's upstream sends (real vLLM events, 256 streamed tokens with top-20
candidates each, ~1.7 KB an event; or one 256-token top-20 chat.completion body, ~360 KB), in this
process, the least of several repeats of each piece of the fast path (gateway/logprob_cut.py), next
to the whole of it: msgspec decoding the answer while skipping its ``logprobs`` value, decoding that
value into the 20 candidates, flattening them, locating and cutting the span, the trajectory's numpy
batches, the features of every entropy variant; for the non-streamed body, the whole in one pass (as
shipped) and in two (the answer skipping ``logprobs``, then them). What the pieces leave of the whole is Python
glue (calls, allocation, a colder cache than each piece's own loop). The collector is set as ``serve``
sets it.
The sum is the floor of what a pure-Python proxy that reads every candidate adds to a byte pipe.

    .venv/bin/python bench/event_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from entropy_sentinel.gateway import logprob_cut as cut  # noqa: E402
from entropy_sentinel.gateway.gc_tuning import settle_heap  # noqa: E402
from entropy_sentinel.gateway.sse import encode_data  # noqa: E402
from entropy_sentinel.gateway.wire import ChoiceExtractor, plan_logprobs  # noqa: E402
from entropy_sentinel.signal import Trajectory  # noqa: E402
from replay_upstream import STAMP_DIGITS, stream_events, unary_body  # noqa: E402

TOKENS = 256


def best_us(fn: Callable[[], object], per: int, repeats: int, loops: int) -> float:
    """The least mean time of ``fn`` over ``repeats`` runs of ``loops`` calls, in µs per ``per`` items."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best / per * 1e6


def streamed(repeats: int) -> None:
    events = [head + b"0" * STAMP_DIGITS + tail for head, tail in stream_events(TOKENS)]
    datas = [event[len(b"data: ") : -2] for event in events]
    plan = plan_logprobs({"messages": [], "stream": True}, "chat")
    assert plan is not None
    answers = [cut._ANSWER.decode(d) for d in datas]
    raws = [a.choices[0].logprobs for a in answers]  # type: ignore[index]
    blocks_in = [cut._LOGPROBS.decode(r) for r in raws]
    blocks = [cut._block(b) for b in blocks_in]
    spans = [cut._spans(d, [r]) for d, r in zip(datas, raws, strict=True)]

    def whole() -> None:
        extractor = ChoiceExtractor(plan)
        for d in datas:
            result = cut.fast_process(d, extractor)
            encode_data(result.payload)  # type: ignore[union-attr]
        len(extractor.trajectories[0])  # the last batch

    def trajectory() -> None:
        traj = Trajectory()
        for b in blocks:
            traj.add(*b)  # type: ignore[misc]
        len(traj)

    pieces = {
        "decode the answer, skipping logprobs": lambda: [cut._ANSWER.decode(d) for d in datas],
        "decode the 20 candidates": lambda: [cut._LOGPROBS.decode(r) for r in raws],
        "flatten them (_block)": lambda: [cut._block(b) for b in blocks_in],
        "locate the span (_spans)": lambda: [cut._spans(d, [r]) for d, r in zip(datas, raws, strict=True)],
        "cut it out (_cut)": lambda: [cut._cut(d, s, False) for d, s in zip(datas, spans, strict=True)],  # type: ignore[arg-type]
        "trajectory (numpy batches of 64)": trajectory,
        "SSE framing (encode_data)": lambda: [encode_data(d) for d in datas],
    }
    print(f"streamed: {TOKENS} events of {len(datas[0])} bytes, µs per event (least of {repeats} repeats)")
    total = best_us(whole, TOKENS, repeats, 20)
    parts = 0.0
    for name, fn in pieces.items():
        us = best_us(fn, TOKENS, repeats, 20)
        parts += us
        print(f"  {name:40s} {us:6.2f}")
    print(f"  {'glue (whole - pieces)':40s} {total - parts:6.2f}")
    print(f"  {'whole fast path + framing':40s} {total:6.2f}")


def unary(repeats: int) -> None:
    body = unary_body(TOKENS)
    answer = cut._ANSWER.decode(body)
    raw = answer.choices[0].logprobs  # type: ignore[index]
    block_in = cut._LOGPROBS.decode(raw)
    block = cut._block(block_in)
    traj = Trajectory()
    traj.add(*block)  # type: ignore[misc]
    len(traj)
    plan = plan_logprobs({"messages": []}, "chat")
    assert plan is not None

    def whole() -> None:
        extractor = ChoiceExtractor(plan)
        cut.fast_process(body, extractor)
        extractor.trajectories[0].features_by_variant()

    def trajectory() -> None:
        t = Trajectory()
        t.add(*block)  # type: ignore[misc]
        len(t)

    pieces = {
        "decode the answer, skipping logprobs": lambda: cut._ANSWER.decode(body),
        "decode the candidates": lambda: cut._LOGPROBS.decode(raw),
        "flatten them (_block)": lambda: cut._block(block_in),
        "locate and cut the span": lambda: cut._cut(body, cut._spans(body, [raw]), False),  # type: ignore[arg-type]
        "trajectory": trajectory,
        "features, all 4 variants": traj.features_by_variant,
    }
    print(f"\nnon-streamed: one {TOKENS}-token top-20 body of {len(body) // 1024} KiB, µs per response")
    for name, fn in pieces.items():
        print(f"  {name:40s} {best_us(fn, 1, repeats, 30):8.1f}")
    shipped = cut.ONE_PASS_MIN_BYTES
    print(f"  {'whole fast path + features, one pass':40s} {best_us(whole, 1, repeats, 30):8.1f}")
    cut.ONE_PASS_MIN_BYTES = len(body) + 1  # the answer decoded twice: skipping logprobs, then them
    try:
        print(f"  {'the same in two passes':40s} {best_us(whole, 1, repeats, 30):8.1f}")
    finally:
        cut.ONE_PASS_MIN_BYTES = shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    settle_heap()  # the collector as `serve` sets it
    streamed(args.repeats)
    unary(args.repeats)


if __name__ == "__main__":
    main()
