"""Where the live path reports what happened: the :class:`RecordSink` interface and its double.

:class:`~entropy_sentinel.monitor.hub.Monitor` calls every configured sink after it has updated the
slice counters. :class:`~entropy_sentinel.monitor.prometheus.PrometheusSink` is the one the proxy
ships; :class:`~entropy_sentinel.monitor.otel_sink.OtelSink` (``otel.endpoint``) exports spans. An
exporter (a log shipper) is one module implementing this protocol plus one line in
:func:`~entropy_sentinel.gateway.app.build_monitor` adding it. A sink that holds resources (a thread,
a connection) may also have ``close()``: :meth:`~entropy_sentinel.monitor.hub.Monitor.close` calls
it at the app's stop, in a worker thread, where it may block briefly (a bounded flush).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from entropy_sentinel.monitor.records import RequestRecord

__all__ = ["RecordSink", "RecordingSink"]


@runtime_checkable
class RecordSink(Protocol):
    """Receives every finished request and every accepted label.

    Contract: both methods run on the event loop and must return in microseconds (no I/O: queue
    it); they must not raise (the monitor logs and drops a sink's exception, the client never sees
    it); the record is read-only to a sink. ``slice_key`` is always an admitted, bounded slice key,
    safe as a metric label; nothing else of the request's content is.
    """

    def record_finished(self, record: RequestRecord) -> None: ...

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None: ...


@dataclass
class RecordingSink:
    """The in-memory double: keeps what it was given, for tests."""

    records: list[RequestRecord] = field(default_factory=list)
    labels: list[tuple[str, bool, float | None]] = field(default_factory=list)

    def record_finished(self, record: RequestRecord) -> None:
        self.records.append(record)

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None:
        self.labels.append((slice_key, correct, p_correct))
