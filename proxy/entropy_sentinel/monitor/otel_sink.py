"""The OpenTelemetry :class:`~entropy_sentinel.monitor.sinks.RecordSink`: a span per instrumented request.

Each finished chat or completion request becomes one span of the GenAI semantic conventions
(``chat {model}`` / ``text_completion {model}``, kind CLIENT, ``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.usage.input_tokens``
and ``gen_ai.usage.output_tokens`` (the upstream's ``usage`` when it sent one; else the tokens the proxy
counted, and no input count)), timed by the
record (``started_at``, ``latency_s``), with ERROR status and ``error.type`` when the upstream (or
the request) failed. Its P(correct) is a ``gen_ai.evaluation.result`` event on the span
(``gen_ai.evaluation.name = "entropy_sentinel.p_correct"``, ``gen_ai.evaluation.score.value``,
``entropy_sentinel.slice``; ``entropy_sentinel.unscored_reason`` when there is no score), one per
scored choice. A request that carried a valid W3C ``traceparent`` (kept on the record by the gateway,
see :mod:`~entropy_sentinel.monitor.trace_context`) gets a span in the caller's trace, as a child of
the caller's span; without one, a new trace.

Off the request path: :meth:`OtelSink.record_finished` builds the span on the loop (tens of
microseconds, no I/O) and hands it to a BatchSpanProcessor, whose thread exports batches over
OTLP/HTTP; its queue is bounded (``otel.max_queue_size``, the oldest dropped past it), so a slow or
unreachable collector costs memory up to that bound and a warning a minute, never a request's time.
:meth:`OtelSink.close` (at the app's stop) flushes, bounded by ``otel.export_timeout_s``.

Never on a span: prompts, completions, headers (API keys), the request body; only the record's
bounded metadata. Needs the ``otel`` extra (``opentelemetry-sdk``, ``opentelemetry-exporter-otlp-proto-http``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.types import UnscoredReason

__all__ = [
    "EVALUATION_EVENT",
    "EVALUATION_NAME",
    "OPERATIONS",
    "OtelSettings",
    "OtelSink",
    "error_type",
    "open_otel_sink",
    "traces_url",
]

log = logging.getLogger(__name__)

EVALUATION_EVENT = "gen_ai.evaluation.result"
EVALUATION_NAME = "entropy_sentinel.p_correct"
#: record route -> ``gen_ai.operation.name``
OPERATIONS: dict[str, str] = {"chat": "chat", "completions": "text_completion"}
#: the BatchSpanProcessor's default batch (a smaller queue gets batches of its size)
_BATCH = 512
#: the SDK's logger that warns once per span dropped from a full queue (on the event loop)
_SDK_QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"


class OtelSettings(Protocol):
    """The ``otel`` section's fields (``config.OtelConfig``): ``monitor`` needs nothing of ``config``."""

    @property
    def endpoint(self) -> str: ...

    @property
    def service_name(self) -> str: ...

    @property
    def export_timeout_s(self) -> float: ...

    @property
    def max_queue_size(self) -> int: ...

    @property
    def schedule_delay_s(self) -> float: ...


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` -> ``http://collector:4318/v1/traces`` (a URL already ending so is kept)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def error_type(record: RequestRecord) -> str | None:
    """``error.type`` of a failed request (None when it did not fail): the upstream's HTTP status when
    it answered with an error, else the proxy's reason (``upstream_timeout``, ``invalid_request``, ...)."""
    reason = record.unscored_reason
    if reason is UnscoredReason.UPSTREAM_STATUS:
        return str(record.status) if record.status else reason.value
    failed = reason is not None and reason.upstream_failure and reason is not UnscoredReason.UPSTREAM_REFUSED_LOGPROBS
    if failed or record.status >= 400:
        return reason.value if reason is not None else str(record.status)
    return None


class _QueueFullOncePerMinute(logging.Filter):
    """The SDK warns once per span dropped from a full queue, synchronously on the event loop: let one
    through a minute (a dead collector under load would otherwise write a line per request)."""

    def __init__(self) -> None:
        super().__init__()
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Queue full"):
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + 60.0
        return True


class _ShutdownOnce(SpanExporter):
    """Delegates to the real exporter; a second ``shutdown`` (the bounded close's, then the
    processor's) is a no-op rather than the SDK's warning."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter
        self._lock = threading.Lock()
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export(spans)

    def shutdown(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class OtelSink:
    """Spans to ``exporter`` (OTLP/HTTP in production, the SDK's in-memory exporter in tests), in batches."""

    def __init__(
        self,
        exporter: SpanExporter,
        service_name: str = "entropy-sentinel",
        *,
        max_queue_size: int = 2048,
        schedule_delay_s: float = 5.0,
        export_timeout_s: float = 10.0,
    ) -> None:
        self.export_timeout_s = export_timeout_s
        self._exporter = _ShutdownOnce(exporter)
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            shutdown_on_exit=False,  # close() flushes, bounded; an atexit flush could hold the exit 30 s
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                self._exporter,
                max_queue_size=max_queue_size,
                schedule_delay_millis=schedule_delay_s * 1000,
                max_export_batch_size=min(_BATCH, max_queue_size),
                export_timeout_millis=export_timeout_s * 1000,
            )
        )
        self._tracer = self._provider.get_tracer("entropy_sentinel")
        self._propagator = TraceContextTextMapPropagator()
        self._quiet = _QueueFullOncePerMinute()
        logging.getLogger(_SDK_QUEUE_LOGGER).addFilter(self._quiet)
        self._closed = False

    # -- RecordSink ------------------------------------------------------------------------------
    def record_finished(self, record: RequestRecord) -> None:
        operation = OPERATIONS.get(record.route)
        if operation is None or self._closed:
            return
        try:
            self._span(record, operation)
        except Exception as exc:  # a sink never raises; say what failed, not the record's content
            log.warning("request_id=%s: no OpenTelemetry span (%s)", record.request_id, type(exc).__name__)

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None:
        """Labels arrive long after the span was exported: not traced."""

    # -- the span --------------------------------------------------------------------------------
    def _parent(self, record: RequestRecord) -> Context:
        """The caller's span as the parent; an empty context (a new trace) without one. Never the
        ambient context: the proxy's own code runs in no trace."""
        if record.traceparent is None:
            return Context()
        carrier = {"traceparent": record.traceparent}
        if record.tracestate:
            carrier["tracestate"] = record.tracestate
        return self._propagator.extract(carrier, context=Context())

    def _span(self, record: RequestRecord, operation: str) -> None:
        start_ns = round(record.started_at * 1e6) * 1000  # a float epoch holds microseconds, not nanoseconds
        end_ns = start_ns + round(record.latency_s * 1e9) if record.latency_s is not None else time.time_ns()
        model = record.request_model or record.model
        attributes: dict[str, AttributeValue] = {
            "gen_ai.operation.name": operation,
            "entropy_sentinel.request_id": record.request_id,
            "entropy_sentinel.slice": record.slice,
            "entropy_sentinel.scored": record.scored,
        }
        if record.request_model:
            attributes["gen_ai.request.model"] = record.request_model
        if record.model:
            attributes["gen_ai.response.model"] = record.model
        if record.response_id:
            attributes["gen_ai.response.id"] = record.response_id
        if record.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = record.input_tokens
        if record.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = record.output_tokens
        elif record.tokens:
            attributes["gen_ai.usage.output_tokens"] = sum(record.tokens.values())
        if record.status:
            attributes["http.response.status_code"] = record.status
        span = self._tracer.start_span(
            f"{operation} {model}" if model else operation,
            context=self._parent(record),
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start_ns,
        )
        for event in self._evaluations(record):
            span.add_event(EVALUATION_EVENT, event, timestamp=end_ns)
        failure = error_type(record)
        if failure is not None:
            span.set_attribute("error.type", failure)
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=end_ns)

    @staticmethod
    def _evaluations(record: RequestRecord) -> list[dict[str, AttributeValue]]:
        """One event per choice with a score; one without a score (and the reason) otherwise."""
        base: dict[str, AttributeValue] = {
            "gen_ai.evaluation.name": EVALUATION_NAME,
            "entropy_sentinel.slice": record.slice,
        }
        scores = record.p_correct or []
        events = [
            {**base, "gen_ai.evaluation.score.value": float(p), "entropy_sentinel.choice.index": i}
            for i, p in enumerate(scores)
            if p is not None
        ]
        if events:
            return events
        if record.unscored_reason is not None:
            base["entropy_sentinel.unscored_reason"] = record.unscored_reason.value
        return [base]

    # -- lifecycle -------------------------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:
        """Export what is queued now (blocking; for tests and the stop)."""
        return self._provider.force_flush(int((timeout_s or self.export_timeout_s) * 1000))

    def close(self) -> None:
        """Flush the queue and stop the export thread, within ``export_timeout_s`` (plus a second): a
        collector that does not take the spans by then loses them, and the stop goes on."""
        if self._closed:
            return
        self._closed = True
        stopper = threading.Thread(target=self._provider.shutdown, name="sentinel-otel-stop", daemon=True)
        stopper.start()
        stopper.join(self.export_timeout_s + 1.0)
        if stopper.is_alive():
            log.warning("OpenTelemetry: the collector took no spans within %g s; the rest are dropped",
                        self.export_timeout_s)
            self._exporter.shutdown()  # ends the exporter's retries, so the export thread ends too
            stopper.join(1.0)
        logging.getLogger(_SDK_QUEUE_LOGGER).removeFilter(self._quiet)


def open_otel_sink(settings: OtelSettings) -> OtelSink:
    """The sink the ``otel`` section asks for: OTLP/HTTP protobuf to ``otel.endpoint``'s ``/v1/traces``.
    Headers (a collector's auth) come from the standard ``OTEL_EXPORTER_OTLP_HEADERS`` variable."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=traces_url(settings.endpoint), timeout=settings.export_timeout_s)
    return OtelSink(
        exporter,
        settings.service_name,
        max_queue_size=settings.max_queue_size,
        schedule_delay_s=settings.schedule_delay_s,
        export_timeout_s=settings.export_timeout_s,
    )
