"""Issue 11 (hardening): what a broken or hostile upstream sends, and what the client still gets.

Against the scripted upstream of :mod:`tests.harness`; each test names the defect it pins.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import orjson
import pytest
from aiohttp import web
from entropy_sentinel.gateway.app import MONITOR_KEY
from entropy_sentinel.gateway.sse import SSEDecoder, SSEEventTooLarge

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse

TOP = [("4", math.log(0.5)), ("5", math.log(0.25)), ("6", math.log(0.125))]
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def post(url: str, body: dict, stream: bool = False) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/chat/completions", json={**body, "stream": stream}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.text()


def data_events(raw: bytes) -> list[object]:
    out: list[object] = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


# -- 6: SSE decoding is linear, and one event's size is capped ---------------------------------------


def test_sse_decoder_splits_the_same_at_every_chunk_boundary():
    stream = b"data: a\r\n\r\n: comment\n\ndata: b\ndata: c\r\n\r\ndata: [DONE]\n\n"
    whole = SSEDecoder().feed(stream)
    assert whole == [b"data: a", b": comment", b"data: b\ndata: c", b"data: [DONE]"]
    for cut in range(1, len(stream)):
        decoder = SSEDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == whole, cut
        assert decoder.pending == b""
    bytewise = SSEDecoder()
    assert [e for i in range(len(stream)) for e in bytewise.feed(stream[i : i + 1])] == whole


def test_sse_decoder_is_linear_in_one_large_event():
    """32 MB in 4 KiB chunks: the old decoder re-joined and re-scanned the whole buffer per chunk
    (~137 GB of copying here); a linear one takes well under a second."""
    size, step = 32 * 1024 * 1024, 4096
    decoder = SSEDecoder(max_event_bytes=64 * 1024 * 1024)
    piece = b"x" * step
    started = time.perf_counter()
    assert decoder.feed(b"data: ") == []
    for _ in range(size // step):
        assert decoder.feed(piece) == []
    events = decoder.feed(b"\n\ndata: [DONE]\n\n")
    assert time.perf_counter() - started < 5.0
    assert [len(e) for e in events] == [size + 6, 12]


def test_sse_decoder_refuses_an_event_past_its_cap():
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(SSEEventTooLarge):
        decoder.feed(b"x" * 200)
    with pytest.raises(SSEEventTooLarge):  # arriving whole, in one chunk, too
        SSEDecoder(max_event_bytes=1000).feed(b"data: " + b"x" * 2000 + b"\n\ndata: [DONE]\n\n")
    assert SSEDecoder(max_event_bytes=1000).feed(b"data: " + b"x" * 990 + b"\n\n") != []
    # events completed before the oversized one come out first; the next call (even at EOF) raises
    decoder = SSEDecoder(max_event_bytes=1000)
    assert decoder.feed(b"data: a\n\ndata: " + b"x" * 2000) == [b"data: a"]
    with pytest.raises(SSEEventTooLarge):
        decoder.feed(b"")


async def test_an_oversized_event_mid_stream_ends_it_with_an_openai_error_event():
    async def huge(request: web.Request, up) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chat_chunk("4", TOP)))
        for _ in range(64):  # one 256 KiB event, 4 KiB at a time, never finished
            await resp.write(b"data: " + b"x" * 4090 if _ == 0 else b"x" * 4096)
        await resp.write(b"\n\ndata: [DONE]\n\n")
        return resp

    async with scripted_upstream(huge) as up, running_proxy(
        up.url, dialect="openai", upstream={"max_event_mb": 0.0625}
    ) as proxy:
        status, headers, body = await post(proxy.url, CHAT, stream=True)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200
    events = data_events(body)
    assert events[0]["choices"][0]["delta"] == {"content": "4"}
    assert events[-1]["error"]["code"] == "upstream_event_too_large"
    assert b"xxxx" not in body and "[DONE]" not in events
    assert record.scored is False and record.unscored_reason == "upstream_event_too_large"
    assert record.status == 502


async def test_an_oversized_first_event_is_a_502_in_openai_shape():
    async def huge(request: web.Request, up) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + b"x" * 200_000)
        return resp

    async with scripted_upstream(huge) as up, running_proxy(
        up.url, dialect="openai", upstream={"max_event_mb": 0.0625}
    ) as proxy:
        status, headers, body = await post(proxy.url, CHAT, stream=True)
    assert status == 502
    assert orjson.loads(body)["error"]["code"] == "upstream_event_too_large"
    assert headers["X-Sentinel-Request-Id"]


# -- 11: a request that ends in an exception is recorded with its real status, never 0 ---------------


async def ok_unary(request: web.Request, up) -> web.Response:
    return web.json_response(
        {
            "id": "c", "object": "chat.completion", "created": 1, "model": "scripted",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop",
                         "logprobs": chat_chunk("4", TOP)["choices"][0]["logprobs"]}],
        }
    )


async def test_a_body_past_the_limit_is_recorded_as_413_not_0(tmp_path):
    async with scripted_upstream(ok_unary) as up, running_proxy(
        up.url, dialect="openai", server={"max_body_mb": 0.001}, store={"path": str(tmp_path / "s.db")}
    ) as proxy:
        status, _, _ = await post(proxy.url, {**CHAT, "pad": "x" * 5000})
        metrics = await get_text(proxy.root + "/sentinel/metrics")
        (record,) = proxy.records._items.values()
    assert status == 413
    assert record.status == 413 and record.unscored_reason == "invalid_request"
    assert 'sentinel_requests_total{route="chat",slice="",status="413"} 1.0' in metrics
    assert 'status="0"' not in metrics


async def test_a_proxy_failure_is_recorded_and_stored_as_500_not_0(tmp_path, monkeypatch):
    from entropy_sentinel.gateway.instrumented import Instrumenter

    async def broken(self, *args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Instrumenter, "_unary", broken)
    async with scripted_upstream(ok_unary) as up, running_proxy(
        up.url, dialect="openai", store={"path": str(tmp_path / "s.db")}
    ) as proxy:
        status, _, _ = await post(proxy.url, CHAT)
        metrics = await get_text(proxy.root + "/sentinel/metrics")
        store = proxy.app[MONITOR_KEY].store
        await asyncio.to_thread(store.flush)
        rows = await asyncio.to_thread(store.export)
    assert status == 500
    assert 'sentinel_requests_total{route="chat",slice="",status="500"} 1.0' in metrics
    assert [(r["status"], r["scored"]) for r in rows] == [(500, 0)]
