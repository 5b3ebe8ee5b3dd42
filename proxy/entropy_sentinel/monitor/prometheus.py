"""The Prometheus :class:`~entropy_sentinel.monitor.sinks.RecordSink`: ``/sentinel/metrics``.

Every ``slice`` label value comes from the bounded slice registry (overflow is ``other``), so
clients cannot create series at will; the metric names are the contract in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import SliceRegistry


class _EstimateCollector(Collector):
    """``sentinel_estimated_accuracy{slice,window,bound}``, computed from the counters at scrape."""

    def __init__(self, slices: SliceRegistry) -> None:
        self.slices = slices

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sentinel_estimated_accuracy",
            "Label-free slice accuracy estimate (mean P(correct)) with its interval bounds",
            labels=["slice", "window", "bound"],
        )
        for summary in self.slices.snapshot():
            for window, values in summary["windows"].items():
                if values["estimate"] is None:
                    continue
                for bound in ("estimate", "lower", "upper"):
                    family.add_metric([summary["slice"], window, bound], values[bound])
        yield family


class PrometheusSink:
    """Counters and histograms per finished request; ``registry`` is what ``/sentinel/metrics`` exposes."""

    def __init__(self, slices: SliceRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sentinel_requests", "Instrumented requests", ["route", "slice", "status"], registry=r)
        self.scored = Counter("sentinel_scored", "Responses scored with P(correct)", ["slice"], registry=r)
        # A histogram per slice: its series sentinel_p_correct_sum{slice} is the contract's summed
        # P(correct), so rate(sentinel_p_correct_sum) / rate(sentinel_scored_total) is the windowed
        # estimate (a separate counter of that name would collide with the histogram's _sum).
        self.p_correct = Histogram(
            "sentinel_p_correct", "P(correct) of scored responses", ["slice"],
            buckets=[i / 10 for i in range(1, 11)], registry=r,
        )
        self.overhead = Histogram(
            "sentinel_overhead_seconds", "Proxy CPU time per instrumented request (parsing, rewriting, scoring)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25), registry=r,
        )
        self.upstream_errors = Counter("sentinel_upstream_errors", "Upstream failures by kind", ["kind"], registry=r)
        self.labels = Counter(
            "sentinel_labels", "Feedback labels accepted", ["slice", "correct"], registry=r,
        )
        r.register(_EstimateCollector(slices))

    def record_finished(self, record: RequestRecord) -> None:
        self.requests.labels(record.route, record.slice, str(record.status)).inc()
        self.overhead.observe(record.overhead_s)
        reason = record.unscored_reason
        if reason is not None and reason.upstream_failure:
            self.upstream_errors.labels(reason.value).inc()
        if reason is not None and not reason.counts_as_traffic:
            return
        for p in record.p_correct or ():
            self.scored.labels(record.slice).inc()
            self.p_correct.labels(record.slice).observe(p)

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None:
        self.labels.labels(slice_key, "true" if correct else "false").inc()
