"""The instrumented routes: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Each request is parsed once, rewritten to force top-k logprobs, sent upstream; each response (or
each streamed event) is parsed once, its logprobs fed to the choice's trajectory and cut back to
what the client asked for, and forwarded at once. The record is finished after the last byte --
or, under ``store.durability: strict``, just before it, once the store has committed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import Future
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from entropy_sentinel.gateway.errors import REQUEST_ID_KEY, ProxyError, error_body, error_response
from entropy_sentinel.gateway.forward import forward
from entropy_sentinel.gateway.logprob_cut import FastResult, answer_meta, fast_process
from entropy_sentinel.gateway.request_body import encode_request_json, parse_request_json, read_body, utf8_or_none
from entropy_sentinel.gateway.scoring import ScoringWorker
from entropy_sentinel.gateway.sse import (
    DONE,
    MAX_EVENT_BYTES,
    SSEDecoder,
    SSEEventTooLarge,
    encode_comment,
    encode_data,
    parse_event,
)
from entropy_sentinel.gateway.upstream_http import UpstreamHTTP, classify_error, request_headers, response_headers
from entropy_sentinel.gateway.wire import DIALECTS, ChoiceExtractor, Dialect, Endpoint, LogprobPlan, plan_logprobs
from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.records import RecentRecords, RequestRecord
from entropy_sentinel.monitor.slices import SliceError
from entropy_sentinel.monitor.trace_context import trace_context
from entropy_sentinel.types import ScorerCatalog, UnscoredReason

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Sentinel-Request-Id"
_EVENT_TOO_LARGE = "The upstream sent a streamed event larger than the proxy accepts (upstream.max_event_mb)."
_TOO_LARGE_CODE = UnscoredReason.UPSTREAM_EVENT_TOO_LARGE.value
P_CORRECT_HEADER = "X-Sentinel-P-Correct"
#: longest a response waits for its record's commit under strict durability (then it goes out anyway)
COMMIT_TIMEOUT_S = 60.0


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)  # orjson refuses integers beyond 64 bits; the stdlib does not


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # an integer beyond 64 bits, which only the stdlib parsed
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _first_text(obj: Any) -> str | None:
    """The first choice's text (chat message content or completion text), for opt-in capture."""
    try:
        choice = obj["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice.get("text")
    except (KeyError, IndexError, TypeError):
        return None
    return text[:65536] if isinstance(text, str) else None


def refuses_logprobs(payload: bytes) -> bool:
    """An upstream error that names logprobs (vLLM above --max-logprobs, reasoning models)."""
    return b"logprob" in payload.lower()


class Instrumenter:
    def __init__(
        self,
        upstream: UpstreamHTTP,
        records: RecentRecords,
        top_k: int = 20,
        entropy_variant: str = "topk",
        estimators: ScorerCatalog | None = None,
        dialect: Dialect = DIALECTS["openai"],
        monitor: Monitor | None = None,
        max_choices: int = 16,
        max_event_bytes: int = MAX_EVENT_BYTES,
        score_on_loop_s: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.max_choices = max_choices
        self.max_event_bytes = max_event_bytes
        self.dialect = dialect
        self.monitor = monitor
        self.records = records
        self.top_k = top_k
        self.entropy_variant = entropy_variant
        #: which estimator scores which model; a reload swaps this reference (gateway/estimators.py),
        #: a request keeps the catalog it started with
        self.estimators = estimators
        #: features and scores: on the loop when measured cheap, else off it, batched
        self.scoring = ScoringWorker(inline_budget_s=score_on_loop_s)

    async def handle(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        record = RequestRecord(request_id=uuid.uuid4().hex, route=endpoint)
        ending = request[ENDING_KEY] = _Ending(self, record)
        ids = {REQUEST_ID_HEADER: record.request_id}
        try:
            response = await self._handle(request, endpoint, record, ids)
            record.status = record.status or response.status
            await ending.durable()  # strict: committed before aiohttp sends this answer (streams ended already)
            return response
        except asyncio.CancelledError:  # the client disconnected (handler_cancellation)
            if not ending.done:
                record.status, record.unscored_reason = 499, UnscoredReason.CLIENT_DISCONNECTED
            raise
        except web.HTTPException as exc:  # aiohttp refused the request (413: body past server.max_body_mb)
            self._failed(record, exc.status)
            await ending.durable()
            raise
        except Exception:  # a bug of ours: aiohttp answers 500; the record says so too
            self._failed(record, 500)
            await ending.durable()
            raise
        finally:
            ending.conclude()

    @staticmethod
    def _failed(record: RequestRecord, status: int) -> None:
        """The real status of a request that ended in an exception (never 0: alerts count it)."""
        record.status = record.status or status
        if not record.scored and record.unscored_reason is None:
            refused = status < 500
            record.unscored_reason = UnscoredReason.INVALID_REQUEST if refused else UnscoredReason.INTERNAL_ERROR

    async def _handle(
        self, request: web.Request, endpoint: Endpoint, record: RequestRecord, ids: dict[str, str]
    ) -> web.StreamResponse:
        """Validate, rewrite, relay. Bad input is answered here, in OpenAI's error shape."""
        request[REQUEST_ID_KEY] = record.request_id  # for an error the middleware answers
        record.traceparent, record.tracestate = trace_context(  # validated: garbage is dropped, never echoed
            request.headers.getall("traceparent", ()), request.headers.getall("tracestate", ())
        )
        if self.monitor is not None:
            slice_headers = request.headers.getall("X-Sentinel-Slice", [])
            try:
                if len(slice_headers) > 1:
                    raise SliceError("send one X-Sentinel-Slice header (its tags comma-separated), not several")
                record.slice = self.monitor.slice_of(  # a key whose bytes are not UTF-8 matches no tenant
                    slice_headers[0] if slice_headers else None, utf8_or_none(request.headers.get("Authorization"))
                )
            except SliceError as exc:
                record.unscored_reason = UnscoredReason.INVALID_REQUEST
                return error_response(400, str(exc), code="invalid_slice", param="X-Sentinel-Slice", headers=ids)
        try:
            raw = await read_body(request)
            obj = parse_request_json(raw)
        except ProxyError as exc:  # 400 (JSON), 408 (too slow), 413 (too big), 415 (coding)
            record.unscored_reason = UnscoredReason.INVALID_REQUEST
            return exc.response(ids)
        record.stream = obj.get("stream") is True
        requested = obj.get("model")
        record.request_model = requested[:256] if isinstance(requested, str) else None
        sampled = self.monitor is None or self.monitor.sampled(record.slice)
        plan = plan_logprobs(obj, endpoint, self.top_k, self.dialect) if sampled else None
        if self.monitor is not None and self.monitor.capture_content:
            record.prompt = encode_request_json(obj.get("messages", obj.get("prompt"))).decode()[:65536]
        if plan is None:
            record.unscored_reason = (
                UnscoredReason.LOGPROB_FIELDS_NOT_UNDERSTOOD if sampled else UnscoredReason.NOT_SAMPLED
            )
            return await forward(
                request, self.upstream, raw, ids, before_end=request[ENDING_KEY].durable, close=self._closes(record)
            )
        plan.original_body = raw
        handler = self._stream if plan.stream else self._unary
        return await handler(request, plan, encode_request_json(obj), record, ids)

    def _upstream_headers(self, request: web.Request, close: bool = False) -> dict[str, str]:
        headers = request_headers(request.headers, extra_drop=("content-type", "accept-encoding"), close=close)
        headers["Content-Type"] = "application/json"
        return headers

    def _closes(self, record: RequestRecord) -> bool:
        """A relayed stream whose upstream drops the connection after it (``Dialect.closes_after_stream``)."""
        return record.stream and self.dialect.closes_after_stream

    async def _retry_unforced(
        self,
        request: web.Request,
        plan: LogprobPlan,
        record: RequestRecord,
        ids: dict[str, str],
        reason: UnscoredReason = UnscoredReason.UPSTREAM_REFUSED_LOGPROBS,
    ) -> web.StreamResponse:
        """The client's own body, relayed untouched and unscored (``reason`` says why)."""
        log.info("request_id=%s forwarded unforced, unscored: %s", record.request_id, reason.value)
        record.unscored_reason = reason
        return await forward(
            request, self.upstream, plan.original_body, ids, before_end=request[ENDING_KEY].durable,
            close=self._closes(record),
        )

    def _too_many_choices(self, plan: LogprobPlan) -> bool:
        """More choices than ``signal.max_choices`` (or an ``n`` that is not an integer): not instrumented."""
        return plan.choices is None or plan.choices > self.max_choices

    @staticmethod
    def _upstream_failed(record: RequestRecord, ids: dict[str, str], exc: BaseException) -> web.Response:
        """No answer from the upstream (connect, reset, timeout): the client gets the mapped 502/504, the
        record its code, the log the exception's type (a load balancer may resend the request elsewhere,
        so the replica's log is where an operator finds why it failed)."""
        status, code, message = classify_error(exc)
        log.warning("request_id=%s upstream failed (%s): %d %s", record.request_id, type(exc).__name__, status, code)
        record.unscored_reason = UnscoredReason(code)
        return error_response(status, message, code=code, headers=ids)

    @staticmethod
    def _monitoring_failed(record: RequestRecord, exc: Exception) -> None:
        """A failure of ours while instrumenting: the answer is relayed as sent, unscored (the log
        names the exception's type only: its message may quote the upstream's content)."""
        log.warning("request_id=%s instrumenting failed (%s); relayed unscored", record.request_id, type(exc).__name__)
        record.unscored_reason = record.unscored_reason or UnscoredReason.INTERNAL_ERROR

    async def _unary(
        self, request: web.Request, plan: LogprobPlan, forced: bytes, record: RequestRecord, ids: dict[str, str]
    ) -> web.StreamResponse:
        estimators = self.estimators  # this request's, whatever a reload swaps in meanwhile
        if self._too_many_choices(plan):
            return await self._retry_unforced(request, plan, record, ids, UnscoredReason.TOO_MANY_CHOICES)
        try:
            async with self.upstream.decoded.post(
                self.upstream.url(request.raw_path), data=forced, headers=self._upstream_headers(request)
            ) as up:
                payload = await up.read()
                status, reason, up_headers = up.status, up.reason, up.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._upstream_failed(record, ids, exc)
        headers = response_headers(up_headers, keep_length=False, drop_encoding=True)
        headers.update(ids)
        if status == 400 and refuses_logprobs(payload):
            return await self._retry_unforced(request, plan, record, ids)
        if status != 200:
            record.unscored_reason = UnscoredReason.UPSTREAM_STATUS
            return web.Response(status=status, reason=reason, body=payload, headers=headers)
        t0 = time.perf_counter()
        extractor = ChoiceExtractor(plan, self.top_k, self.max_choices)
        capture = self.monitor is not None and self.monitor.capture_content
        try:  # decode only what is read, cut the logprobs out of the upstream's bytes (logprob_cut)
            fast = None if capture else fast_process(payload, extractor)
        except Exception as exc:  # monitoring never hurts the client
            self._monitoring_failed(record, exc)
            fast = FastResult(payload, False, None)
        if fast is not None:
            body, model = fast.payload, fast.model
            record.note_answer(*answer_meta(fast.id, fast.usage))
        else:  # the general path: parse, rewrite, dump
            try:
                obj = _loads(payload)
            except (ValueError, RecursionError):
                record.unscored_reason = UnscoredReason.UPSTREAM_BODY_NOT_JSON
                return web.Response(status=status, body=payload, headers=headers)
            if capture:
                record.completion = _first_text(obj)
            try:
                body = _dumps(obj) if extractor.process_body(obj) else payload
            except Exception as exc:  # monitoring never hurts the client
                self._monitoring_failed(record, exc)
                body = payload
            model = obj.get("model") if isinstance(obj, dict) else None
            if isinstance(obj, dict):
                record.note_answer(obj.get("id"), obj.get("usage"))
        record.overhead_s += time.perf_counter() - t0
        scores = await self._finish(record, extractor, model, estimators, plan.model)
        if scores is not None:
            headers[P_CORRECT_HEADER] = ",".join(f"{p:.4f}" for p in scores)
        return web.Response(status=status, reason=reason, body=body, headers=headers)

    async def _stream(
        self, request: web.Request, plan: LogprobPlan, forced: bytes, record: RequestRecord, ids: dict[str, str]
    ) -> web.StreamResponse:
        estimators = self.estimators  # this stream's, whatever a reload swaps in before it ends
        if self._too_many_choices(plan):
            return await self._retry_unforced(request, plan, record, ids, UnscoredReason.TOO_MANY_CHOICES)
        async with AsyncExitStack() as stack:
            try:
                up = await stack.enter_async_context(
                    self.upstream.decoded.post(
                        self.upstream.url(request.raw_path), data=forced,
                        headers=self._upstream_headers(request, close=self._closes(record)),
                    )
                )
                if up.status != 200:
                    payload = await up.read()
                    if up.status == 400 and refuses_logprobs(payload):
                        await stack.aclose()
                        return await self._retry_unforced(request, plan, record, ids)
                    headers = response_headers(up.headers, keep_length=False, drop_encoding=True)
                    headers.update(ids)
                    record.unscored_reason = UnscoredReason.UPSTREAM_STATUS
                    return web.Response(status=up.status, reason=up.reason, body=payload, headers=headers)
                decoder = SSEDecoder(self.max_event_bytes)
                events: list[bytes] = []
                while not events:  # hold the headers until the first event: a refusal can still be retried
                    chunk = await up.content.readany()
                    if not chunk:
                        break
                    events = decoder.feed(chunk)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return self._upstream_failed(record, ids, exc)
            except SSEEventTooLarge:
                record.unscored_reason = UnscoredReason.UPSTREAM_EVENT_TOO_LARGE
                return error_response(502, _EVENT_TOO_LARGE, code=_TOO_LARGE_CODE, headers=ids)
            if events and self._is_logprob_refusal(events[0]):
                await stack.aclose()
                return await self._retry_unforced(request, plan, record, ids)
            headers = response_headers(up.headers, keep_length=False, drop_encoding=True)
            headers.update(ids)
            response = web.StreamResponse(status=200, reason=up.reason, headers=headers)
            await response.prepare(request)
            relay = _StreamRelay(self, plan, record, estimators)
            ending = request[ENDING_KEY]
            try:
                while True:
                    out = relay.rewrite(events)
                    if out:
                        await response.write(out)
                    if relay.done:  # the score comment, then [DONE]
                        tail = await relay.close()
                        await ending.durable(response.status)
                        await response.write(tail)
                        break
                    chunk = await up.content.readany()
                    if not chunk:  # the upstream ended without [DONE]: still say the score
                        decoder.feed(b"")  # (unless it cut an oversized event: that raises)
                        tail = await relay.close()
                        await ending.durable(response.status)
                        await response.write(tail)
                        break
                    events = decoder.feed(chunk)
            except ConnectionResetError:
                record.status, record.unscored_reason = 499, UnscoredReason.CLIENT_DISCONNECTED
                log.info("request_id=%s client went away; upstream request cancelled", record.request_id)
                return response
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError, SSEEventTooLarge) as exc:
                status, code, message = classify_error(exc)
                if isinstance(exc, SSEEventTooLarge):  # the rest of the stream is not read: its end is unknown
                    code, message = _TOO_LARGE_CODE, _EVENT_TOO_LARGE
                record.status, record.unscored_reason = status, UnscoredReason(code)
                await ending.durable()
                try:
                    await response.write(encode_data(error_body(status, message, code=code)))
                except ConnectionResetError:
                    return response
            await response.write_eof()
            return response

    @staticmethod
    def _is_logprob_refusal(raw: bytes) -> bool:
        event = parse_event(raw)
        return event.data is not None and event.data.startswith(b"{\"error\"") and refuses_logprobs(event.data)

    async def _finish(
        self,
        record: RequestRecord,
        extractor: ChoiceExtractor,
        model: Any,
        estimators: ScorerCatalog | None,
        requested_model: str | None = None,
    ) -> list[float] | None:
        """Features of every choice, and their scores by the estimator of the response's model.

        Both are computed by the scoring worker (:mod:`~entropy_sentinel.gateway.scoring`): on the
        event loop when the estimator's measured cost for this many tokens is within
        ``signal.score_on_loop_ms``, else in its thread, where a slow estimator or a long response
        cannot stall the other streams the proxy is relaying, and where responses that finish
        together are scored in one estimator call (per estimator).

        ``estimators`` is the catalog the request started with; the response's model (the request's,
        ``requested_model``, when the response names none) picks the estimator. A model without one
        is recorded unscored (``no_estimator_for_model``); with no estimator configured at all (no or
        an empty catalog) the features are recorded, ``scored`` true, and no P(correct).
        """
        t0 = time.perf_counter()
        record.model = model if isinstance(model, str) else record.model
        configured = bool(estimators)  # None or empty: no estimator configured at all
        scorer = estimators.scorer_for(record.model or requested_model) if estimators else None
        wanted = record.unscored_reason is None and extractor.unscored is None
        summary = await self.scoring.summarize(sorted(extractor.trajectories.items()), scorer if wanted else None)
        for choice in summary.choices:
            record.features_by_variant[choice.index] = choice.features_by_variant
            record.features[choice.index] = choice.features_by_variant[self.entropy_variant]
            record.tokens[choice.index] = choice.tokens
            record.upstream_top_k[choice.index] = choice.min_candidates
        if record.unscored_reason is None:  # scored only from finite data, of every choice
            with_data = bool(record.tokens) and all(record.tokens.values())
            record.unscored_reason = extractor.unscored or (None if with_data else UnscoredReason.NO_LOGPROBS)
        if record.unscored_reason is None and configured and scorer is None:  # never another model's estimator
            record.unscored_reason = UnscoredReason.NO_ESTIMATOR_FOR_MODEL
        record.scored = record.unscored_reason is None
        if not record.scored or scorer is None:
            record.overhead_s += time.perf_counter() - t0
            return None
        if summary.scores is None:  # a failing estimator leaves the response unscored, never broken
            record.scored = False
            self._monitoring_failed(record, summary.error or RuntimeError("no scores"))
            return None
        record.p_correct = scores = summary.scores
        record.overhead_s += time.perf_counter() - t0  # wall time: the score delays the response's end
        return scores


class _Ending:
    """Concludes one request's record exactly once: its latency, the recent window, the monitor (slice
    counters, sinks, store) and the log line. :meth:`durable` concludes it early, before the
    response's last byte, and waits for the store's commit when ``store.durability`` is strict."""

    __slots__ = ("done", "owner", "record", "started")

    def __init__(self, owner: Instrumenter, record: RequestRecord) -> None:
        self.owner = owner
        self.record = record
        self.started = time.perf_counter()
        self.done = False

    def conclude(self) -> Future[bool] | None:
        """Finish the record (once); the store's commit Future under strict durability."""
        if self.done:
            return None
        self.done = True
        record, owner = self.record, self.owner
        record.latency_s = time.perf_counter() - self.started
        owner.records.add(record)
        committed = owner.monitor.finish(record) if owner.monitor is not None else None
        log.info(
            "request_id=%s route=%s status=%s scored=%s latency_ms=%.1f overhead_ms=%.2f",
            record.request_id, record.route, record.status, record.scored,
            record.latency_s * 1e3, record.overhead_s * 1e3,
        )
        return committed

    async def durable(self, status: int | None = None) -> None:
        """Strict durability: conclude now (``status`` is the response's, when the record has none
        yet) and wait until the store has committed the record. Batched: nothing (concluded later)."""
        if self.done or self.owner.monitor is None or not self.owner.monitor.strict:
            return
        self.record.status = self.record.status or status or 0
        committed = self.conclude()
        if committed is None:  # nothing stored (no store, or refused before the upstream)
            return
        try:
            ok = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(committed)), COMMIT_TIMEOUT_S)
        except TimeoutError:
            ok = False
        if not ok:  # the answer still goes out: monitoring never hurts the client
            log.error("request_id=%s store.durability strict: the record's commit failed", self.record.request_id)


