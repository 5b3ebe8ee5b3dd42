#!/usr/bin/env python3
"""llama-server drops its connection after a streamed answer without saying so (no ``Connection:
close``), and what asking for ``Connection: close`` on streams (the llama.cpp dialect's
``closes_after_stream``) does to the request that follows on the pooled connection.

One pooled connection (so the next request always gets the stream's connection, as a busy proxy's pool
sometimes does), ``--pairs`` times: a streamed 2-token completion, then a unary one. Prints how many of
the unary requests failed, and with which error, without and with the header. Asserts nothing.

    .venv/bin/python bench/upstream_stream_close.py [--url http://127.0.0.1:8080] [--pairs 100]

Without ``--url`` it starts the embedded llama-server (Gemma 3 270M), as ``serve --upstream local`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedded_upstream import run_on_upstream


async def run(url: str, pairs: int) -> None:
    for close in (False, True):
        failed: Counter[str] = Counter()
        said = None
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for _ in range(pairs):
                headers = {"Connection": "close"} if close else {}
                body = {"prompt": "1+1=", "max_tokens": 2, "stream": True}
                async with session.post(url + "/v1/completions", json=body, headers=headers) as resp:
                    await resp.read()
                    said = resp.headers.get("Connection")
                try:
                    async with session.post(url + "/v1/completions", json={"prompt": "1+1=", "max_tokens": 1}) as resp:
                        await resp.read()
                except aiohttp.ClientError as exc:
                    failed[type(exc).__name__] += 1
        name = "streams with Connection: close" if close else "streams pooled as answered"
        print(f"{name:>32}: the stream's Connection header {said!r}; next request failed "
              f"{sum(failed.values())} of {pairs} {dict(failed) or ''}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="", help="an upstream's base URL (default: start the embedded one)")
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    run_on_upstream(args.url, lambda url: run(url, args.pairs))


if __name__ == "__main__":
    main()
