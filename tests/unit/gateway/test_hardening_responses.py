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
from entropy_sentinel.signal import Trajectory

from tests.harness import ConstantScorer, chat_chunk, running_proxy, scripted_upstream, sse

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


# -- shared scripted answers --------------------------------------------------------------------------


def token(tok: str = "4", logprob: object = -0.7, top: object = None) -> dict:
    if top is None:
        top = [{"token": t, "logprob": lp, "bytes": []} for t, lp in TOP]
    return {"token": tok, "logprob": logprob, "bytes": [], "top_logprobs": top}


def unary_body(logprobs: object, choices: int = 1) -> bytes:
    """A chat.completion whose every choice carries ``logprobs`` (bytes: NaN literals allowed)."""
    lp = logprobs if isinstance(logprobs, bytes) else orjson.dumps(logprobs)
    parts = [
        b'{"index":%d,"message":{"role":"assistant","content":"42"},"finish_reason":"stop","logprobs":%s}' % (i, lp)
        for i in range(choices)
    ]
    return b'{"id":"c","object":"chat.completion","created":1,"model":"scripted","choices":[' + b",".join(parts) + b"]}"


def chunk_body(logprobs: object, index: int = 0, finish: str | None = None) -> bytes:
    lp = logprobs if isinstance(logprobs, bytes) else orjson.dumps(logprobs)
    fin = orjson.dumps(finish)
    return (
        b'{"id":"c","object":"chat.completion.chunk","created":1,"model":"scripted","choices":[{"index":%d,'
        b'"delta":{"content":"4"},"logprobs":%s,"finish_reason":%s}]}' % (index, lp, fin)
    )


