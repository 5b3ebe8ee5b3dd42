"""Hostile and broken requests (issue 11: defects 1, 5, 8, 9, 10, 14, 15), against a scripted upstream.

Raw sockets wherever a client library would clean the request up (paths, bytes, pacing); the real
``openai`` client wherever its view matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web
from entropy_sentinel.config import ConfigError, load_config
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.gateway import server
from entropy_sentinel.gateway.app import RECORDS_KEY, create_app
from entropy_sentinel.gateway.paths import unsafe_path
from multidict import CIMultiDict

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse

SECRET = "sk-HARDENING-SECRET-9d1e"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "2+2"}]}
TOP = [("4", -0.1), ("5", -2.5)]


# -- helpers ---------------------------------------------------------------------------------------
async def answer(request: web.Request, up: Any) -> web.StreamResponse:
    """A chat completion, or a stream of one, for whatever the proxy sends; other routes get JSON."""
    if not request.path.endswith("completions"):
        return web.json_response({"object": "list", "data": []})
    if (await request.json()).get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chat_chunk("4", TOP, "stop")) + b"data: [DONE]\n\n")
        return resp
    return web.json_response(
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "logprobs": None,
                      "finish_reason": "stop"}]}
    )


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 exchange: (status, headers, body); status 0 when the server only closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), wait)
    except ConnectionResetError:
        raw = b""
    finally:
        writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    if not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def request_bytes(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  raw_headers: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return head.encode() + raw_headers + b"\r\n" + body


def assert_openai_error(body: bytes, code: str | None = None) -> dict[str, Any]:
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code
    return error


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key=SECRET, max_retries=0)


@contextlib.asynccontextmanager
async def served(upstream_url: str, **server_cfg: Any) -> AsyncIterator[tuple[str, web.Application, Any]]:
    """The proxy started the way ``serve`` starts it (``gateway.server``: the connection gate)."""
    cfg = load_config(overrides={"server": server_cfg, "upstream": {"dialect": "openai"}, "store": {"path": ""}},
                      environ={})
    app = create_app(cfg, upstream_url)
    runner, port = await server.start(app, cfg.server, port=0)
    try:
        yield f"http://127.0.0.1:{port}/v1", app, runner
    finally:
        await runner.cleanup()


# -- 1: nothing outside /v1/ is ever forwarded -----------------------------------------------------
TRAVERSALS = [
    "/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/%2E%2E/metrics", "/v1/.%2e/metrics", "/v1/../../etc/passwd",
    "/v1/../sentinel/metrics", "/v1/%2e%2e/sentinel/v1/export", "/v1/..%2fmetrics", "/v1/%2e%2e%2Fmetrics",
    "/v1/models/..", "/v1/%2e%2e", "/v1/./models", "/v1/a/../../metrics", "/v1/..\\metrics", "/v1/x%5c..%5cmetrics",
    "/v1/x%00", "http://evil.example/v1/models", "//evil.example/../v1/models",
]


@pytest.mark.parametrize("target", TRAVERSALS)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_paths_that_could_resolve_outside_v1_are_404_and_never_forwarded(target, method):
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        data = request_bytes(method, target, b"{}" if method == "POST" else b"")
        status, headers, body = await exchange(port_of(proxy.url), data)
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert_openai_error(body, "invalid_url")
    assert up.seen == []


async def test_plain_paths_are_forwarded_exactly_as_routed():
    targets = ["/v1/models?after=../../x", "/v1/files/file-a..b/content", "/v1//models", "/v1/models#../.."]
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        for target in targets:
            status, _, _ = await exchange(port_of(proxy.url), request_bytes("GET", target))
            assert status == 200
    assert [s.path_qs for s in up.seen] == [
        "/v1/models?after=../../x", "/v1/files/file-a..b/content", "/v1//models", "/v1/models",
    ]


def test_unsafe_path_rules():
    assert not unsafe_path("/v1/chat/completions?x=/../")
    assert not unsafe_path("/v1/a.b/...c/%2e%2e%2e")  # dots inside a segment are a name, not a step
    assert unsafe_path("/v1/%2E./x") and unsafe_path("*") and unsafe_path("https://h/v1/x")


# -- 5: nothing a client sent is logged raw --------------------------------------------------------
MALFORMED = [
    f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nBad Header: y\r\n\r\n".encode(),
    f"GET /v1/models?api_key={SECRET} HTTP/1.1 trailing\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    .encode(),
    f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nX: {'a' * 9000}\r\n\r\n".encode(),
    f"POST /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".encode(),
    f"G\x00T /v1/models HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\n\r\n".encode(),
    f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer x\r\n Folded: {SECRET}\r\n\r\n".encode(),
    f"{SECRET} / HTTP/1.1\r\n\r\n".encode(),
]


async def test_malformed_requests_never_put_the_key_in_a_log_line(caplog):
    caplog.set_level(logging.DEBUG)
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        for data in MALFORMED:
            status, _, _ = await exchange(port_of(proxy.url), data)
            assert status == 400
    assert SECRET not in caplog.text
    assert not any(SECRET in str(r.msg) or SECRET in repr(r.args) or r.exc_info for r in caplog.records)
    logged = [r for r in caplog.records if r.name in ("entropy_sentinel.gateway.http", "aiohttp.server")]
    assert logged, "a malformed request is still logged (its type and place, not its content)"
    assert all(r.levelno <= logging.WARNING for r in logged)  # the client's fault, not an error of ours


async def test_an_unexpected_exception_is_a_500_in_openai_shape_and_its_message_is_not_logged(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError(f"boom with {SECRET}")

    monkeypatch.setattr("entropy_sentinel.gateway.instrumented.plan_logprobs", broken)
    monkeypatch.setattr("entropy_sentinel.gateway.admin.spread_of", broken)
    caplog.set_level(logging.DEBUG)
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        with pytest.raises(openai.InternalServerError) as err:
            await client(proxy.url).chat.completions.create(**CHAT)
        async with aiohttp.ClientSession() as session, session.get(proxy.root + "/sentinel/v1/slices") as resp:
            assert resp.status == 500
            assert_openai_error(await resp.read(), "internal_error")
    assert err.value.body["code"] == "internal_error" and err.value.body["type"] == "server_error"
    assert proxy.records.get(err.value.response.headers["X-Sentinel-Request-Id"]) is not None
    assert up.seen == []
    assert SECRET not in caplog.text
    assert "RuntimeError" in caplog.text


# -- 8: unparseable bodies are 400s; every error of the proxy's own is OpenAI's JSON ---------------
BAD_BODIES = {
    "lone surrogate": b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
    "lone low surrogate in a key": b'{"model": "m", "\\udc00": 1, "messages": []}',
    "deep arrays": b'{"model": "m", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "deep objects": b'{"a":' * 2000 + b"1" + b"}" * 2000,
    "NaN": b'{"model": "m", "temperature": NaN, "messages": []}',
    "beyond a double": b'{"model": "m", "temperature": 1e400, "messages": []}',
    "not UTF-8": b'{"model": "m\xff", "messages": []}',
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
async def test_unparseable_bodies_are_400_in_openai_shape_with_the_request_id(name, route):
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        status, headers, body = await exchange(port_of(proxy.url), request_bytes("POST", route, BAD_BODIES[name]))
        record = proxy.records.get(headers.get("x-sentinel-request-id", ""))
    assert status == 400, body
    assert_openai_error(body, "invalid_json")
    assert record is not None and record.scored is False
    assert up.seen == []


async def test_a_body_nested_deeper_than_orjson_writes_is_forwarded_rewritten_not_a_500():
    body = {**CHAT, "metadata": {"x": orjson.loads(b"[" * 300 + b"]" * 300)}}  # orjson reads it, cannot write it
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        status, _, _ = await exchange(
            port_of(proxy.url), request_bytes("POST", "/v1/chat/completions", json.dumps(body).encode())
        )
    assert status == 200
    assert up.seen[0].json()["top_logprobs"] == 20


async def test_too_large_bodies_are_413_in_openai_shape_on_every_route():
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]}
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai",
                                                              server={"max_body_mb": 0.001}) as proxy:
        with pytest.raises(openai.APIStatusError) as err:
            await client(proxy.url).chat.completions.create(**big)
        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url + "/embeddings", json={"input": "x" * 4000}) as resp:
                forwarded = resp.status, await resp.read()
            async with session.post(proxy.root + "/sentinel/v1/feedback", json={"x": "y" * 4000}) as resp:
                feedback = resp.status, await resp.read()
    assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
    assert proxy.records.get(err.value.response.headers["X-Sentinel-Request-Id"]) is not None
    for status, body in (forwarded, feedback):
        assert status == 413
        assert_openai_error(body, "request_too_large")
    assert up.seen == []


async def test_aiohttp_level_404_and_405_are_openai_json():
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai") as proxy,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(proxy.root + "/nowhere") as resp:
            assert resp.status == 404
            assert_openai_error(await resp.read(), "unknown_url")
        async with session.post(proxy.root + "/sentinel/healthz") as resp:
            assert resp.status == 405 and "GET" in resp.headers["Allow"]
            assert_openai_error(await resp.read(), "method_not_allowed")


# -- 9: an upstream's X-Sentinel-* headers never reach the client ----------------------------------
SPOOF = {"X-Sentinel-P-Correct": "0.9999", "X-Sentinel-Request-Id": "f" * 32, "X-Sentinel-Scored": "true"}


async def spoofing(request: web.Request, up: Any) -> web.StreamResponse:
    if request.path.endswith("/fail"):
        return web.json_response({"error": {"message": "no"}}, status=500, headers=SPOOF)
    if not request.path.endswith("completions"):
        return web.json_response({"data": []}, headers=SPOOF)
    if (await request.json()).get("stream"):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SPOOF})
        await resp.prepare(request)
        await resp.write(sse(chat_chunk("4", TOP, "stop")) + b"data: [DONE]\n\n")
        return resp
    return web.json_response(
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}]},
        headers=SPOOF,
    )


@pytest.mark.parametrize("sample_rate", [1.0, 0.0])
async def test_upstream_sentinel_headers_never_reach_the_client(sample_rate):
    async with scripted_upstream(spoofing) as up, running_proxy(
        up.url, dialect="openai", monitor={"sample_rate": sample_rate}
    ) as proxy:
        seen = []
        async with aiohttp.ClientSession() as session:
            for stream in (False, True):
                async with session.post(proxy.url + "/chat/completions", json={**CHAT, "stream": stream}) as resp:
                    await resp.read()
                    seen.append((True, resp.headers))
            for path in ("/models", "/fail"):
                async with session.get(proxy.url + path) as resp:
                    await resp.read()
                    seen.append((False, resp.headers))
        raw = await client(proxy.url).chat.completions.with_raw_response.create(**CHAT)
        seen.append((True, raw.headers))
    assert len(up.seen) == 5
    for instrumented, headers in seen:
        sentinel = sorted(k.lower() for k in headers if k.lower().startswith("x-sentinel-"))
        assert sentinel == (["x-sentinel-request-id"] if instrumented else [])
        if instrumented:
            assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Sentinel-Request-Id"])
            assert headers["X-Sentinel-Request-Id"] != SPOOF["X-Sentinel-Request-Id"]


# -- 10: compressed request bodies -----------------------------------------------------------------
async def test_a_gzip_body_is_forwarded_inflated_without_its_content_encoding():
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai") as proxy,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(proxy.url + "/chat/completions", data=gzip.compress(orjson.dumps(CHAT)),
                                headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.json())["choices"][0]["message"]["content"] == "4"
        async with session.post(proxy.url + "/embeddings", data=gzip.compress(b'{"input": "x"}'),
                                headers=headers) as resp:
            assert resp.status == 200
    chat, embeddings = up.seen
    assert chat.json()["messages"] == CHAT["messages"] and chat.json()["top_logprobs"] == 20
    assert embeddings.body == b'{"input": "x"}'
    assert "Content-Encoding" not in chat.headers and "Content-Encoding" not in embeddings.headers


async def test_a_gzip_bomb_is_413_and_never_forwarded():
    bomb = gzip.compress(b"{" + b" " * (64 * 1024 * 1024) + b"}", compresslevel=9)
    assert len(bomb) < 200_000
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai",
                                                              server={"max_body_mb": 1}) as proxy:
        for route in ("/v1/chat/completions", "/v1/embeddings"):
            t0 = time.perf_counter()
            status, _, body = await exchange(
                port_of(proxy.url), request_bytes("POST", route, bomb, {"Content-Encoding": "gzip"})
            )
            assert status == 413 and time.perf_counter() - t0 < 5
            assert_openai_error(body, "request_too_large")
    assert up.seen == []


@pytest.mark.parametrize(
    "coding", ["compress", "x-gzip", "gzip, gzip", "gzip, identity, deflate", "gzip\r\nContent-Encoding: gzip"]
)
async def test_codings_the_proxy_does_not_inflate_are_415(coding):
    body = gzip.compress(gzip.compress(orjson.dumps(CHAT)))
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        for route in ("/v1/chat/completions", "/v1/embeddings"):
            status, _, payload = await exchange(
                port_of(proxy.url), request_bytes("POST", route, body, {"Content-Encoding": coding})
            )
            assert status == 415
            assert_openai_error(payload, "unsupported_content_encoding")
    assert up.seen == []


async def test_a_body_labelled_gzip_but_not_compressed_is_400():
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        with pytest.raises(openai.BadRequestError) as err:
            await client(proxy.url).chat.completions.create(**CHAT, extra_headers={"Content-Encoding": "gzip"})
    assert err.value.body["code"] == "invalid_body_encoding"
    assert up.seen == []


# -- 14: read timeouts and a connection cap --------------------------------------------------------
async def _closed_after(port: int, trickle: bytes, interval: float, limit: float) -> float:
    """Send ``trickle`` one byte per ``interval``; seconds until the server closes (or ``limit``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    try:
        for i in range(10_000):
            if time.perf_counter() - t0 > limit:
                return limit
            try:
                writer.write(trickle[i % len(trickle): i % len(trickle) + 1] if trickle else b"")
                await writer.drain()
                if await asyncio.wait_for(reader.read(65536), interval) == b"":
                    return time.perf_counter() - t0
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return time.perf_counter() - t0
        return limit
    finally:
        writer.close()


async def test_slow_loris_heads_and_idle_connections_are_cut_after_header_timeout():
    head = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    async with scripted_upstream(answer) as up, served(up.url, header_timeout_s=0.5) as (url, _, _):
        port = port_of(url)
        cuts = await asyncio.gather(
            *(_closed_after(port, head, 0.05, 10.0) for _ in range(50)),  # slow-loris: a byte per 50 ms
            *(_closed_after(port, b"", 0.1, 10.0) for _ in range(50)),  # idle: nothing at all
        )
    assert max(cuts) < 2.0, f"slowest cut after {max(cuts):.2f} s"
    assert min(cuts) >= 0.4
    assert up.seen == []


async def test_the_header_timeout_never_cuts_a_request_in_progress():
    async def slow(request: web.Request, up: Any) -> web.StreamResponse:
        if request.path.endswith("models"):
            await asyncio.sleep(1.0)
            return web.json_response({"data": []})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(5):
            await asyncio.sleep(0.25)
            await resp.write(sse(chat_chunk("4", TOP)))
        await resp.write(sse(chat_chunk("2", TOP, "stop")) + b"data: [DONE]\n\n")
        return resp

    async with (
        scripted_upstream(slow) as up,
        served(up.url, header_timeout_s=0.3, body_timeout_s=5) as (url, _, _),
        client(url) as c,
    ):
        stream = await c.chat.completions.create(**CHAT, stream=True)
        text = "".join([chunk.choices[0].delta.content async for chunk in stream if chunk.choices])
        models = await c.models.list()
        # a body sent over a second, past the header timeout but within the body timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
        body = b'{"input": "x"}'
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % len(body))
        for byte in body:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.08)
        status, _, _ = parse_response(await asyncio.wait_for(reader.read(), 5))
        writer.close()
    assert text == "44444" + "2" and models.data == [] and status == 200


