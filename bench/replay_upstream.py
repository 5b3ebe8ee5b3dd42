#!/usr/bin/env python3
"""A scripted vLLM-shaped upstream for bench/throughput.py: replays real vLLM bytes, fast.

* ``POST /v1/chat/completions`` with ``"stream": true``: 256 chat.completion.chunk events of one
  token each with top-20 logprobs (~1.7 KB each: the token events of the captured vLLM stream
  ``tests/fixtures/vllm/chat_stream.forced.json``, cycled), the last with ``finish_reason: length``,
  then ``data: [DONE]``. Every event is written on its own, as vLLM writes them. Each event's ``id``
  carries the upstream's send time (``chatcmpl-`` + 20 digits of ``time.monotonic_ns()``, the same
  width every time), so a client can tell each token's latency through a proxy. The request header
  ``X-Bench-Gap-Ms`` paces the tokens (default 0: as fast as the socket takes them).
* the same without ``stream``: one 256-token top-20 chat.completion body (~400 KB).
* ``GET /v1/models``: the captured vLLM listing (so a proxy detects the vLLM dialect).

Whatever the request asks for, the answer is the same forced top-20 one: this is what the upstream
behind entropy-sentinel sends; a byte pipe relays it as it is.

    python bench/replay_upstream.py --port 8001 [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import orjson
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vllm"
ID_PREFIX = b'"id":"chatcmpl-'
STAMP_DIGITS = 20


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def stream_events(tokens: int) -> list[tuple[bytes, bytes]]:
    """The token events as (bytes up to the stamp, bytes after it), the last one finishing."""
    raw = [e for e in _fixture("chat_stream.forced.json")["body"].split("\n\n") if e]
    chunks = [orjson.loads(e[len("data: "):]) for e in raw if e.startswith("data: {")]
    token_chunks = [c for c in chunks if c["choices"] and c["choices"][0].get("logprobs")]
    out = []
    for i in range(tokens):
        chunk = dict(token_chunks[i % len(token_chunks)])
        choice = dict(chunk["choices"][0])
        choice["finish_reason"] = "length" if i == tokens - 1 else None
        chunk["choices"] = [choice]
        chunk["id"] = "chatcmpl-" + "0" * STAMP_DIGITS
        event = b"data: " + orjson.dumps(chunk) + b"\n\n"
        cut = event.index(ID_PREFIX) + len(ID_PREFIX)
        out.append((event[:cut], event[cut + STAMP_DIGITS:]))
    return out


def unary_body(tokens: int) -> bytes:
    body = orjson.loads(_fixture("chat.forced.json")["body"])
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    choice["logprobs"]["content"] = [content[i % len(content)] for i in range(tokens)]
    choice["message"]["content"] = "".join(t["token"] for t in choice["logprobs"]["content"])
    body["usage"]["completion_tokens"] = tokens
    return orjson.dumps(body)


def make_app(tokens: int) -> web.Application:
    events = stream_events(tokens)
    unary = unary_body(tokens)
    models = (FIXTURES / "models.json").read_bytes()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body.get("stream") is not True:
            return web.Response(body=unary, content_type="application/json")
        gap = float(request.headers.get("X-Bench-Gap-Ms", "0")) / 1000
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await resp.prepare(request)
        for i, (head, tail) in enumerate(events):
            if gap and i:
                await asyncio.sleep(gap)
            await resp.write(head + b"%020d" % time.monotonic_ns() + tail)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def list_models(request: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", list_models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    web.run_app(make_app(args.tokens), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
