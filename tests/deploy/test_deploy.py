"""deploy/: the Grafana dashboard and the Prometheus rules use only the metrics the proxy exports
(docs/architecture.md, "Metrics") and the series the recording rules define, the alerts fire on the traffic
they describe, and the recording rules turn two replicas' counters into the fleet's estimate and interval,
the proxy's own formula (``promtool test rules`` when Debian's ``prometheus`` package is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from entropy_sentinel.stats.intervals import TransferSpread, label_free

from tests.paths import ROOT

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus-alerts.yaml"

# no histogram carries a slice label: its buckets would multiply the series of every slice (issue 11.4)
HISTOGRAMS = {"sentinel_p_correct_distribution", "sentinel_overhead_seconds"}
EXPORTED = {
    "sentinel_requests_total", "sentinel_scored_total", "sentinel_p_correct_sum", "sentinel_p_correct_count",
    "sentinel_p_correct_variance_total", "sentinel_labels_total", "sentinel_estimated_accuracy",
    "sentinel_upstream_errors_total", "sentinel_estimator_tau", "sentinel_estimator_tau_floor", "sentinel_interval_z",
    *(h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
}
LABELS = {"slice", "route", "status", "kind", "window", "bound", "le", "instance", "job", "correct"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "label_values",
    "scalar", "vector", "abs", "clamp_min", "clamp_max", "topk", "bottomk", "avg_over_time", "max_over_time",
    "min_over_time", "time", "absent", "sqrt", "label_replace",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (strings, matchers, ranges, grouping removed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\d+[smhdwy]", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        follows = e[m.end():].lstrip()[:1]
        if word in KEYWORDS or (word in FUNCTIONS and follows == "("):
            continue
        if word.startswith("$") or e[max(m.start() - 1, 0)] == "$":
            continue
        names.add(word)
    if expr.strip().startswith("label_values("):
        names.discard(expr.split(",")[1].strip(" )"))  # the label argument
    return names


def label_names(expr: str) -> set[str]:
    """Label names in matchers and in by / without / on / ignoring / group_* clauses."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    out = set()
    for body in re.findall(r"\{([^}]*)\}", e):
        out |= {m.group(1) for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body)}
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        out |= {w.strip() for w in body.split(",") if w.strip()}
    return out