def test_the_server_keys_are_validated():
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"server": {"header_timeout_s": 0, "body_timeout_s": -1, "max_connections": 0}},
                    environ={})
    assert all(key in str(err.value) for key in ("header_timeout_s", "body_timeout_s", "max_connections"))
    cfg = load_config(environ={"SENTINEL_SERVER_MAX_CONNECTIONS": "7", "SENTINEL_SERVER_BODY_TIMEOUT_S": "2.5"})
    assert (cfg.server.max_connections, cfg.server.body_timeout_s, cfg.server.header_timeout_s) == (7, 2.5, 30.0)


async def test_a_trickled_body_gets_408_after_body_timeout():
    async with scripted_upstream(answer) as up, served(up.url, body_timeout_s=0.5) as (url, app, _):
        for route in ("/v1/chat/completions", "/v1/embeddings"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url))
            writer.write(f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode())
            t0 = time.perf_counter()
            response = b""
            while b"\r\n\r\n" not in response and time.perf_counter() - t0 < 5:
                writer.write(b" ")  # 20 bytes/s, forever
                with contextlib.suppress(TimeoutError):
                    response += await asyncio.wait_for(reader.read(65536), 0.05)
            elapsed = time.perf_counter() - t0
            writer.close()
            status, headers, body = parse_response(response)
            assert status == 408 and 0.4 <= elapsed < 2.0, (status, elapsed)
            assert ("x-sentinel-request-id" in headers) == route.endswith("chat/completions")
            if "{" in body.decode():
                assert_openai_error(body[body.index(b"{"):].split(b"\r\n")[0], "request_timeout")
    assert up.seen == []


