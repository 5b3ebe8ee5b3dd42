"""deploy/: the Grafana dashboard and the Prometheus alert rules use only the metrics the proxy exports
(docs/architecture.md, "Metrics"), and the alerts fire on the traffic they describe (``promtool test rules``
when Debian's ``prometheus`` package is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.paths import ROOT

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus-alerts.yaml"

# no histogram carries a slice label: its buckets would multiply the series of every slice (issue 11.4)
HISTOGRAMS = {"sentinel_p_correct_distribution", "sentinel_overhead_seconds"}
METRICS = {
    "sentinel_requests_total", "sentinel_scored_total", "sentinel_p_correct_sum", "sentinel_p_correct_count",
    "sentinel_estimated_accuracy", "sentinel_upstream_errors_total",
    *(h + suffix for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
}
LABELS = {"slice", "route", "status", "kind", "window", "bound", "le", "instance", "job"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
FUNCTIONS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "label_values",
    "scalar", "vector", "abs", "clamp_min", "clamp_max", "topk", "bottomk", "avg_over_time", "max_over_time",
    "min_over_time", "time", "absent",
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


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


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
        "sum by (slice)(rate(sentinel_p_correct_sum",
        "sum by (slice)(rate(sentinel_p_correct_count",
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
    exprs = _dashboard_exprs(dash) + [r["expr"] for r in _alert_rules()]
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
      - series: 'sentinel_estimated_accuracy{{slice="a",window="1h",bound="upper"}}'
        values: '0.45x1560'
      - series: 'sentinel_estimated_accuracy{{slice="b",window="1h",bound="upper"}}'
        values: '0.95x1560'
      - series: 'sentinel_estimated_accuracy{{slice="a",window="1h",bound="lower"}}'
        values: '0.30x1560'
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


@pytest.mark.timeout(120)
def test_promtool_checks_and_unit_tests_the_rules(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install -y --no-install-recommends prometheus)")
    check = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # promtool compares annotations too; `check rules` above parsed their templates, the unit tests
    # below are about when each alert fires and with which labels, so they run on a copy without them
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    bare = tmp_path / "rules.yaml"
    bare.write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = tmp_path / "alerts_test.yaml"
    spec.write_text(PROMTOOL_TESTS.format(rules=json.dumps(str(bare))))
    run = subprocess.run(
        [promtool, "test", "rules", str(spec)], check=False, capture_output=True, text=True, timeout=100
    )
    assert run.returncode == 0, run.stdout + run.stderr
