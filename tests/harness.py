"""Test harness: the proxy in-process on a free port, and a scripted upstream for fault injection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from entropy_sentinel.config import load_config
from entropy_sentinel.gateway.app import RECORDS_KEY, create_app
from entropy_sentinel.monitor.records import RecentRecords


@dataclass
class RunningProxy:
    url: str  # base URL, ends with /v1
    app: web.Application

    @property
    def records(self) -> RecentRecords:
        return self.app[RECORDS_KEY]

    @property
    def root(self) -> str:
        return self.url[: -len("/v1")]


@contextlib.asynccontextmanager
async def running_proxy(upstream_url: str, **overrides: dict[str, Any]) -> AsyncIterator[RunningProxy]:
    cfg = load_config(overrides=overrides, environ={})
    app = create_app(cfg, upstream_url)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield RunningProxy(url=f"http://127.0.0.1:{port}/v1", app=app)
    finally:
        await runner.cleanup()


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


Handler = Callable[[web.Request, "ScriptedUpstream"], Awaitable[web.StreamResponse]]


@dataclass
class ScriptedUpstream:
    """An aiohttp server whose every answer a test scripts; it records what it received."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        try:
            return await self.handler(request, self)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@contextlib.asynccontextmanager
async def scripted_upstream(handler: Handler) -> AsyncIterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream._dispatch)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


def chat_chunk(content: str, top: list[tuple[str, float]] | None, finish: str | None = None) -> dict[str, Any]:
    """A chat.completion.chunk the way vLLM and llama.cpp send one token."""
    logprobs = None
    if top is not None:
        logprobs = {
            "content": [
                {
                    "token": content,
                    "logprob": top[0][1],
                    "bytes": list(content.encode()),
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top],
                }
            ]
        }
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "scripted",
        "choices": [{"index": 0, "delta": {"content": content}, "logprobs": logprobs, "finish_reason": finish}],
    }


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else orjson.dumps(obj)) + b"\n\n"
