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
async def served(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """``app`` on a free loopback port for the block; yields its base URL (``http://127.0.0.1:PORT``)."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class ConstantScorer:
    """A scorer that answers ``p`` for every choice: any score that appears comes from the proxy's
    decision to score, and which proxy scored is told by its constant."""

    metadata: dict = {}

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, rows: list[Any]) -> list[float]:
        return [self.p] * len(rows)

    def check_model(self, ids: list[str]) -> None:
        return None


async def one_token_answer(request: web.Request, up: Any) -> web.Response:
    """A unary chat completion of the token "4" with two candidates, from the model "scripted"."""
    top = [{"token": "4", "logprob": -0.5, "bytes": []}, {"token": "5", "logprob": -1.5, "bytes": []}]
    return web.json_response(
        {
            "id": "c", "object": "chat.completion", "created": 1, "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop",
                         "logprobs": {"content": [{"token": "4", "logprob": -0.5, "top_logprobs": top}]}}],
        }
    )


@contextlib.asynccontextmanager
async def running_proxy(
    upstream_url: str, dialect: str = "auto", scorer: Any = None, **overrides: dict[str, Any]
) -> AsyncIterator[RunningProxy]:
    """The proxy in-process. Scripted upstreams pass their dialect (no ``/v1/models`` probe to script)."""
    overrides = {
        **overrides,
        "upstream": {"dialect": dialect, **overrides.get("upstream", {})},
        "store": {"path": "", **overrides.get("store", {})},  # tests that want a store pass a path
    }
    cfg = load_config(overrides=overrides, environ={})
    app = create_app(cfg, upstream_url, scorer=scorer)
    async with served(app, handler_cancellation=True, access_log=None) as base:
        yield RunningProxy(url=f"{base}/v1", app=app)


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
    async with served(app, handler_cancellation=True) as upstream.url:
        yield upstream


async def wait_serve_ready(session: Any, root: str, proc: asyncio.subprocess.Process, timeout_s: float = 60.0) -> None:
    """Wait until a ``serve`` subprocess answers ``/sentinel/readyz`` with 200 (it must not exit meanwhile)."""
    import aiohttp

    for _ in range(int(timeout_s * 10)):
        assert proc.returncode is None, "serve exited during start-up"
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(root + "/sentinel/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"serve did not open its port within {timeout_s:.0f} s")


def get_json(url: str) -> Any:
    """GET a JSON document synchronously (for tests that drive a proxy in another process)."""
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


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


@dataclass
class RecordingRelay:
    """Sits between the proxy and a real upstream and keeps every request body it relays:
    evidence of what the upstream really received."""

    target: str
    bodies: list[Any] = field(default_factory=list)
    url: str = ""

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        import aiohttp

        body = await request.read()
        with contextlib.suppress(ValueError):
            self.bodies.append(orjson.loads(body) if body else None)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(request.method, self.target + request.raw_path, data=body, headers=headers) as up,
        ):
            drop = ("content-length", "transfer-encoding")
            resp = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in drop},
            )
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp


@contextlib.asynccontextmanager
async def recording_relay(target: str) -> AsyncIterator[RecordingRelay]:
    relay = RecordingRelay(target.rstrip("/"))
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", relay._relay)
    async with served(app) as relay.url:
        yield relay


def assert_same(got: Any, want: Any, tol: float, path: str = "$") -> None:
    """Exact equality, except that floats may differ by ``tol`` (logprobs; see the llama.cpp test)."""
    if isinstance(want, float) and isinstance(got, float):
        assert abs(got - want) <= tol, f"{path}: {got} != {want}"
    elif isinstance(want, dict) and isinstance(got, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], tol, f"{path}.{key}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), f"{path}: {len(got)} items != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, tol, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"
