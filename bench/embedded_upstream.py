"""The upstream a bench talks to: the URL it was given, or the embedded llama-server started for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from entropy_sentinel.config import LocalUpstreamConfig
from entropy_sentinel.embedded import LocalLlamaServer


def run_on_upstream(url: str, run: Callable[[str], Awaitable[None]]) -> None:
    """``run(base_url)`` against ``url`` (without ``/v1``), or, when it is empty, against the embedded
    llama-server (Gemma 3 270M) started as ``serve --upstream local`` starts it, and stopped after."""
    if url:
        asyncio.run(run(url.rstrip("/").removesuffix("/v1")))
        return
    server = LocalLlamaServer(LocalUpstreamConfig())
    server.start()
    try:
        asyncio.run(run(server.url))
    finally:
        server.stop()
