"""The Prometheus :class:`~entropy_sentinel.monitor.sinks.RecordSink`: ``/sentinel/metrics``.

Every ``slice`` label value comes from the bounded slice registry (overflow is ``other``), so
clients cannot create series at will; the metric names are the contract in docs/architecture.md.

Per slice only additive series (counters, a sum and a count): with ``monitor.max_slices`` slices a
per-slice histogram multiplied the series by its buckets (27,056 series, 2.2 MB a scrape at 1,000
slices). The P(correct) distribution is one histogram over all slices. ``/sentinel/metrics``
renders the text in a worker thread: the loop keeps relaying while a scrape is written (a value
updated meanwhile is read as before or after the update; the next scrape has it).

Fleet-additive: n (``sentinel_p_correct_count``), Σp (``sentinel_p_correct_sum``), Σp(1−p)
(``sentinel_p_correct_variance_total``) and the labels (``sentinel_labels_total``) are counters, so a
PromQL ``sum by (slice)`` over replicas is the fleet's; with the interval's constants
(``sentinel_estimator_tau``, ``sentinel_estimator_tau_floor``, ``sentinel_interval_z``) the recording
rules in deploy/prometheus-alerts.yaml compute the label-free interval of stats/intervals.py from them.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, Summary
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.stats.intervals import spread_of, z_value


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


class _IntervalConstantsCollector(Collector):
    """The constants of :func:`~entropy_sentinel.stats.intervals.label_free` that PromQL cannot derive:
    τ(Â) = τ₀ · max(2·sqrt(Â(1−Â)), floor) and z of ``monitor.level``. A constant τ is floor 1
    (2·sqrt(Â(1−Â)) never exceeds 1), so one formula serves both shapes."""

    def __init__(self, slices: SliceRegistry) -> None:
        self.slices = slices

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spread = spread_of(self.slices.tau)
        floor = 1.0 if spread.shape == "constant" else spread.floor
        yield GaugeMetricFamily(
            "sentinel_estimator_tau", "Estimator transfer spread tau0 (at estimate 0.5) of the label-free interval",
            value=spread.tau0,
        )
        yield GaugeMetricFamily(
            "sentinel_estimator_tau_floor",
            "Floor of tau's scale: tau(A) = tau0 * max(2 sqrt(A (1 - A)), floor); 1 for a constant tau",
            value=floor,
        )
        yield GaugeMetricFamily(
            "sentinel_interval_z", "z of the two-sided interval level (monitor.level)", value=z_value(self.slices.level)
        )


class PrometheusSink:
    """Counters and histograms per finished request; ``registry`` is what ``/sentinel/metrics`` exposes."""

    def __init__(self, slices: SliceRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sentinel_requests", "Instrumented requests", ["route", "slice", "status"], registry=r)
        self.scored = Counter(
            "sentinel_scored", "Responses scored with P(correct) (one per response, whatever its n)", ["slice"],
            registry=r,
        )
        # sentinel_p_correct_sum{slice} / _count{slice}: P(correct) summed over scored choices, and
        # those choices (n per response); rate(_sum) / rate(_count) is the windowed estimate. A summary
        # without quantiles is exactly those two additive series.
        self.p_correct = Summary(
            "sentinel_p_correct", "P(correct) of scored choices: its sum and count", ["slice"], registry=r
        )
        # Σ p(1−p) over scored choices: the sampling variance of the label-free interval, additive across
        # replicas (Σp² would do too; this one needs no subtraction in PromQL)
        self.p_correct_variance = Counter(
            "sentinel_p_correct_variance", "Sum of P(correct) * (1 - P(correct)) over scored choices", ["slice"],
            registry=r,
        )
        self.p_correct_distribution = Histogram(
            "sentinel_p_correct_distribution", "P(correct) of scored choices, all slices together",
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
        r.register(_IntervalConstantsCollector(slices))

    def record_finished(self, record: RequestRecord) -> None:
        self.requests.labels(record.route, record.slice, str(record.status)).inc()
        self.overhead.observe(record.overhead_s)
        reason = record.unscored_reason
        if reason is not None and reason.upstream_failure:
            self.upstream_errors.labels(reason.value).inc()
        if (reason is not None and not reason.counts_as_traffic) or not record.p_correct:
            return
        self.scored.labels(record.slice).inc()
        summary = self.p_correct.labels(record.slice)
        for p in record.p_correct:
            summary.observe(p)
            self.p_correct_distribution.observe(p)
        self.p_correct_variance.labels(record.slice).inc(sum(p * (1.0 - p) for p in record.p_correct))

    def label_received(self, slice_key: str, correct: bool, p_correct: float | None) -> None:
        self.labels.labels(slice_key, "true" if correct else "false").inc()