def upstream_of(unary: bytes, events: list[bytes]):
    async def handler(request: web.Request, up) -> web.StreamResponse:
        if request.method == "GET":  # the /v1/models probe of a proxy with an estimator
            return web.json_response({"object": "list", "data": []})
        if not (await request.json()).get("stream"):
            return web.Response(body=unary, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await resp.write(b"data: " + event + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return handler


def sentinel_comment(raw: bytes) -> dict:
    (line,) = [b for b in raw.split(b"\n\n") if b.startswith(b": sentinel ")]
    return orjson.loads(line[len(b": sentinel ") :])


# -- 3: a response is scored only from finite data ----------------------------------------------------

NO_DATA = {
    "logprobs ignored": b"null",
    "content []": {"content": []},
    "NaN everywhere": b'{"content":[{"token":"4","logprob":NaN,"bytes":[],"top_logprobs":'
    b'[{"token":"4","logprob":NaN,"bytes":[]},{"token":"5","logprob":NaN,"bytes":[]}]}]}',
    "-inf everywhere": b'{"content":[{"token":"4","logprob":-Infinity,"bytes":[],"top_logprobs":'
    b'[{"token":"4","logprob":-Infinity,"bytes":[]}]}]}',
    "-9999 everywhere": {"content": [token(logprob=-9999.0, top=[{"token": "4", "logprob": -9999.0}] * 3)] * 4},
    "no candidates": {"content": [token(top=[])] * 3},
    "null candidates": {"content": [token(top=[{"token": "4", "logprob": None}])]},
}


@pytest.mark.parametrize("case", sorted(NO_DATA))
@pytest.mark.parametrize("stream", [False, True])
async def test_a_response_without_finite_logprobs_is_not_scored(case, stream):
    logprobs = NO_DATA[case]
    handler = upstream_of(unary_body(logprobs), [chunk_body(logprobs), chunk_body(b"null", finish="stop")])
    async with scripted_upstream(handler) as up, running_proxy(
        up.url, dialect="openai", scorer=ConstantScorer(0.926)
    ) as proxy:
        status, headers, body = await post(proxy.url, CHAT, stream=stream)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200
    assert record.scored is False and record.p_correct is None
    assert record.unscored_reason == "no_logprobs"
    if stream and case in ("NaN everywhere", "-inf everywhere"):  # not JSON to orjson: relayed as sent
        assert b"NaN" in body or b"Infinity" in body
    assert "X-Sentinel-P-Correct" not in headers
    if stream:
        assert sentinel_comment(body) == {"request_id": record.request_id, "scored": False, "p_correct": None}
        assert b"data: [DONE]" in body
    else:
        assert orjson.loads(body.replace(b"NaN", b"null").replace(b"-Infinity", b"null"))["choices"][0]["message"][
            "content"
        ] == "42"


def test_a_trajectory_leaves_out_tokens_without_a_finite_candidate():
    clean = Trajectory()
    clean.add([2], [-0.1, -2.5], [-0.1])
    mixed = Trajectory(batch=2)
    mixed.add([2, 2, 0, 1, 2], [math.nan, -math.inf, -0.1, -2.5, -9999.0, -1e5, math.nan], [-1.0, -0.1, 5.0, -2.0, 1.0])
    assert len(mixed) == 1 and mixed.missing == 4
    assert mixed.features() == clean.features()
    empty = Trajectory()
    empty.add([1], [math.nan], [math.nan])
    assert len(empty) == 0 and empty.missing == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_tokens_without_data_are_left_out_and_the_rest_is_scored(stream):
    bad = token(logprob=-9999.0, top=[{"token": "4", "logprob": -9999.0}] * 3)
    good = token()
    handler = upstream_of(
        unary_body({"content": [bad, good, bad]}),
        [chunk_body({"content": [bad]}), chunk_body({"content": [good]}),
         chunk_body({"content": [bad]}, finish="stop")],
    )
    async with scripted_upstream(handler) as up, running_proxy(
        up.url, dialect="openai", scorer=ConstantScorer(0.926)
    ) as proxy:
        status, headers, body = await post(proxy.url, CHAT, stream=stream)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200 and record.scored is True and record.p_correct == [0.926]
    assert record.tokens == {0: 1}
    expected = -sum(math.exp(lp) * lp for _, lp in TOP)
    assert record.features[0]["mean"] == pytest.approx(expected)


# -- 7: a malformed logprob entry never destroys the answer ------------------------------------------

MALFORMED = {
    "string logprob": {"content": [token(top=[{"token": "4", "logprob": "-0.5"}])]},
    "candidate without logprob": {"content": [token(top=[{"token": "4"}, {"token": "5", "logprob": -1.0}])]},
    "top_logprobs as a dict": {"content": [token(top={"4": -0.5, "5": -1.2})]},
    "candidate a list": {"content": [token(top=[["4", -0.5]])]},
    "token a string": {"content": ["4"]},
    "chosen logprob a string": {"content": [token(logprob="x")]},
    "logprobs a list": [1, 2],
    "content a string": {"content": "4"},
    "legacy entry a list": {"tokens": ["4"], "token_logprobs": [-0.5], "top_logprobs": [["4", -0.5]]},
    "legacy value a string": {"tokens": ["4"], "token_logprobs": [-0.5], "top_logprobs": [{"4": "x"}]},
    "legacy tokens objects": {"tokens": [{"a": 1}], "token_logprobs": [-0.5], "top_logprobs": [{"4": -0.5}]},
    "legacy token_logprobs a dict": {"tokens": ["4"], "token_logprobs": {"a": 1}, "top_logprobs": [{"4": -0.5}]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("top_logprobs", [None, 2])
async def test_a_malformed_logprob_block_is_relayed_and_unscored(case, stream, top_logprobs):
    logprobs = MALFORMED[case]
    handler = upstream_of(unary_body(logprobs), [chunk_body(logprobs), chunk_body(b"null", finish="stop")])
    request = CHAT if top_logprobs is None else {**CHAT, "logprobs": True, "top_logprobs": top_logprobs}
    async with scripted_upstream(handler) as up, running_proxy(
        up.url, dialect="openai", scorer=ConstantScorer(0.926)
    ) as proxy:
        status, headers, body = await post(proxy.url, request, stream=stream)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200
    assert record.scored is False and record.unscored_reason == "malformed_logprobs"
    assert "X-Sentinel-P-Correct" not in headers
    if stream:
        events = data_events(body)
        assert events[-1] == "[DONE]" and all("error" not in e for e in events[:-1])
        choices = [e["choices"][0] for e in events[:-1]]
        assert [c["delta"]["content"] for c in choices] == ["4", "4"]
        first = choices[0]
        assert sentinel_comment(body)["scored"] is False
    else:
        first = orjson.loads(body)["choices"][0]
        assert first["message"]["content"] == "42"
    # the client asked for no logprobs: it gets none; it asked for some: the upstream's block as sent
    assert first["logprobs"] == (None if top_logprobs is None else logprobs)


# -- 4: the choices one request can make the proxy track are capped ----------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("n", [17, 1000, "3", 2.0])
async def test_a_request_for_more_choices_than_the_cap_is_forwarded_unforced(n, stream):
    handler = upstream_of(unary_body(b"null"), [chunk_body(b"null", finish="stop")])
    async with scripted_upstream(handler) as up, running_proxy(up.url, dialect="openai") as proxy:
        status, headers, _ = await post(proxy.url, {**CHAT, "n": n}, stream=stream)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200
    assert up.seen[0].json() == {**CHAT, "n": n, "stream": stream}  # the client's body, untouched
    assert record.scored is False and record.unscored_reason == "too_many_choices"


async def test_a_request_within_the_cap_is_forced_and_scored_per_choice():
    async with scripted_upstream(upstream_of(unary_body({"content": [token()]}, choices=16), [])) as up, running_proxy(
        up.url, dialect="openai", scorer=ConstantScorer(0.926)
    ) as proxy:
        status, headers, _ = await post(proxy.url, {**CHAT, "n": 16})
    assert up.seen[-1].json()["top_logprobs"] == 20
    assert status == 200 and headers["X-Sentinel-P-Correct"] == ",".join(["0.9260"] * 16)


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_choice_indexes_past_the_cap_are_relayed_not_tracked(stream):
    n = 2000
    handler = upstream_of(
        unary_body({"content": [token()]}, choices=n),
        [chunk_body({"content": [token()]}, index=i) for i in range(n)] + [chunk_body(b"null", finish="stop")],
    )
    async with scripted_upstream(handler) as up, running_proxy(
        up.url, dialect="openai", scorer=ConstantScorer(0.926), signal={"max_choices": 4}
    ) as proxy:
        status, headers, body = await post(proxy.url, CHAT, stream=stream)
        record = proxy.records.get(headers["X-Sentinel-Request-Id"])
    assert status == 200
    relayed = data_events(body)[:-1] if stream else orjson.loads(body)["choices"]
    indexes = [e["choices"][0]["index"] for e in relayed] if stream else [c["index"] for c in relayed]
    assert sorted(set(indexes)) == list(range(n))
    assert all((e["choices"][0] if stream else e)["logprobs"] is None for e in relayed)  # none asked for
    assert sorted(record.features) == [0, 1, 2, 3]
    assert record.scored is False and record.unscored_reason == "too_many_choices"
    assert "X-Sentinel-P-Correct" not in headers
