"""OpenTelemetry into a real receiver users run: real traffic from the real ``openai`` client through the
proxy to llama-server + Gemma 3 270M, spans exported over OTLP/HTTP to Arize Phoenix (``phoenix serve``),
then read back through Phoenix's REST API: names, GenAI attributes, the P(correct) evaluation event,
and the caller's trace joined (trace id and parent span id from its ``traceparent``)."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact

from tests.harness import running_proxy

pytestmark = pytest.mark.llama

MODEL = "gemma-3-270m"
PROMPT = "Question: What is the capital of France?\nAnswer:"


def traceparent(i: int) -> tuple[str, str, str]:
    trace_id, parent_id = f"{0x4bf92f3577b34da6a3ce929d0e0e4700 + i:032x}", f"{0x00f067aa0ba90200 + i:016x}"
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


async def wait_for_spans(phoenix, ids: set[str], timeout_s: float = 60.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = await asyncio.to_thread(phoenix.spans)
        by_id = {s["attributes"].get("entropy_sentinel.request_id"): s for s in spans}
        if ids <= set(by_id):
            return by_id
        assert time.monotonic() < deadline, f"Phoenix has {len(spans)} spans, not {sorted(ids)}\n{phoenix.log_tail()}"
        await asyncio.sleep(0.5)


async def test_spans_of_real_traffic_reach_phoenix_in_the_callers_trace(llama_url, phoenix):
    otel = {"endpoint": phoenix.url, "service_name": "sentinel-phoenix", "schedule_delay_s": 0.2}
    scorer = ArtifactScorer.load(resolve_artifact("builtin"))
    async with running_proxy(llama_url, scorer=scorer, otel=otel) as proxy:
        client = openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-never-exported", max_retries=0)
        messages = [{"role": "user", "content": PROMPT}]
        expect = {}

        header, trace_id, parent_id = traceparent(1)  # a streamed chat, usage asked for
        stream = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": header, "X-Sentinel-Slice": "tenant=acme,domain=geo"},
        )
        chunks = [c async for c in stream.parse()]
        usage = next(c.usage for c in chunks if c.usage is not None)
        rid = stream.headers["X-Sentinel-Request-Id"]
        expect[rid] = ("chat", chunks[0].id, trace_id, parent_id, usage, "domain=geo,tenant=acme")

        header, trace_id, parent_id = traceparent(2)  # a unary chat
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=messages, max_tokens=8, temperature=0,
            extra_headers={"traceparent": header, "X-Sentinel-Slice": "tenant=acme"},
        )
        done = raw.parse()
        expect[raw.headers["X-Sentinel-Request-Id"]] = ("chat", done.id, trace_id, parent_id, done.usage, "tenant=acme")

        raw = await client.completions.with_raw_response.create(  # a legacy completion in a trace of its own
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0
        )
        done = raw.parse()
        expect[raw.headers["X-Sentinel-Request-Id"]] = ("text_completion", done.id, None, None, done.usage, "")
        await client.close()

        by_id = await wait_for_spans(phoenix, set(expect))  # exported in batches while the proxy runs
        records = {rid: proxy.records.get(rid) for rid in expect}

    for rid, (operation, response_id, trace_id, parent_id, usage, slice_key) in expect.items():
        span, record = by_id[rid], records[rid]
        attrs = span["attributes"]
        assert span["name"] == f"{operation} {MODEL}"
        assert attrs["gen_ai.operation.name"] == operation and attrs["gen_ai.request.model"] == MODEL
        assert attrs["gen_ai.response.model"] == record.model
        assert attrs["gen_ai.response.id"] == response_id  # what the client saw
        assert attrs["gen_ai.usage.input_tokens"] == usage.prompt_tokens
        assert attrs["gen_ai.usage.output_tokens"] == usage.completion_tokens
        assert attrs["entropy_sentinel.slice"] == slice_key and attrs["entropy_sentinel.scored"] is True
        if trace_id is None:  # no traceparent: a new trace, no parent
            assert span["parent_id"] is None and span["context"]["trace_id"] not in {e[2] for e in expect.values()}
        else:  # the application's trace, as a child of the application's span
            assert span["context"]["trace_id"] == trace_id and span["parent_id"] == parent_id
        (event,) = span["events"]
        assert event["name"] == "gen_ai.evaluation.result"
        assert event["attributes"]["gen_ai.evaluation.name"] == "entropy_sentinel.p_correct"
        assert event["attributes"]["gen_ai.evaluation.score.value"] == pytest.approx(record.p_correct[0], abs=1e-12)
        assert event["attributes"]["entropy_sentinel.slice"] == slice_key
        text = str(span)
        assert "sk-never-exported" not in text and "capital of France" not in text