async def test_connections_beyond_the_cap_get_503_and_capacity_frees_on_close():
    async with scripted_upstream(answer) as up, served(up.url, max_connections=100) as (url, _, runner):
        port = port_of(url)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
        await asyncio.sleep(0.1)
        refused = await asyncio.gather(*(exchange(port, request_bytes("GET", "/v1/models")) for _ in range(50)))
        assert all(status == 503 for status, _, _ in refused)
        status, headers, body = refused[0]
        assert headers["retry-after"] == "1"
        assert_openai_error(body, "too_many_connections")
        async with client(url) as c:
            with pytest.raises(openai.APIStatusError) as err:
                await c.chat.completions.create(**CHAT)
            assert err.value.status_code == 503
            for _, writer in idle[:10]:
                writer.close()
            await asyncio.sleep(0.1)
            result = await c.chat.completions.create(**CHAT)
            assert result.choices[0].message.content == "4"
        assert runner.gate.refused == 51
        for _, writer in idle[10:]:
            writer.close()
        await asyncio.sleep(0.2)
        assert runner.gate.open == 0
    assert len(up.seen) == 1


async def test_serve_applies_the_server_section_and_a_sigterm_still_drains(tmp_path):
    """``entropy-sentinel serve`` itself (gateway.server.run): the cap from the environment, a request
    answered and stored, SIGTERM exits 0 with the record on disk."""
    async with scripted_upstream(answer) as up:
        port, store = free_port(), tmp_path / "s.db"
        env = {**os.environ, "SENTINEL_SERVER_MAX_CONNECTIONS": "2", "SENTINEL_SERVER_HEADER_TIMEOUT_S": "5",
               "SENTINEL_UPSTREAM_DIALECT": "openai"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entropy_sentinel", "serve", "--upstream", up.url, "--port", str(port),
            "--store", str(store), "--estimator", "none", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            for _ in range(300):
                with contextlib.suppress(OSError):
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the probe's connection is closed (and no longer counted)
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await asyncio.sleep(0.2)
            assert (await exchange(port, request_bytes("GET", "/v1/models")))[0] == 503, await _stderr(proc)
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.1)
            result = await client(url).chat.completions.with_raw_response.create(**CHAT)
            request_id = result.headers["X-Sentinel-Request-Id"]
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        stderr = (await proc.stderr.read()).decode()
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM requests WHERE request_id = ?", (request_id,)).fetchone() == (1,)
    assert SECRET not in stderr


