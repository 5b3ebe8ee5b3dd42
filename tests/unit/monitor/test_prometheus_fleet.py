"""Issue 13: every statistic the label-free interval needs is exported per slice and additive, so the sum of
two replicas' scrapes gives the interval one proxy would compute from all the traffic
(deploy/prometheus-alerts.yaml computes it in PromQL; tests/deploy/test_deploy.py runs that with promtool)."""

from __future__ import annotations

import math

import pytest
from entropy_sentinel.monitor.prometheus import PrometheusSink
from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.stats.intervals import TransferSpread
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def scored(slice_key: str, p: list[float], request_id: str = "r") -> RequestRecord:
    return RequestRecord(request_id=request_id, route="chat", slice=slice_key, status=200, scored=True, p_correct=p)


def scrape(sink: PrometheusSink) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(sink.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_the_variance_sum_is_sum_of_p_times_one_minus_p_over_every_choice():
    sink = PrometheusSink(SliceRegistry())
    sink.record_finished(scored("tenant=a", [0.25, 0.5, 1.0]))
    sink.record_finished(scored("tenant=a", [0.9]))
    sink.record_finished(scored("tenant=b", [0.5]))
    samples = scrape(sink)
    expected = 0.25 * 0.75 + 0.5 * 0.5 + 0.0 + 0.9 * 0.1
    assert value(samples, "sentinel_p_correct_variance_total", slice="tenant=a") == pytest.approx(expected)
    assert value(samples, "sentinel_p_correct_variance_total", slice="tenant=b") == pytest.approx(0.25)


def test_an_unscored_response_adds_no_variance_series():
    sink = PrometheusSink(SliceRegistry())
    sink.record_finished(RequestRecord(request_id="r", route="chat", slice="tenant=a", status=200))
    assert not [k for k in scrape(sink) if k[0] == "sentinel_p_correct_variance_total"]


@pytest.mark.parametrize(
    ("tau", "level", "tau0", "floor"),
    [
        (TransferSpread(0.07, "binomial", floor=0.2), 0.9, 0.07, 0.2),
        (TransferSpread(0.07, "binomial", floor=0.3), 0.8, 0.07, 0.3),
        # a constant tau is floor 1: max(2 sqrt(A(1-A)), 1) is 1 for every A
        (TransferSpread(0.07), 0.95, 0.07, 1.0),
        (0.04, 0.9, 0.04, 1.0),  # a plain float is a constant tau
    ],
)
def test_the_interval_constants_are_exported(tau, level, tau0, floor):
    samples = scrape(PrometheusSink(SliceRegistry(level=level, tau=tau)))
    assert value(samples, "sentinel_estimator_tau") == pytest.approx(tau0)
    assert value(samples, "sentinel_estimator_tau_floor") == pytest.approx(floor)
    assert value(samples, "sentinel_interval_z") == pytest.approx(
        {0.8: 1.2815515655, 0.9: 1.6448536270, 0.95: 1.9599639845}[level]
    )


def _fleet_interval(scrapes: list[dict], key: str) -> tuple[float, float, float]:
    """What the recording rules compute: sums by slice over replicas, then the interval."""
    n = sum(value(s, "sentinel_p_correct_count", slice=key) for s in scrapes)
    sum_p = sum(value(s, "sentinel_p_correct_sum", slice=key) for s in scrapes)
    variance = sum(value(s, "sentinel_p_correct_variance_total", slice=key) for s in scrapes)
    z = max(value(s, "sentinel_interval_z") for s in scrapes)
    tau0 = max(value(s, "sentinel_estimator_tau") for s in scrapes)
    floor = max(value(s, "sentinel_estimator_tau_floor") for s in scrapes)
    estimate = sum_p / n
    tau = tau0 * max(2 * math.sqrt(estimate * (1 - estimate)), floor)
    half = z * math.sqrt(variance / n**2 + tau**2)
    return estimate, max(estimate - half, 0.0), min(estimate + half, 1.0)


@pytest.mark.parametrize("tau", [TransferSpread(0.06, "binomial"), TransferSpread(0.06)])
def test_two_replicas_summed_give_the_interval_of_one_proxy_with_all_the_traffic(tau):
    scores = [[0.9, 0.8], [0.3], [0.95], [0.6, 0.65, 0.7], [0.99], [0.2], [0.85]] * 5
    replicas = [SliceRegistry(level=0.9, tau=tau) for _ in range(2)]
    sinks = [PrometheusSink(r) for r in replicas]
    whole = SliceRegistry(level=0.9, tau=tau)
    for i, ps in enumerate(scores):
        sinks[i % 2].record_finished(scored("tenant=a", ps, request_id=str(i)))
        for p in ps:
            whole.record_score(whole.admit("tenant=a"), p)
    one_proxy = whole.summary("tenant=a")["windows"]["lifetime"]
    estimate, lower, upper = _fleet_interval([scrape(s) for s in sinks], "tenant=a")
    assert (estimate, lower, upper) == pytest.approx(
        (one_proxy["estimate"], one_proxy["lower"], one_proxy["upper"]), abs=1e-9
    )
    # each replica alone sees part of the traffic: its own interval is not the fleet's
    alone = _fleet_interval([scrape(sinks[0])], "tenant=a")
    assert alone != pytest.approx((estimate, lower, upper), abs=1e-4)


def test_labels_are_counted_per_slice_and_outcome():
    sink = PrometheusSink(SliceRegistry())
    for correct in (True, True, False):
        sink.label_received("tenant=a", correct, 0.5)
    samples = scrape(sink)
    assert value(samples, "sentinel_labels_total", slice="tenant=a", correct="true") == 2
    assert value(samples, "sentinel_labels_total", slice="tenant=a", correct="false") == 1