ENDING_KEY = web.RequestKey("sentinel_ending", _Ending)


class _StreamRelay:
    """Rewrites the events of one stream; writes the score comment just before ``[DONE]``."""

    def __init__(
        self, owner: Instrumenter, plan: LogprobPlan, record: RequestRecord, estimators: ScorerCatalog | None
    ) -> None:
        self.owner = owner
        self.record = record
        self.estimators = estimators
        self.requested_model = plan.model
        self.extractor = ChoiceExtractor(plan, owner.top_k, owner.max_choices)
        self.done = False
        self._done_event = b""
        self.capture = owner.monitor is not None and owner.monitor.capture_content
        self._parts: list[str] = []

    def _capture(self, obj: dict[str, Any]) -> None:
        for choice in obj.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(text, str):
                    self._parts.append(text)

    def rewrite(self, events: list[bytes]) -> bytes:
        t0 = time.perf_counter()
        out: list[bytes] = []
        for raw in events:
            if raw.startswith(b"data: {") and b"\n" not in raw:  # one JSON data line: no Event to build
                out.append(self._rewrite_data(raw, raw[6:]))
                continue
            event = parse_event(raw)
            if event.data is None:
                out.append(raw + b"\n\n")
            elif event.data == DONE:  # close() sends the score comment, then this
                self._done_event = raw + b"\n\n"
                self.done = True
                break
            else:
                out.append(self._rewrite_data(raw, event.data))
        self.record.overhead_s += time.perf_counter() - t0
        return b"".join(out)

    def _rewrite_data(self, raw: bytes, data: bytes) -> bytes:
        if not self.capture and b"\n" not in data:  # one data line: the cut bytes stay one line
            try:  # decode only what is read, cut the logprobs out of the upstream's bytes (logprob_cut)
                fast = fast_process(data, self.extractor)
            except Exception as exc:  # monitoring never hurts the client: this event goes out as it came
                self.owner._monitoring_failed(self.record, exc)
                return raw + b"\n\n"
            if fast is not None:
                if self.record.model is None:
                    self.record.model = fast.model
                if (self.record.response_id is None and fast.id is not None) or (
                    fast.usage is not None and bytes(fast.usage) != b"null"
                ):  # the first event's id, the usage of the event that has it: nothing decoded per token
                    self.record.note_answer(*answer_meta(fast.id, fast.usage))
                return encode_data(fast.payload) if fast.changed else raw + b"\n\n"
        try:  # the general path: parse, rewrite, dump
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return raw + b"\n\n"
        if not isinstance(obj, dict):
            return raw + b"\n\n"
        if "error" in obj:
            self.record.unscored_reason = UnscoredReason.UPSTREAM_STREAM_ERROR
            return raw + b"\n\n"
        if self.record.model is None and isinstance(obj.get("model"), str):
            self.record.model = obj["model"]
        self.record.note_answer(obj.get("id"), obj.get("usage"))
        if self.capture:
            self._capture(obj)
        try:
            if self.extractor.process_body(obj):
                return encode_data(orjson.dumps(obj))
        except Exception as exc:  # monitoring never hurts the client: this event goes out as it came
            self.owner._monitoring_failed(self.record, exc)
        return raw + b"\n\n"

    async def close(self) -> bytes:
        """The ``: sentinel {...}`` comment with the score (SSE clients ignore comments), then the
        ``[DONE]`` event when the upstream sent one."""
        if self.capture:
            self.record.completion = "".join(self._parts)[:65536]
        scores = await self.owner._finish(
            self.record, self.extractor, self.record.model, self.estimators, self.requested_model
        )
        payload = {"request_id": self.record.request_id, "scored": self.record.scored, "p_correct": scores}
        return encode_comment(b"sentinel " + orjson.dumps(payload)) + self._done_event
