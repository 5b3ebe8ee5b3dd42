"""Issue 14, OpenTelemetry: a GenAI span per instrumented request with its P(correct) as an evaluation
event, in the caller's trace, exported in batches off the request path.

The span's shape against the SDK's in-memory exporter; the wire end to end: the real proxy, a
scripted upstream, the real OTLP/HTTP exporter and a receiver in this file that decodes
``/v1/traces`` with opentelemetry-proto; and a collector that refuses or never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import math
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from entropy_sentinel.config import ConfigError, load_config
from entropy_sentinel.gateway.app import MONITOR_KEY
from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.otel_sink import EVALUATION_EVENT, EVALUATION_NAME, OtelSink, error_type, traces_url
from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.monitor.trace_context import parse_traceparent, parse_tracestate, trace_context
from entropy_sentinel.types import UnscoredReason
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.harness import ConstantScorer, chat_chunk, running_proxy, scripted_upstream, served, sse

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
SECRET_PROMPT = "the-secret-prompt-7f3a"
SECRET_ANSWER = "the-secret-answer-9c1e"
API_KEY = "sk-the-secret-key-55d2"


# -- the caller's trace context, validated ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        TRACEPARENT.upper(),  # uppercase hex is not W3C
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}",
        "00-xyz",
        "",
        "garbage\r\nX-Injected: 1",
    ],
)
def test_a_malformed_traceparent_is_dropped(value):
    assert parse_traceparent(value) is None
    assert trace_context([value], ["k=v"]) == (None, None)


def test_a_valid_traceparent_is_kept_and_a_later_version_is_cut_to_its_four_fields():
    assert parse_traceparent(f" {TRACEPARENT} ") == TRACEPARENT
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01-future") == f"01-{TRACE_ID}-{PARENT_ID}-01"
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01x") is None
    assert trace_context([TRACEPARENT, TRACEPARENT], []) == (None, None)  # which one would be the parent?


def test_tracestate_is_joined_and_a_bad_one_is_dropped_alone():
    assert parse_tracestate(["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE, tenant@vendor=x"]) == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,tenant@vendor=x"
    )
    for bad in (["Upper=1"], ["a=1,a=2"], ["k=" + "v" * 600], ["novalue"], [",".join(f"k{i}=v" for i in range(33))]):
        assert parse_tracestate(bad) is None
        assert trace_context([TRACEPARENT], bad) == (TRACEPARENT, None)


# -- the span, against the SDK's in-memory exporter ---------------------------------------------------


def finished(records: list[RequestRecord], **kwargs: Any) -> list[Any]:
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter, "svc", **kwargs)
    for record in records:
        sink.record_finished(record)
    sink.close()
    return list(exporter.get_finished_spans())


def scored_record(**kwargs: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "request_id": "a" * 32, "route": "chat", "slice": "domain=math,tenant=acme", "started_at": 1_700_000_000.25,
        "status": 200, "stream": True, "model": "gemma-3-270m-it", "request_model": "gemma-3", "scored": True,
        "p_correct": [0.8125], "tokens": {0: 17}, "latency_s": 0.5, "prompt": SECRET_PROMPT,
        "completion": SECRET_ANSWER,
    }
    return RequestRecord(**{**values, **kwargs})


def everything_on(span: Any) -> str:
    """Every name and value a span carries, as text: what a collector would store."""
    parts = [span.name, *map(str, span.attributes.items()), *map(str, span.resource.attributes.items())]
    parts += [f"{e.name} {dict(e.attributes)}" for e in span.events]
    return " ".join(parts)


def test_a_scored_request_is_a_genai_client_span_with_its_evaluation_event():
    (span,) = finished([scored_record()])
    assert span.name == "chat gemma-3" and span.kind is SpanKind.CLIENT
    assert dict(span.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gemma-3",
        "gen_ai.response.model": "gemma-3-270m-it",
        "gen_ai.usage.output_tokens": 17,
        "entropy_sentinel.request_id": "a" * 32,
        "entropy_sentinel.slice": "domain=math,tenant=acme",
        "entropy_sentinel.scored": True,
        "http.response.status_code": 200,
    }
    assert span.start_time == 1_700_000_000_250_000_000 and span.end_time == 1_700_000_000_750_000_000
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "svc"
    (event,) = span.events
    assert event.name == EVALUATION_EVENT == "gen_ai.evaluation.result"
    assert dict(event.attributes) == {
        "gen_ai.evaluation.name": EVALUATION_NAME,
        "gen_ai.evaluation.score.value": 0.8125,
        "entropy_sentinel.slice": "domain=math,tenant=acme",
        "entropy_sentinel.choice.index": 0,
    }
    assert event.timestamp == span.end_time
    assert span.parent is None  # no traceparent: a trace of its own
    text = everything_on(span)
    assert SECRET_PROMPT not in text and SECRET_ANSWER not in text


def test_every_scored_choice_has_its_event():
    (span,) = finished([scored_record(p_correct=[0.25, None, 0.5], tokens={0: 3, 1: 0, 2: 4})])
    scores = [(e.attributes["entropy_sentinel.choice.index"], e.attributes["gen_ai.evaluation.score.value"])
              for e in span.events]
    assert scores == [(0, 0.25), (2, 0.5)]
    assert span.attributes["gen_ai.usage.output_tokens"] == 7


def test_an_unscored_upstream_failure_is_an_error_span_whose_event_says_why():
    record = RequestRecord(
        request_id="b" * 32, route="completions", slice="", status=504, model=None, request_model="m",
        unscored_reason=UnscoredReason.UPSTREAM_TIMEOUT, latency_s=10.0,
    )
    (span,) = finished([record])
    assert span.name == "text_completion m"
    assert span.attributes["gen_ai.operation.name"] == "text_completion"
    assert "gen_ai.response.model" not in span.attributes and "gen_ai.usage.output_tokens" not in span.attributes
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "upstream_timeout"
    (event,) = span.events
    assert dict(event.attributes) == {
        "gen_ai.evaluation.name": EVALUATION_NAME,
        "entropy_sentinel.slice": "",
        "entropy_sentinel.unscored_reason": "upstream_timeout",
    }


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (200, None, None),
        (200, UnscoredReason.NO_LOGPROBS, None),  # answered, just not scorable
        (200, UnscoredReason.UPSTREAM_REFUSED_LOGPROBS, None),  # retried unforced and answered
        (200, UnscoredReason.UPSTREAM_STREAM_ERROR, "upstream_stream_error"),  # an error event mid-stream
        (429, UnscoredReason.UPSTREAM_STATUS, "429"),
        (502, UnscoredReason.UPSTREAM_UNREACHABLE, "upstream_unreachable"),
        (400, UnscoredReason.INVALID_REQUEST, "invalid_request"),
        (499, UnscoredReason.CLIENT_DISCONNECTED, "client_disconnected"),
    ],
)
def test_error_type(status, reason, expected):
    assert error_type(RequestRecord(request_id="c", route="chat", status=status, unscored_reason=reason)) == expected


def test_the_callers_traceparent_makes_the_span_its_child():
    (span,) = finished([scored_record(traceparent=TRACEPARENT, tracestate="rojo=1,congo=2")])
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID and span.parent.is_remote
    assert span.context.span_id != span.parent.span_id
    assert span.context.trace_state.to_header() == "rojo=1,congo=2"


def test_a_malformed_traceparent_starts_a_new_trace():
    """The gateway drops it (above); a record that still carried one would not be parented either."""
    spans = finished([scored_record(traceparent="00-not-a-trace-01"), scored_record(traceparent=None)])
    assert [s.parent for s in spans] == [None, None]
    assert len({s.context.trace_id for s in spans}) == 2 and TRACE_ID not in {
        format(s.context.trace_id, "032x") for s in spans
    }


def test_a_caller_that_does_not_sample_gets_no_span():
    """The caller's sampling decision (flags 00) is honoured, as any W3C participant does."""
    assert finished([scored_record(traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00")]) == []


def test_close_flushes_what_is_queued_and_monitor_close_closes_the_sinks():
    exporter = InMemorySpanExporter()
    sink = OtelSink(exporter, schedule_delay_s=3600)  # nothing would go out before an hour
    monitor = Monitor(SliceRegistry(), None, [sink])
    for i in range(3):
        monitor.finish(scored_record(request_id=f"r{i}"))
    time.sleep(0.05)
    assert exporter.get_finished_spans() == ()
    monitor.close()
    assert [s.attributes["entropy_sentinel.request_id"] for s in exporter.get_finished_spans()] == ["r0", "r1", "r2"]
    sink.record_finished(scored_record(request_id="late"))  # after the stop: ignored, no error
    assert len(exporter.get_finished_spans()) == 3


@dataclass
class BlockingExporter(SpanExporter):
    """Holds the first batch until released: a collector that stalls."""

    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)
    exported: list[str] = field(default_factory=list)

    def export(self, spans):
        self.entered.set()
        self.release.wait(10)
        self.exported += [s.attributes["entropy_sentinel.request_id"] for s in spans]
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def test_a_stalled_collector_keeps_at_most_the_queue_and_warns_once(caplog):
    exporter = BlockingExporter()
    sink = OtelSink(exporter, max_queue_size=4, schedule_delay_s=3600)
    for i in range(4):  # a full batch wakes the export thread, which stalls on it
        sink.record_finished(scored_record(request_id=f"a{i}"))
    assert exporter.entered.wait(5)
    caplog.set_level(logging.WARNING)
    t0 = time.perf_counter()
    for i in range(50):
        sink.record_finished(scored_record(request_id=f"b{i}"))
    per_record = (time.perf_counter() - t0) / 50
    assert per_record < 0.005  # never waits for the collector
    full = [r for r in caplog.records if r.getMessage().startswith("Queue full")]
    assert len(full) == 1  # not one line per dropped span
    exporter.release.set()
    sink.close()
    assert exporter.exported == ["a0", "a1", "a2", "a3", "b46", "b47", "b48", "b49"]  # the newest kept


def test_traces_url():
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/otlp/v1/traces") == "https://c/otlp/v1/traces"
    assert traces_url("https://c/otlp") == "https://c/otlp/v1/traces"


# -- configuration --------------------------------------------------------------------------------------


def test_otel_is_off_by_default_and_set_by_env():
    cfg = load_config(environ={})
    assert (cfg.otel.endpoint, cfg.otel.service_name) == ("", "entropy-sentinel")
    cfg = load_config(environ={"SENTINEL_OTEL_ENDPOINT": "http://collector:4318", "SENTINEL_OTEL_MAX_QUEUE_SIZE": "64"})
    assert (cfg.otel.endpoint, cfg.otel.max_queue_size) == ("http://collector:4318", 64)


@pytest.mark.parametrize(
    "endpoint", ["collector:4318", "ftp://collector:4318", "http://", "http://:4318", "http://c:99999",
                 "http://user:hunter2@collector:4318"],
)
def test_a_bad_endpoint_is_refused_without_echoing_credentials(endpoint):
    with pytest.raises(ConfigError, match="otel.endpoint") as info:
        load_config(overrides={"otel": {"endpoint": endpoint}}, environ={})
    assert "hunter2" not in str(info.value)


def test_the_other_otel_keys_are_validated_all_at_once():
    bad = {"service_name": " ", "export_timeout_s": 0, "max_queue_size": 0, "schedule_delay_s": -1}
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"otel": bad}, environ={})
    assert all(f"otel.{key}" in str(info.value) for key in bad)