async def _stderr(proc: asyncio.subprocess.Process) -> str:
    proc.kill()
    return (await proc.stderr.read()).decode()[-3000:] if proc.stderr is not None else ""


# -- 15: export bounds, non-UTF-8 keys, duplicate slice headers ------------------------------------
@pytest.mark.parametrize("query", ["limit=-1", "limit=0", "limit=x", "since=nan", "since=inf", "since=-inf",
                                   "since=NaN&limit=5", "limit=1.5"])
async def test_export_refuses_unbounded_or_non_finite_queries(query, tmp_path):
    async with (
        scripted_upstream(answer) as up,
        running_proxy(up.url, dialect="openai", store={"path": str(tmp_path / "s.db")}) as proxy,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{proxy.root}/sentinel/v1/export?{query}") as resp:
            assert resp.status == 400
            assert_openai_error(await resp.read(), "invalid_query")
        async with session.get(f"{proxy.root}/sentinel/v1/export?limit=1&since=0") as resp:
            assert resp.status == 200


async def test_non_utf8_authorization_is_401_on_admin_routes_and_never_a_500():
    async with scripted_upstream(answer) as up, running_proxy(
        up.url, dialect="openai", admin={"token": "s3cret"}, monitor={"api_key_tenants": {"sk-known": "acme"}}
    ) as proxy:
        port = port_of(proxy.url)
        bad = b"Authorization: Bearer \xff\xfe" + SECRET.encode() + b"\r\n"
        status, _, body = await exchange(port, request_bytes("GET", "/sentinel/v1/slices", raw_headers=bad))
        assert status == 401
        assert_openai_error(body, "unauthorized")
        status, headers, _ = await exchange(port, request_bytes("POST", "/v1/chat/completions", orjson.dumps(CHAT),
                                                                raw_headers=bad))
        assert status == 200  # the upstream judges the key; it matched no tenant here
        assert proxy.records.get(headers["x-sentinel-request-id"]).slice == ""
        status, _, _ = await exchange(port, request_bytes("GET", "/v1/models", raw_headers=bad))
        assert status == 200
    assert len(up.seen) == 2


async def test_a_second_slice_header_is_refused():
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="openai") as proxy:
        headers = CIMultiDict([("X-Sentinel-Slice", "tenant=a"), ("X-Sentinel-Slice", "tenant=b")])
        async with (
            aiohttp.ClientSession() as session,
            session.post(proxy.url + "/chat/completions", json=CHAT, headers=headers) as resp,
        ):
            body = await resp.read()
            assert resp.status == 400 and resp.headers["X-Sentinel-Request-Id"]
        error = assert_openai_error(body, "invalid_slice")
        assert error["param"] == "X-Sentinel-Slice" and "tenant=" not in error["message"]
        result = await client(proxy.url).chat.completions.with_raw_response.create(
            **CHAT, extra_headers={"X-Sentinel-Slice": "tenant=a"}
        )
        assert proxy.app[RECORDS_KEY].get(result.headers["X-Sentinel-Request-Id"]).slice == "tenant=a"
    assert len(up.seen) == 1
