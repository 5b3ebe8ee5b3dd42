"""Exact wire cases against a scripted upstream: what the client sees byte for byte."""

from __future__ import annotations

import math

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.harness import chat_chunk, running_proxy, scripted_upstream, sse

TOP25 = [(f"t{i}", math.log(0.5) - i) for i in range(25)]


async def test_stream_ends_with_the_sentinel_comment_just_before_done():
    async def two_tokens(request, up):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chat_chunk("4", TOP25[:20])) + sse(chat_chunk("2", TOP25[:20], "stop")))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with scripted_upstream(two_tokens) as up, running_proxy(up.url, dialect="openai") as proxy:
        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url + "/chat/completions", json=body) as resp:
                rid = resp.headers["X-Sentinel-Request-Id"]
                events = (await resp.read()).split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert events[-3].startswith(b": sentinel ")
    comment = orjson.loads(events[-3][len(b": sentinel ") :])
    assert comment == {"request_id": rid, "scored": True, "p_correct": None}  # no estimator loaded yet
    chunks = [orjson.loads(e[len(b"data: ") :]) for e in events[:-3]]
    assert [c["choices"][0]["logprobs"] for c in chunks] == [None, None]


async def test_client_asking_more_than_20_gets_its_n_and_entropy_uses_the_top_20():
    async def answer(request, up):
        n = (await request.json())["top_logprobs"]
        content = [chat_chunk("t0", TOP25[:n])["choices"][0]["logprobs"]["content"][0]]
        return web.json_response(
            {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "t0"},
                          "logprobs": {"content": content}, "finish_reason": "stop"}]}
        )

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 25}
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="llamacpp") as proxy:
        async with aiohttp.ClientSession() as session:
            async with session.post(proxy.url + "/chat/completions", json=body) as resp:
                payload = await resp.json()
                record = proxy.records.get(resp.headers["X-Sentinel-Request-Id"])
    assert up.seen[0].json()["top_logprobs"] == 25
    assert len(payload["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 25
    expected = -sum(math.exp(lp) * lp for _, lp in TOP25[:20])
    assert record.features[0]["mean"] == pytest.approx(expected)


async def one_token_chat(request, up):
    """A unary chat completion of one token with its top-20 logprobs."""
    content = chat_chunk("a", TOP25[:20])["choices"][0]["logprobs"]["content"]
    return web.json_response(
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"},
                      "logprobs": {"content": content}, "finish_reason": "stop"}]}
    )


async def test_llamacpp_dialect_drops_the_chat_logprobs_key_like_llama_server_does():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for dialect, has_key in (("llamacpp", False), ("vllm", True)):
        async with scripted_upstream(one_token_chat) as up, running_proxy(up.url, dialect=dialect) as proxy:
            async with aiohttp.ClientSession() as session:
                async with session.post(proxy.url + "/chat/completions", json=body) as resp:
                    choice = (await resp.json())["choices"][0]
        assert ("logprobs" in choice) is has_key
        if has_key:
            assert choice["logprobs"] is None


async def test_unsampled_slices_pass_untouched_and_unscored():
    async def answer(request, up):
        return web.json_response(
            {"id": "c", "object": "text_completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "text": " 4", "logprobs": None, "finish_reason": "stop"}]}
        )

    overrides = {"monitor": {"slice_sample_rates": {"tenant=bulk": 0.0}}}
    async with scripted_upstream(answer) as up, running_proxy(up.url, dialect="vllm", **overrides) as proxy:
        async with aiohttp.ClientSession() as session:
            for header in ("tenant=bulk,domain=x", "tenant=gold"):
                async with session.post(proxy.url + "/completions", headers={"X-Sentinel-Slice": header},
                                        json={"model": "m", "prompt": "2+2=", "max_tokens": 2}) as resp:
                    assert resp.status == 200
                    record = proxy.records.get(resp.headers["X-Sentinel-Request-Id"])
                    if header.startswith("tenant=bulk"):
                        assert record.unscored_reason == "not_sampled"
    bulk, gold = up.seen
    assert bulk.json() == {"model": "m", "prompt": "2+2=", "max_tokens": 2}  # not forced
    assert gold.json()["logprobs"] == 20
    assert "X-Sentinel-Slice" not in bulk.headers and "X-Sentinel-Slice" not in gold.headers


async def test_feedback_validation_errors_are_openai_shaped():
    async def never(request, up):
        raise AssertionError("no upstream call expected")

    async with scripted_upstream(never) as up, running_proxy(up.url, dialect="openai") as proxy:
        async with aiohttp.ClientSession() as session:
            for body, fragment in ((b"{nope", "not JSON"), (b'{"request_id": "<b>", "correct": true}', "request_id"),
                                   (b'{"request_id": "abc", "correct": "yes"}', "true or false")):
                async with session.post(proxy.root + "/sentinel/v1/feedback", data=body) as resp:
                    payload = await resp.json()
                    assert resp.status == 400 and payload["error"]["code"] == "invalid_feedback"
                    assert fragment in payload["error"]["message"] and "<b>" not in payload["error"]["message"]


async def test_export_reads_its_writes_requests_and_labels_answered_before_it_are_in_it(tmp_path):
    """A store that commits once an hour still exports every request answered and label taken before the
    export: it flushes first (``select`` and ``report`` read labels right after posting them)."""
    store = {"path": str(tmp_path / "s.db"), "flush_interval_s": 3600, "batch_size": 10_000}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with scripted_upstream(one_token_chat) as up, running_proxy(up.url, dialect="openai", store=store) as proxy:
        async with aiohttp.ClientSession() as session:
            ids = []
            for _ in range(3):
                async with session.post(proxy.url + "/chat/completions", json=body) as resp:
                    ids.append(resp.headers["X-Sentinel-Request-Id"])
            for rid, correct in zip(ids, (True, False, True), strict=True):
                async with session.post(proxy.root + "/sentinel/v1/feedback",
                                        json={"request_id": rid, "correct": correct}) as resp:
                    assert resp.status == 200
            async with session.get(proxy.root + "/sentinel/v1/export") as resp:
                records = {r["request_id"]: r for r in (await resp.json())["records"]}
    assert [records[rid]["label"] for rid in ids] == [1, 0, 1]
