"""Hostile and broken requests (issue 11: defects 1, 5, 8, 9, 10, 14, 15), against a scripted upstream.

Raw sockets wherever a client library would clean the request up (paths, bytes, pacing); the real
``openai`` client wherever its view matters.
"""

from __future__ import annotations

import asyncio
import gzip
import re
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

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
