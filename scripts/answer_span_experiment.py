#!/usr/bin/env python3
"""Chat requests to a base model: does scoring only the answer span (the first line) fix the estimate? (issue 9)

Gemma 3 270M (the embedded default) is a base model: under the chat template it answers, then does
not end its turn and runs on to ``max_tokens`` ("multiple\\nlenameuser\\nYou answer exam"). The grader
reads the first line (the answer), the proxy's features read every token. This experiment asks
the same items of a few out-of-sample slices two ways, completion (the packaged few-shot prompt,
stop sequences) and chat (the packaged chat prompt: system message, exemplars as turns), straight
from llama-server with top-20 logprobs, and scores each response with the shipped estimator on

* ``whole``: every generated token (what the proxy scores today);
* ``first line``: the tokens up to the first one holding a line break (leading blank tokens
  skipped): the answer span of a one-line answer;

next to the graded truth. The per-token entropies, the statistics and the scorer are the proxy's
own (``signal.Trajectory``, ``ArtifactScorer``). Nothing is tuned; prints a table and writes no file.

    .venv/bin/python scripts/answer_span_experiment.py [--limit 150] [--upstream URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from entropy_sentinel.benchmarks.graders import grade
from entropy_sentinel.benchmarks.loader import load_benchmark
from entropy_sentinel.benchmarks.prompts import build_prompt
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.signal import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from embedded_upstream import run_on_upstream

SLICES = ("plural_common", "past_common", "city_country_top", "city_country_mid", "country_capital", "chain_sum_1d")
K = 20


def span_features(tokens: list[dict[str, Any]], first_line: bool) -> dict[str, dict[str, float]] | None:
    """The proxy's statistics (every entropy variant) of ``tokens`` (OpenAI chat logprobs entries),
    or of their first line."""
    if first_line:
        start = 0
        while start < len(tokens) and not tokens[start]["token"].strip():
            start += 1
        end = start
        while end < len(tokens) and "\n" not in tokens[end]["token"]:
            end += 1
        tokens = tokens[start:end] or tokens
    if not tokens:
        return None
    traj = Trajectory()
    counts = [len(t["top_logprobs"]) for t in tokens]
    flat = [c["logprob"] for t in tokens for c in t["top_logprobs"]]
    traj.add(counts, flat, [t["logprob"] for t in tokens])
    return traj.features_by_variant()


async def ask(session: aiohttp.ClientSession, url: str, item: Any, style: str) -> dict[str, Any] | None:
    prompt, extras = build_prompt(item, style)
    if style == "chat":
        body = {"messages": prompt, "logprobs": True, "top_logprobs": K}
        path = "/v1/chat/completions"
    else:
        body = {"prompt": prompt, "logprobs": K}
        path = "/v1/completions"
    async with session.post(url + path, json={**body, **extras, "temperature": 0}) as resp:
        if resp.status != 200:
            return None
        choice = (await resp.json())["choices"][0]
    text = choice["message"]["content"] if style == "chat" else choice["text"]
    tokens = (choice.get("logprobs") or {}).get("content") or []
    whole, line = span_features(tokens, False), span_features(tokens, True)
    if whole is None or line is None:
        return None
    return {"label": int(grade(item, text).correct), "whole": whole, "line": line, "n": len(tokens),
            "length": choice.get("finish_reason") == "length"}


async def run(url: str, limit: int) -> None:
    scorer = ArtifactScorer.load(resolve_artifact("builtin"))
    print(f"{limit} items per slice; the shipped estimator; median response length in tokens\n")
    print("| slice | style | true | whole: estimate | first line: estimate | tokens | cut at max_tokens |")
    print("|---|---|---|---|---|---|---|")
    errors: dict[tuple[str, str], list[float]] = {}
    async with aiohttp.ClientSession() as session:
        for name in SLICES:
            items = load_benchmark(name, limit=limit)
            for style in ("completion", "chat"):
                sem = asyncio.Semaphore(4)

                async def one(item: Any, style: str = style, sem: asyncio.Semaphore = sem) -> dict[str, Any] | None:
                    async with sem:
                        return await ask(session, url, item, style)

                rows = [r for r in await asyncio.gather(*(one(i) for i in items)) if r is not None]
                true = float(np.mean([r["label"] for r in rows]))
                whole = float(np.mean(scorer([r["whole"] for r in rows])))
                line = float(np.mean(scorer([r["line"] for r in rows])))
                for key, est in (("whole", whole), ("line", line)):
                    errors.setdefault((style, key), []).append(abs(est - true))
                print(f"| {name} | {style} | {true:.3f} | {whole:.3f} | {line:.3f} | "
                      f"{np.median([r['n'] for r in rows]):.0f} | {np.mean([r['length'] for r in rows]):.0%} |",
                      flush=True)
    print("\nmedian AEE over the slices:")
    for (style, key), errs in errors.items():
        print(f"  {style:10s} {key:5s} {np.median(errs):.3f}  (mean {np.mean(errs):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--upstream", default="", help="an OpenAI-compatible llama-server (default: the embedded one)")
    args = parser.parse_args()
    run_on_upstream(args.upstream, lambda url: run(url, args.limit))


if __name__ == "__main__":
    main()