def test_a_missing_extra_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("opentelemetry") else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'entropy-sentinel\[otel\]'"):
        load_config(overrides={"otel": {"endpoint": "http://collector:4318"}}, environ={})


# -- the real wire: proxy -> OTLP/HTTP exporter -> a receiver -------------------------------------------


TOP = [("Par", math.log(0.5)), ("Lon", math.log(0.25)), ("Ber", math.log(0.125))]
TOKENS = ["Par", "is", SECRET_ANSWER]


async def upstream(request: web.Request, up: Any) -> web.StreamResponse:
    if request.method == "GET":  # the /v1/models probe of a proxy with an estimator
        return web.json_response({"object": "list", "data": []})
    body = await request.json()
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(TOKENS)}
        logprobs = {"content": [chat_chunk(t, TOP)["choices"][0]["logprobs"]["content"][0] for t in TOKENS]}
        return web.json_response({
            "id": "chatcmpl-unary", "object": "chat.completion", "created": 1, "model": "scripted",
            "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
        })
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, tok in enumerate(TOKENS):
        await resp.write(sse(chat_chunk(tok, TOP, finish="stop" if i == len(TOKENS) - 1 else None)))
    if (body.get("stream_options") or {}).get("include_usage"):  # vLLM's last chunk: no choices, the usage
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        await resp.write(sse({**chat_chunk("", None), "choices": [], "usage": usage}))
    await resp.write(b"data: [DONE]\n\n")
    return resp


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` bodies decoded as ExportTraceServiceRequest."""

    url: str = ""
    bodies: list[bytes] = field(default_factory=list)
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)

    def spans(self) -> list[tuple[dict[str, Any], ProtoSpan]]:
        """(resource attributes, span) of every span received."""
        return [
            (attributes(rs.resource.attributes), span)
            for req in self.requests
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        receiver.bodies.append(body)
        receiver.requests.append(message)
        answer = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    async with served(app) as receiver.url:
        yield receiver


async def chat(
    url: str, headers: dict[str, str], stream: bool, usage: bool = False
) -> tuple[int, dict[str, str], bytes, float]:
    body = {"model": "my-model", "stream": stream, "messages": [{"role": "user", "content": SECRET_PROMPT}]}
    if usage:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.post(
        url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}", **headers}
    ) as resp:
        raw = await resp.read()
        return resp.status, dict(resp.headers), raw, time.perf_counter() - t0


async def until(condition: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_spans_reach_a_real_otlp_receiver_in_the_applications_trace():
    async with otlp_receiver() as receiver, scripted_upstream(upstream) as up:
        otel = {"endpoint": receiver.url, "service_name": "sentinel-e2e", "schedule_delay_s": 0.1}
        async with running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8125), otel=otel) as proxy:
            status, headers, raw, _ = await chat(
                proxy.url, {"traceparent": TRACEPARENT, "tracestate": "app=1", "X-Sentinel-Slice": "domain=geo"}, True,
                usage=True,
            )
            assert status == 200 and b'"p_correct":[0.8125]' in raw and raw.endswith(b"data: [DONE]\n\n")
            streamed = proxy.records.get(headers["X-Sentinel-Request-Id"])
            status, headers, raw, _ = await chat(proxy.url, {"traceparent": "00-garbage-01"}, False)
            assert status == 200 and headers["X-Sentinel-P-Correct"] == "0.8125"
            unary = proxy.records.get(headers["X-Sentinel-Request-Id"])
            assert unary.traceparent is None  # never kept, never echoed
            await until(lambda: len(receiver.spans()) == 2)  # batches arrive while the proxy runs
    by_id = {attributes(s.attributes)["entropy_sentinel.request_id"]: (res, s) for res, s in receiver.spans()}
    resource, span = by_id[streamed.request_id]
    assert resource["service.name"] == "sentinel-e2e"
    assert span.name == "chat my-model" and span.kind == ProtoSpan.SPAN_KIND_CLIENT
    assert span.trace_id.hex() == TRACE_ID and span.parent_span_id.hex() == PARENT_ID
    assert span.trace_state == "app=1"
    attrs = attributes(span.attributes)
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "my-model"
    assert attrs["gen_ai.response.model"] == "scripted" and attrs["gen_ai.response.id"] == "chatcmpl-1"
    assert attrs["gen_ai.usage.input_tokens"] == 9 and attrs["gen_ai.usage.output_tokens"] == 3  # the last chunk's
    assert span.start_time_unix_nano == round(streamed.started_at * 1e6) * 1000
    assert span.end_time_unix_nano - span.start_time_unix_nano == round(streamed.latency_s * 1e9)
    (event,) = span.events
    assert event.name == "gen_ai.evaluation.result"
    assert attributes(event.attributes) == {
        "gen_ai.evaluation.name": "entropy_sentinel.p_correct",
        "gen_ai.evaluation.score.value": 0.8125,
        "entropy_sentinel.slice": "domain=geo",
        "entropy_sentinel.choice.index": 0,
    }
    _, fresh = by_id[unary.request_id]
    assert fresh.parent_span_id == b"" and fresh.trace_id.hex() != TRACE_ID  # a trace of its own
    fresh_attrs = attributes(fresh.attributes)
    assert fresh_attrs["gen_ai.response.id"] == "chatcmpl-unary"
    assert fresh_attrs["gen_ai.usage.input_tokens"] == 11 and fresh_attrs["gen_ai.usage.output_tokens"] == 3
    wire = b"".join(receiver.bodies)
    for secret in (SECRET_PROMPT, SECRET_ANSWER, API_KEY):
        assert secret.encode() not in wire


async def test_the_stop_flushes_the_last_spans_to_the_receiver():
    async with otlp_receiver() as receiver, scripted_upstream(upstream) as up:
        otel = {"endpoint": receiver.url + "/v1/traces", "schedule_delay_s": 3600}
        async with running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8125), otel=otel) as proxy:
            for _ in range(3):
                assert (await chat(proxy.url, {}, True))[0] == 200
            await asyncio.sleep(0.2)
            assert receiver.spans() == []  # not before the batch is due
        assert len(receiver.spans()) == 3  # the stop sent them


# -- a collector that refuses or never answers -----------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def silent_collector() -> AsyncIterator[tuple[str, list[int]]]:
    """Accepts connections and never answers (a hung collector): the exporter waits out its timeout."""
    accepted: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def latencies(url: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        status, headers, raw, seconds = await chat(url, {"traceparent": TRACEPARENT}, stream=i % 2 == 0)
        assert status == 200  # no exception reaches the client
        assert b"0.8125" in raw or headers.get("X-Sentinel-P-Correct") == "0.8125"
        out.append(seconds)
    return out


@pytest.mark.parametrize("collector", ["closed port", "never answers"])
async def test_an_unreachable_collector_never_slows_or_breaks_a_request(collector, caplog):
    caplog.set_level(logging.WARNING)
    timeout_s = 1.5
    async with contextlib.AsyncExitStack() as stack:
        up = await stack.enter_async_context(scripted_upstream(upstream))
        if collector == "closed port":
            endpoint, accepted = f"http://127.0.0.1:{closed_port()}", None
        else:
            endpoint, accepted = await stack.enter_async_context(silent_collector())
        async with running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8125)) as baseline:
            await latencies(baseline.url, 4)  # warm
            base = await latencies(baseline.url, 20)
        otel = {"endpoint": endpoint, "export_timeout_s": timeout_s, "schedule_delay_s": 0.05}
        proxy_cm = running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.8125), otel=otel)
        proxy = await proxy_cm.__aenter__()
        try:
            await latencies(proxy.url, 4)
            with_otel = await latencies(proxy.url, 20)
            assert len(proxy.app[MONITOR_KEY].sinks) == 2
            # the exporter really failed meanwhile (each failed export blocks its thread for up to timeout_s)
            if accepted is not None:
                await until(lambda: bool(accepted), 5)
            else:
                await until(lambda: any(r.name.startswith("opentelemetry.exporter") for r in caplog.records), 5)
        finally:
            t0 = time.perf_counter()
            await proxy_cm.__aexit__(None, None, None)
            stop_s = time.perf_counter() - t0
    assert max(with_otel) < 0.5, with_otel
    assert statistics.median(with_otel) < 3 * statistics.median(base) + 0.02, (with_otel, base)
    assert stop_s < timeout_s + 3.5  # the flush at stop is bounded too