def test_exported_is_what_the_proxy_exports():
    """EXPORTED (what deploy/ may read) is exactly the sample names of /sentinel/metrics once every kind of
    event happened, so a renamed or new metric cannot drift from the dashboard and the rules."""
    from entropy_sentinel.monitor.prometheus import PrometheusSink
    from entropy_sentinel.monitor.records import RequestRecord
    from entropy_sentinel.monitor.slices import SliceRegistry
    from entropy_sentinel.types import UnscoredReason
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    registry = SliceRegistry()
    registry.record_score(registry.admit("tenant=a"), 0.5)
    sink = PrometheusSink(registry)
    sink.record_finished(RequestRecord(request_id="a", route="chat", slice="tenant=a", status=200, scored=True,
                                       p_correct=[0.5]))
    failure = next(r for r in UnscoredReason if r.upstream_failure)
    sink.record_finished(RequestRecord(request_id="b", route="chat", slice="", status=502, unscored_reason=failure))
    sink.label_received("tenant=a", True, 0.5)
    text = generate_latest(sink.registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert {n for n in names if not n.endswith("_created")} == EXPORTED


def test_metric_name_extraction_itself():
    expr = ('sum by (slice)(rate(sentinel_p_correct_sum{slice=~"$slice"}[1h])) / on () group_left () '
            'sum(rate(foo_total[5m] offset 1h)) > 0.5 and on (slice) bar')
    assert metric_names(expr) == {"sentinel_p_correct_sum", "foo_total", "bar"}
    assert label_names(expr) == {"slice"}
    assert metric_names("label_values(sentinel_scored_total, slice)") == {"sentinel_scored_total"}
    assert metric_names("histogram_quantile(0.99, sum by (le)(rate(x_bucket[$__rate_interval])))") == {"x_bucket"}


def _dashboard_exprs(dash: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if "expr" in t)
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def _rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alert_rules() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _recording_rules() -> list[dict]:
    return [rule for rule in _rules() if "record" in rule]


# the series the recording rules define: what the dashboard and the alerts may read besides the exported ones
RECORDED = {r["record"] for r in _recording_rules()}
METRICS = EXPORTED | RECORDED


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["slice"]["definition"] == "label_values(sentinel_scored_total, slice)"
    assert variables["slice"]["includeAll"] and variables["slice"]["multi"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}"
    # no two panels overlap on the 24-column grid
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
    exprs = "\n".join(_dashboard_exprs(dash))
    for needle in (
        "sentinel:slice_estimate:ratio_rate1h",  # the fleet's estimate and interval (recording rules)
        "sentinel:slice_estimate_lower:ratio_rate1h",
        "sentinel:slice_estimate_upper:ratio_rate1h",
        "sentinel_estimated_accuracy",
        "sentinel_requests_total",
        "sentinel_scored_total",
        "sentinel_p_correct_distribution_bucket",
        "histogram_quantile(0.5, sum by (le)(rate(sentinel_overhead_seconds_bucket",
        "histogram_quantile(0.99, sum by (le)(rate(sentinel_overhead_seconds_bucket",
        "sentinel_upstream_errors_total",
    ):
        assert needle in exprs, needle


def test_every_expression_uses_only_exported_metrics_and_labels():
    dash = json.loads(DASHBOARD.read_text())
    exprs = _dashboard_exprs(dash) + [r["expr"] for r in _rules()]
    assert len(exprs) >= 15
    for expr in exprs:
        assert metric_names(expr) <= METRICS, (expr, metric_names(expr) - METRICS)
        # the windowed estimate divides summed P(correct) by the choices summed, not by the responses
        assert "rate(sentinel_p_correct_sum" not in expr or "sentinel_p_correct_count" in expr, expr
        assert metric_names(expr), expr
        assert label_names(expr) <= LABELS, (expr, label_names(expr) - LABELS)
    for expr in exprs:  # gauge bounds and windows are the values the proxy exports
        for value in re.findall(r'bound="([^"]*)"', expr):
            assert value in {"estimate", "lower", "upper"}
        for value in re.findall(r'window="([^"]*)"', expr):
            assert value in {"1h", "24h", "lifetime", "$window"}


def test_alert_rules_shape():
    doc = yaml.safe_load(ALERTS.read_text())
    assert doc["groups"] and all(g["name"] and g["rules"] for g in doc["groups"])
    rules = _alert_rules()
    names = {r["alert"] for r in rules}
    assert {"SentinelSliceAccuracyLow", "SentinelSliceAccuracyUpperBoundLow", "SentinelSliceAccuracyDrop",
            "SentinelUpstreamErrorRateHigh"} <= names
    for r in rules:
        assert r["expr"].strip() and re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    by_name = {r["alert"]: r for r in rules}
    assert by_name["SentinelSliceAccuracyLow"]["for"] == "15m"
    assert "sentinel_scored_total" in by_name["SentinelSliceAccuracyLow"]["expr"]  # the traffic guard
    # the accuracy alerts read the fleet's recorded estimate and bound, not one replica's gauge
    assert "sentinel:slice_estimate:ratio_rate1h" in by_name["SentinelSliceAccuracyLow"]["expr"]
    assert "sentinel:slice_estimate_upper:ratio_rate1h" in by_name["SentinelSliceAccuracyUpperBoundLow"]["expr"]
    assert "sentinel:slice_estimate:ratio_rate1h" in by_name["SentinelSliceAccuracyDrop"]["expr"]


def test_recording_rules_shape():
    records = {r["record"]: r["expr"] for r in _recording_rules()}
    assert {"sentinel:slice_estimate:ratio_rate1h", "sentinel:slice_estimate_lower:ratio_rate1h",
            "sentinel:slice_estimate_upper:ratio_rate1h"} <= set(records)
    doc = yaml.safe_load(ALERTS.read_text())
    (group,) = [g for g in doc["groups"] if any("record" in r for r in g["rules"])]
    assert all("record" in r for r in group["rules"])  # recording rules in their own group
    for name, expr in records.items():
        assert re.fullmatch(r"sentinel:slice_[a-z0-9_]+:[a-z0-9_]+", name), name  # level:metric:operations
        # fleet-wide and bounded: whatever they aggregate, they keep the slice label only
        assert label_names(expr) <= {"slice", "correct"}, (name, label_names(expr))
    constants = {"sentinel_estimator_tau", "sentinel_estimator_tau_floor", "sentinel_interval_z"}
    for name, expr in records.items():
        if metric_names(expr) & (EXPORTED - constants):  # reads the replicas' counters: sums them by slice
            assert "sum by (slice)" in expr, name
    # the label-free interval uses every additive statistic and constant it needs
    used = set().union(*(metric_names(e) for e in records.values()))
    assert {"sentinel_p_correct_sum", "sentinel_p_correct_count", "sentinel_p_correct_variance_total",
            "sentinel_estimator_tau", "sentinel_estimator_tau_floor", "sentinel_interval_z",
            "sentinel_labels_total"} <= used


# ---------------------------------------------------------------------------------------------- promtool

PROMTOOL_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  # slice a: P(correct) 0.40, slice b: 0.90, slice c: 0.90 for a day then 0.55; 1 scored response a second,
  # of 2 choices in slices a-c (so sentinel_p_correct_count runs at twice sentinel_scored_total)
  - interval: 1m
    input_series:
      - series: 'sentinel_p_correct_sum{{slice="a"}}'
        values: '0+48x1560'
      - series: 'sentinel_p_correct_sum{{slice="b"}}'
        values: '0+108x1560'
      - series: 'sentinel_p_correct_sum{{slice="c"}}'
        values: '0+108x1440 155586+66x120'
      - series: 'sentinel_p_correct_count{{slice="a"}}'
        values: '0+120x1560'
      - series: 'sentinel_p_correct_count{{slice="b"}}'
        values: '0+120x1560'
      - series: 'sentinel_p_correct_count{{slice="c"}}'
        values: '0+120x1560'
      - series: 'sentinel_p_correct_count{{slice="quiet"}}'
        values: '0+0.2x1560'
      - series: 'sentinel_scored_total{{slice="a"}}'
        values: '0+60x1560'
      - series: 'sentinel_scored_total{{slice="b"}}'
        values: '0+60x1560'
      - series: 'sentinel_scored_total{{slice="c"}}'
        values: '0+60x1560'
      - series: 'sentinel_scored_total{{slice="quiet"}}'
        values: '0+0.1x1560'
      - series: 'sentinel_p_correct_sum{{slice="quiet"}}'
        values: '0+0.02x1560'
      # sum of p(1-p): 120 choices a minute at p = 0.4 (a), 0.9 (b), 0.9 then 0.55 (c)
      - series: 'sentinel_p_correct_variance_total{{slice="a"}}'
        values: '0+28.8x1560'
      - series: 'sentinel_p_correct_variance_total{{slice="b"}}'
        values: '0+10.8x1560'
      - series: 'sentinel_p_correct_variance_total{{slice="c"}}'
        values: '0+10.8x1440 15581.7+29.7x120'
      # tau0 0.05 (binomial shape, floor 0.2), 90 %: 1 h upper bounds a 0.481, b 0.95, c 0.632
      - series: 'sentinel_estimator_tau'
        values: '0.05x1560'
      - series: 'sentinel_estimator_tau_floor'
        values: '0.2x1560'
      - series: 'sentinel_interval_z'
        values: '1.6448536269514715x1560'
      - series: 'sentinel_requests_total{{route="chat",slice="a",status="200"}}'
        values: '0+60x1560'
      - series: 'sentinel_upstream_errors_total{{kind="timeout"}}'
        values: '0+6x1560'
      - series: 'sentinel_upstream_errors_total{{kind="connect"}}'
        values: '0+0.6x1560'
    alert_rule_test:
      - eval_time: 1530m
        alertname: SentinelSliceAccuracyLow
        exp_alerts:
          - exp_labels: {{severity: warning, team: ml-quality, slice: a}}
          - exp_labels: {{severity: warning, team: ml-quality, slice: c}}
      - eval_time: 1530m
        alertname: SentinelSliceAccuracyUpperBoundLow
        exp_alerts:
          - exp_labels: {{severity: critical, team: ml-quality, slice: a}}
      - eval_time: 1530m
        alertname: SentinelSliceAccuracyDrop
        exp_alerts:
          - exp_labels: {{severity: warning, team: ml-quality, slice: c}}
      - eval_time: 1450m
        alertname: SentinelSliceAccuracyDrop
        exp_alerts: []
      - eval_time: 1530m
        alertname: SentinelUpstreamErrorRateHigh
        exp_alerts:
          - exp_labels: {{severity: critical, team: platform, kind: timeout}}
      - eval_time: 1530m
        alertname: SentinelNotScoring
        exp_alerts: []
  # traffic without any score
  - interval: 1m
    input_series:
      - series: 'sentinel_requests_total{{route="chat",slice="a",status="200"}}'
        values: '0+60x120'
    alert_rule_test:
      - eval_time: 20m
        alertname: SentinelNotScoring
        exp_alerts: []
      - eval_time: 90m
        alertname: SentinelNotScoring
        exp_alerts:
          - exp_labels: {{severity: warning, team: platform}}
"""


# Two replicas, 160 minutes, evaluated at the end (the last hour: minutes 100-160). Slice a: r1 scores 60
# choices a minute at p = 0.7, r2 30 a minute at p = 0.4 and restarts at minute 101 (its counters start over);
# slice b: r1 only, 100 a minute at p = 0.99; slice quiet: no traffic in the last hour. By hand, slice a:
# n = 90 * 60 = 5400, sum p = (42 + 12) * 60 = 3240, sum p(1-p) = (12.6 + 7.2) * 60 = 1188: estimate 0.6;
# tau(0.6) = 0.05 * 2 sqrt(0.24) = 0.048990 (binomial shape), half-width
# 1.644854 * sqrt(1188 / 5400^2 + 0.0024) = 0.081262: [0.518738, 0.681262]. Slice b: estimate 0.99,
# 2 sqrt(0.99 * 0.01) = 0.199 is under the floor 0.2, tau = 0.01, half-width
# 1.644854 * sqrt(59.4 / 6000^2 + 0.0001) = 0.016584: [0.973416, 1 (clipped)].
# A constant tau (floor 1) of 0.05: slice a half-width 1.644854 * sqrt(1188 / 5400^2 + 0.0025): [0.517090, 0.682910].
Z = 1.6448536269514715
TWO_REPLICAS = {
    'sentinel_p_correct_count{slice="a",instance="r1"}': "0+60x160",
    'sentinel_p_correct_sum{slice="a",instance="r1"}': "0+42x160",
    'sentinel_p_correct_variance_total{slice="a",instance="r1"}': "0+12.6x160",
    'sentinel_p_correct_count{slice="a",instance="r2"}': "0+30x100 30+30x59",
    'sentinel_p_correct_sum{slice="a",instance="r2"}': "0+12x100 12+12x59",
    'sentinel_p_correct_variance_total{slice="a",instance="r2"}': "0+7.2x100 7.2+7.2x59",
    'sentinel_p_correct_count{slice="b",instance="r1"}': "0+100x160",
    'sentinel_p_correct_sum{slice="b",instance="r1"}': "0+99x160",
    'sentinel_p_correct_variance_total{slice="b",instance="r1"}': "0+0.99x160",
    'sentinel_p_correct_count{slice="quiet",instance="r2"}': "50x160",
    'sentinel_p_correct_sum{slice="quiet",instance="r2"}': "20x160",
    'sentinel_p_correct_variance_total{slice="quiet",instance="r2"}': "5x160",
    # labels posted to either replica: slice a 3 + 1 correct and 1 + 3 wrong a minute, slice b only wrong ones
    'sentinel_labels_total{slice="a",correct="true",instance="r1"}': "0+3x160",
    'sentinel_labels_total{slice="a",correct="false",instance="r1"}': "0+1x160",
    'sentinel_labels_total{slice="a",correct="true",instance="r2"}': "0+1x160",
    'sentinel_labels_total{slice="a",correct="false",instance="r2"}': "0+3x160",
    'sentinel_labels_total{slice="b",correct="false",instance="r1"}': "0+1x160",
    # r2 runs an older estimator mid-rollout: the rules take the wider tau
    'sentinel_estimator_tau{instance="r1"}': "0.05x160",
    'sentinel_estimator_tau{instance="r2"}': "0.04x160",
    'sentinel_interval_z{instance="r1"}': f"{Z}x160",
    'sentinel_interval_z{instance="r2"}': f"{Z}x160",
}
# (recorded series, slice) -> value at minute 160, by hand (above)
BINOMIAL = {
    ("sentinel:slice_p_correct_count:increase1h", "a"): 5400,
    ("sentinel:slice_p_correct_count:increase1h", "b"): 6000,
    ("sentinel:slice_estimate:ratio_rate1h", "a"): 0.6,
    ("sentinel:slice_estimate:ratio_rate1h", "b"): 0.99,
    ("sentinel:slice_estimate_lower:ratio_rate1h", "a"): 0.518738,
    ("sentinel:slice_estimate_upper:ratio_rate1h", "a"): 0.681262,
    ("sentinel:slice_estimate_lower:ratio_rate1h", "b"): 0.973416,
    ("sentinel:slice_estimate_upper:ratio_rate1h", "b"): 1.0,
    ("sentinel:slice_labelled_accuracy:ratio_rate24h", "a"): 0.5,
    ("sentinel:slice_labelled_accuracy:ratio_rate24h", "b"): 0.0,
}
CONSTANT = {
    ("sentinel:slice_estimate_lower:ratio_rate1h", "a"): 0.517090,
    ("sentinel:slice_estimate_upper:ratio_rate1h", "a"): 0.682910,
}


def _two_replica_case(floor: float, expected: dict[tuple[str, str], float]) -> dict:
    series = {**TWO_REPLICAS, 'sentinel_estimator_tau_floor{instance="r1"}': f"{floor}x160",
              'sentinel_estimator_tau_floor{instance="r2"}': f"{floor}x160"}
    checks = [
        {"expr": f'abs({name}{{slice="{key}"}} - {value}) < bool 1e-6',
         "eval_time": "160m", "exp_samples": [{"labels": f'{{slice="{key}"}}', "value": 1}]}
        for (name, key), value in expected.items()
    ]
    checks.append({"expr": 'sentinel:slice_estimate:ratio_rate1h{slice="quiet"}', "eval_time": "160m",
                   "exp_samples": []})
    return {
        "interval": "1m",
        "input_series": [{"series": name, "values": values} for name, values in series.items()],
        "promql_expr_test": checks,
    }


def test_the_hand_computed_fleet_intervals_are_the_proxys_own_formula():
    """The promtool expectations below, by the proxy's label_free on the fleet's sums."""
    n, sum_p, sum_p2 = 5400, 3240, (60 * 0.7**2 + 30 * 0.4**2) * 60
    binomial, constant = TransferSpread(0.05, "binomial"), TransferSpread(0.05)
    a = label_free(n, sum_p, sum_p2, 0.9, binomial)
    b = label_free(6000, 5940, 6000 * 0.99**2, 0.9, binomial)
    a_constant = label_free(n, sum_p, sum_p2, 0.9, constant)
    for (name, key), value in {**BINOMIAL, **{(k, s + "_constant"): v for (k, s), v in CONSTANT.items()}}.items():
        interval = {"a": a, "b": b, "a_constant": a_constant}[key]
        bound = {"sentinel:slice_estimate:ratio_rate1h": interval.estimate,
                 "sentinel:slice_estimate_lower:ratio_rate1h": interval.lower,
                 "sentinel:slice_estimate_upper:ratio_rate1h": interval.upper}.get(name)
        if bound is not None:
            assert value == pytest.approx(bound, abs=1e-6), (name, key)


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install -y --no-install-recommends prometheus)")
    return promtool


def _bare_rules(tmp_path) -> str:
    """The rules without annotations: promtool compares them too, and the unit tests are about when each
    alert fires with which labels (`promtool check rules` parses the annotations' templates)."""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    bare = tmp_path / "rules.yaml"
    bare.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(bare)


def _promtool_test(promtool: str, spec_path) -> None:
    run = subprocess.run(
        [promtool, "test", "rules", str(spec_path)], check=False, capture_output=True, text=True, timeout=100
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.timeout(120)
def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    promtool = _promtool()
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(PROMTOOL_TESTS.format(rules=json.dumps(_bare_rules(tmp_path))))
    _promtool_test(promtool, spec)


@pytest.mark.timeout(120)
def test_promtool_parses_every_dashboard_expression(tmp_path):
    promtool = _promtool()
    exprs = [e for e in _dashboard_exprs(json.loads(DASHBOARD.read_text())) if not e.startswith("label_values(")]
    grafana = {"$slice": ".*", "$window": "1h", "$__rate_interval": "5m"}
    rules = []
    for i, expr in enumerate(exprs):
        for variable, value in grafana.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_expression_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.timeout(120)
def test_promtool_the_recording_rules_sum_two_replicas_into_the_fleets_interval(tmp_path):
    promtool = _promtool()
    spec = tmp_path / "recording_test.yaml"
    spec.write_text(yaml.safe_dump({
        "rule_files": [_bare_rules(tmp_path)],
        "evaluation_interval": "1m",
        "tests": [_two_replica_case(0.2, BINOMIAL), _two_replica_case(1.0, CONSTANT)],
    }, sort_keys=False))
    _promtool_test(promtool, spec)
