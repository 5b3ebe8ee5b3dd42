"""``entropy-sentinel report``: numbers against independent arithmetic, files, and the page as a browser shows it.

The store is a real SQLite file with the proxy's ``requests`` schema, filled with synthetic traffic:
seven slices over two days, labels on some, one slice with prompt capture on whose prompts carry
script payloads.
"""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import shutil
import sqlite3
import struct
import subprocess
import threading
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from statistics import NormalDist
from typing import ClassVar

import numpy as np
import pytest
from entropy_sentinel.report.command import (
    ReportError,
    bucket_width,
    build_report,
    parse_since,
    proxy_settings,
    records_from_db,
    records_from_proxy,
)
from entropy_sentinel.stats.intervals import TransferSpread

SCHEMA = """
CREATE TABLE requests (
  request_id TEXT PRIMARY KEY, ts REAL NOT NULL, slice TEXT NOT NULL,
  route TEXT NOT NULL, model TEXT, status INTEGER, scored INTEGER NOT NULL,
  p_correct REAL, p_correct_all TEXT, features TEXT,
  tokens INTEGER, latency_s REAL, label INTEGER, label_ts REAL,
  prompt TEXT, completion TEXT);
CREATE INDEX requests_slice_ts ON requests(slice, ts);
"""
T0 = 1_732_000_000.0  # 2024-11-19 07:06:40 UTC
SPAN = 2 * 86400
PAYLOAD = "<script>alert(1)</script>"
PAYLOAD2 = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
LEVEL, TAU = 0.9, 0.05
# slice -> (requests, Beta(a, b) of P(correct), labels, scored, capture)
SLICES = {
    "domain=algebra,tenant=acme": (260, (6, 2), 40, True, False),
    "domain=geometry,tenant=acme": (180, (3, 4), 12, True, False),
    "domain=arith,tenant=globex": (220, (9, 1.5), 0, True, False),
    "": (90, (4, 3), 0, True, False),
    "other": (60, (5, 3), 0, True, False),
    "domain=code,tenant=umbrella": (70, (2, 3), 6, True, True),
    "domain=chat,tenant=initech": (50, (1, 1), 8, False, False),  # no estimator: unscored, labels only
}


def _rows(seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for si, (key, (count, (a, b), n_labels, scored, capture)) in enumerate(SLICES.items()):
        ts = np.sort(T0 + rng.uniform(0, SPAN, count))
        p = rng.beta(a, b, count)
        labelled = set(rng.choice(count, n_labels, replace=False).tolist()) if n_labels else set()
        for i in range(count):
            status = 200 if rng.random() > 0.03 else 502
            ok = scored and status == 200
            feats = {
                "mean": float(rng.gamma(2, 0.3)), "max": float(rng.gamma(4, 0.8)), "n_tokens": int(rng.integers(5, 300))
            }
            row = {
                "request_id": f"req-{si}-{i:04d}", "ts": float(ts[i]), "slice": key,
                "route": "chat" if i % 3 else "completions", "model": "gemma-3-270m", "status": status,
                "scored": int(ok), "p_correct": float(p[i]) if ok else None,
                "p_correct_all": json.dumps([float(p[i])] + ([float(p[i]) / 2] if si == 2 and i % 10 == 0 else []))
                if ok else None,  # some n=2 requests: every choice is scored
                "features": json.dumps(feats) if status == 200 else None,
                "tokens": feats["n_tokens"], "latency_s": float(rng.gamma(3, 0.4)),
                "label": None, "label_ts": None, "prompt": None, "completion": None,
            }
            if i in labelled:
                row["label"] = int(rng.random() < (p[i] if ok else 0.5))
                row["label_ts"] = float(ts[i] + rng.uniform(30, 7200))
            if capture:
                row["prompt"] = f"Question {i}: fix this page {PAYLOAD} and {PAYLOAD2} & \"quotes\""
                row["completion"] = f"Answer {i} </pre></td></tr></table>{PAYLOAD}"
            rows.append(row)
    return rows


def write_db(path: Path, rows: list[dict]) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    cols = list(rows[0]) if rows else []
    if rows:
        conn.executemany(
            f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [tuple(r[c] for c in cols) for r in rows],
        )
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return _rows()


@pytest.fixture(scope="module")
def report(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("report")
    db = write_db(tmp / "sentinel.db", rows)
    records = records_from_db(db)
    files = build_report(records, tmp / "out", level=LEVEL, tau=TAU, min_labels=30, top_requests=5)
    data = json.loads(files["json"].read_text())
    return files, data


# ---------------------------------------------------------------------------------------------- helpers


def _z() -> float:
    return NormalDist().inv_cdf(0.5 + LEVEL / 2)


def _label_free(ps: list[float]) -> tuple[float, float, float]:
    n = len(ps)
    mean = sum(ps) / n
    half = _z() * math.sqrt(sum(p * (1 - p) for p in ps) / n**2 + TAU**2)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _ps(rows: list[dict]) -> list[float]:
    """Every choice's P(correct), as the proxy counts them."""
    return [q for r in rows if r["p_correct_all"] for q in json.loads(r["p_correct_all"])]


def _headline(s: dict) -> float:
    return (s["recalibrated"] or s["estimate"] or s["labels"])["estimate"]


# ---------------------------------------------------------------------------------------------- numbers


def test_reader_returns_every_row_oldest_first_with_json_parsed(report, rows, tmp_path):
    db = write_db(tmp_path / "s.db", rows)
    records = records_from_db(db)
    assert len(records) == len(rows)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in rows)
    scored = next(r for r in records if r["p_correct"] is not None)
    assert isinstance(scored["features"], dict) and isinstance(scored["p_correct_all"], list)
    cut = T0 + SPAN / 2
    assert len(records_from_db(db, since=cut)) == sum(r["ts"] >= cut for r in rows)


def test_slice_estimates_equal_independent_means(report, rows):
    _, data = report
    by_key = {s["slice"]: s for s in data["slices"]}
    assert set(by_key) == set(SLICES)
    for key, s in by_key.items():
        mine = [r for r in rows if r["slice"] == key]
        ps = _ps(mine)
        ys = [r["label"] for r in mine if r["label"] is not None]
        assert s["requests"] == len(mine)
        assert s["n"] == len(ps)
        if ps:
            est, lo, hi = _label_free(ps)
            assert s["estimate"]["estimate"] == pytest.approx(est, abs=1e-12)
            assert s["estimate"]["lower"] == pytest.approx(lo, abs=1e-12)
            assert s["estimate"]["upper"] == pytest.approx(hi, abs=1e-12)
        else:
            assert s["estimate"] is None
        assert s["labels"]["n"] == len(ys)
        if ys:
            assert s["labels"]["estimate"] == pytest.approx(sum(ys) / len(ys))
        else:
            assert s["labels"]["estimate"] is None


def test_every_choice_is_a_score_as_in_the_proxy(report, rows):
    _, data = report
    arith = next(s for s in data["slices"] if s["slice"] == "domain=arith,tenant=globex")
    mine = [r for r in rows if r["slice"] == arith["slice"] and r["p_correct"] is not None]
    assert arith["n"] > len(mine)  # the n=2 requests count twice
    assert data["totals"]["scored"] == len(_ps(rows))


def test_recalibrated_only_with_enough_labels_and_equals_ppi_point(report, rows):
    _, data = report
    by_key = {s["slice"]: s for s in data["slices"]}
    key = "domain=algebra,tenant=acme"
    mine = [r for r in rows if r["slice"] == key]
    ps = _ps(mine)
    labels = [r for r in mine if r["label"] is not None]
    resid = [r["label"] - r["p_correct"] for r in labels if r["p_correct"] is not None]
    assert len(labels) >= 30
    # θ = mean p over all scored + w · Σ residuals / labels (as SliceRegistry counts them), the
    # labelled bias shrunk by its precision against the τ prior (monitor/intervals.recalibrated)
    n, m = len(ps), len(labels)
    mean_r = sum(resid) / m
    var_r = max(sum((r - mean_r) ** 2 for r in resid) / (m - 1), sum(p * (1 - p) for p in ps) / n)
    noise = var_r / m * (1 - m / n)  # labels drawn without replacement from the slice's n
    prior = max(data["tau"] ** 2, mean_r**2 - noise)
    weight = prior / (prior + noise)
    assert 0 < weight < 1
    expected = sum(ps) / n + weight * mean_r
    assert by_key[key]["recalibrated"]["estimate"] == pytest.approx(expected)
    for other, s in by_key.items():
        if other != key:
            assert s["recalibrated"] is None, other  # fewer than 30 labels


def test_ranked_worst_first_by_headline(report):
    _, data = report
    heads = [_headline(s) for s in data["slices"]]
    assert heads == sorted(heads)
    assert [s["rank"] for s in data["slices"]] == list(range(1, len(SLICES) + 1))
    # headline source: recalibrated > label-free > observed (the unscored slice only has labels)
    src = {s["slice"]: s["headline"]["source"] for s in data["slices"]}
    assert src["domain=algebra,tenant=acme"] == "recalibrated"
    assert src["domain=geometry,tenant=acme"] == "label_free"
    assert src["domain=chat,tenant=initech"] == "observed"


def test_windows_are_the_registry_windows_at_the_last_event(report, rows):
    _, data = report
    last_event = max(max(r["ts"], r["label_ts"] or 0) for r in rows)
    assert data["as_of"] == pytest.approx(last_event)
    newest = int(last_event // 300)
    for s in data["slices"]:
        for name, buckets in (("1h", 12), ("24h", 288)):
            inside = [r for r in rows if r["slice"] == s["slice"] and int(r["ts"] // 300) > newest - buckets]
            ps = _ps(inside)
            w = s["windows"][name]
            assert w["requests"] == len(inside)
            assert w["n_scored"] == len(ps)
            if ps:
                assert w["estimate"] == pytest.approx(sum(ps) / len(ps))


def test_timeseries_buckets_partition_the_slice(report, rows):
    _, data = report
    # sparse synthetic traffic (a few scored per slice-hour): coarser than hourly, still >= 6 buckets
    assert data["bucket_s"] in (3 * 3600, 6 * 3600)
    for s in data["slices"]:
        ts = s["timeseries"]
        assert sum(b["requests"] for b in ts) == s["requests"]
        assert sum(b["n"] for b in ts) == s["n"]
        assert [b["start"] for b in ts] == sorted(b["start"] for b in ts)
        for b in ts:
            ps = _ps([r for r in rows if r["slice"] == s["slice"] and b["start"] <= r["ts"] < b["end"]])
            assert b["n"] == len(ps)
            if ps:
                assert b["estimate"] == pytest.approx(sum(ps) / len(ps))
                assert b["lower"] <= b["estimate"] <= b["upper"]
    assert sum(b["requests"] for b in data["totals"]["overall_timeseries"]) == len(rows)


def test_acquire_next_lists_lowest_upper_bound_slices_and_their_least_confident_requests(report, rows):
    files, data = report
    acq = data["acquire_next"]
    uppers = sorted((s["headline"]["upper"], s["slice"]) for s in data["slices"] if s["headline"])
    assert [a["slice"] for a in acq] == [k for _, k in uppers[:5]]
    for a in acq:
        cand = sorted(
            (r for r in rows if r["slice"] == a["slice"] and r["p_correct"] is not None and r["label"] is None),
            key=lambda r: r["p_correct"],
        )[:5]
        assert [x["request_id"] for x in a["requests"]] == [r["request_id"] for r in cand]
        assert [x["p_correct"] for x in a["requests"]] == pytest.approx([r["p_correct"] for r in cand])
        captured = a["slice"] == "domain=code,tenant=umbrella"
        assert all(("prompt" in x) == captured for x in a["requests"])
    assert "domain=code,tenant=umbrella" in [a["slice"] for a in acq]
    with files["csv"].open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == sum(len(a["requests"]) for a in acq)
    assert table[0]["request_id"] == acq[0]["requests"][0]["request_id"]
    assert any(PAYLOAD in t["prompt"] for t in table)


def test_bucket_width_adapts_to_traffic():
    rng = np.random.default_rng(0)
    dense = T0 + rng.uniform(0, SPAN, 48 * 100)  # 100 an hour over two days
    assert bucket_width(dense) == 3600
    sparse = T0 + rng.uniform(0, SPAN, 48 * 2)  # 2 an hour: wider buckets, but not fewer than 6
    assert bucket_width(sparse) == 6 * 3600
    week = T0 + rng.uniform(0, 7 * 86400, 7 * 24 * 500)
    assert bucket_width(week) == 3 * 3600  # at most 72 buckets
    assert bucket_width(np.array([T0])) == 300


# ---------------------------------------------------------------------------------------------- files


def _png_size(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    assert raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_pngs_are_real_images_of_sensible_size(report):
    files, _ = report
    for name in ("slices", "timeseries", "reliability"):
        w, h = _png_size(files[name])
        assert 400 <= w <= 2500 and 300 <= h <= 3000, (name, w, h)
        assert files[name].stat().st_size > 10_000, name
        assert files[name].read_bytes()[-8:-4] == b"IEND"


def test_html_is_self_contained_and_escapes_traffic_text(report):
    files, data = report
    page = files["html"].read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "onerror=" not in page.replace("onerror=&quot;", "")  # only the escaped form
    assert html_escaped(PAYLOAD) in page
    assert "&lt;/pre&gt;&lt;/td&gt;" in page  # a completion cannot close the table around it
    assert page.count("data:image/png;base64,") == 3
    for attr in ("src=\"http", "href=\"http", "src='http", "url(", "@import"):
        assert attr not in page
    assert "Content-Security-Policy" in page
    assert data["files"]["html"] == "report.html"


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# ---------------------------------------------------------------------------------------------- edges


def test_no_records(tmp_path):
    files = build_report(records_from_db(write_db(tmp_path / "empty.db", [])), tmp_path / "out")
    data = json.loads(files["json"].read_text())
    assert data["slices"] == [] and data["acquire_next"] == [] and data["reliability"] is None
    assert set(files) == {"json", "csv", "html"}
    assert "No records" in files["html"].read_text()


def test_unscored_records_and_slices_without_labels(tmp_path, rows):
    unscored = [dict(r, scored=0, p_correct=None, p_correct_all=None, label=None, label_ts=None) for r in rows[:300]]
    files = build_report(records_from_db(write_db(tmp_path / "u.db", unscored)), tmp_path / "out")
    data = json.loads(files["json"].read_text())
    assert data["totals"]["scored"] == 0
    assert all(s["estimate"] is None and s["headline"] is None for s in data["slices"])
    assert data["acquire_next"] == []
    assert set(files) == {"json", "csv", "html"}
    assert "without an estimator" in files["html"].read_text()

    no_labels = [dict(r, label=None, label_ts=None) for r in rows]
    files = build_report(no_labels, tmp_path / "out2")
    data = json.loads(files["json"].read_text())
    assert data["reliability"] is None and "reliability" not in files
    assert {"slices", "timeseries"} <= set(files)
    assert all(s["recalibrated"] is None and s["labels"]["n"] == 0 for s in data["slices"])


def test_odd_text_is_written_safely(tmp_path):
    recs = [
        {"request_id": "x1", "ts": T0, "slice": "k=<b>bold</b>", "scored": 1, "p_correct": 0.2,
         "prompt": [{"role": "user", "content": "<script>x</script>"}], "completion": "lone \ud800 surrogate"},
        {"request_id": "x2", "ts": T0 + 60, "slice": "k=<b>bold</b>", "scored": 1, "p_correct": 0.3,
         "prompt": "=HYPERLINK(\"http://evil\")"},
    ]
    recs.append({"request_id": "x3", "ts": T0 + 90, "slice": "not-a-pair", "scored": 1, "p_correct": 0.9})
    files = build_report(recs, tmp_path / "out")
    page = files["html"].read_text(encoding="utf-8")
    assert "<b>bold" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script" not in page
    data = json.loads(files["json"].read_text(encoding="utf-8"))
    assert data["acquire_next"][0]["requests"][0]["prompt"].startswith('[{"role"')
    with files["csv"].open(newline="", encoding="utf-8") as fh:
        prompts = [row["prompt"] for row in csv.DictReader(fh)]
    assert "'=HYPERLINK" in prompts[1]  # no live spreadsheet formula


def test_reader_errors_are_clear(tmp_path):
    with pytest.raises(ReportError, match="no store"):
        records_from_db(tmp_path / "missing.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ReportError, match="not a readable SQLite"):
        records_from_db(tmp_path / "junk.db")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(ReportError, match="no 'requests' table"):
        records_from_db(tmp_path / "other.db")


def test_parse_since():
    now = 1_000_000.0
    assert parse_since("24h", now) == now - 86400
    assert parse_since("90m", now) == now - 5400
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("1732000000") == 1732000000.0
    assert parse_since("2024-11-19T07:06:40") == T0
    assert parse_since("2024-11-19T08:06:40+01:00") == T0
    assert parse_since(None) is None
    with pytest.raises(ReportError, match="unix seconds"):
        parse_since("yesterday")


# ---------------------------------------------------------------------------------------------- proxy export


class _Export(http.server.BaseHTTPRequestHandler):
    records: ClassVar[list[dict]] = []
    token = "s3cret"
    asked: ClassVar[list[dict]] = []

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(401, {"error": "unauthorized"})
        if url.path == "/sentinel/v1/slices":
            return self._send(200, {"level": 0.8, "tau": 0.07, "tau_shape": "constant", "slices": []})
        if url.path != "/sentinel/v1/export":
            return self._send(404, {"error": "not found"})
        q = dict(urllib.parse.parse_qsl(url.query))
        self.asked.append(q)
        since, limit = float(q.get("since", 0)), min(int(q.get("limit", 1000)), 100)  # server caps pages at 100
        out = [r for r in self.records if r["ts"] >= since][:limit]
        return self._send(200, {"records": out})

    def _send(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def test_records_from_proxy_pages_and_reports_auth_errors(rows):
    exported = []
    for r in sorted(rows, key=lambda r: r["ts"])[:450]:
        e = dict(r)
        for col in ("features", "p_correct_all"):
            e[col] = json.loads(e[col]) if e[col] else None
        exported.append(e)
    exported[200]["ts"] = exported[199]["ts"]  # a tie across a page boundary
    _Export.records = exported
    _Export.asked = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Export)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = records_from_proxy(url, token="s3cret")
        assert sorted(r["request_id"] for r in got) == sorted(r["request_id"] for r in exported)
        assert isinstance(got[0]["features"], dict | None)
        assert len(_Export.asked) >= 5  # paged: the server gives at most 100 a time
        cut = exported[300]["ts"]
        assert len(records_from_proxy(url + "/", token="s3cret", since=cut)) == sum(r["ts"] >= cut for r in exported)
        assert proxy_settings(url, token="s3cret") == {"level": 0.8, "tau": TransferSpread(0.07, "constant")}
        with pytest.raises(ReportError, match="404"):
            records_from_proxy(url + "/v1", token="s3cret")
        with pytest.raises(ReportError, match="--token"):
            records_from_proxy(url)
        with pytest.raises(ReportError, match="refused"):
            records_from_proxy(url, token="wrong")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ReportError, match="cannot reach"):
        records_from_proxy(url, token="s3cret")
    with pytest.raises(ReportError, match="base URL"):
        records_from_proxy("127.0.0.1:8080")


# ---------------------------------------------------------------------------------------------- browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if path := shutil.which(name):
            return path
    return None


class _Dom(HTMLParser):
    """Slice-table cells in document order, and every element's tag and attributes."""

    def __init__(self):
        super().__init__()
        self.slices: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self._in_slice_row = False
        self._cell: list[str] | None = None
        self.body_attrs: dict = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "body":
            self.body_attrs = a
        if tag == "tr":
            self._in_slice_row = "slice-row" in (a.get("class") or "")
        if tag == "td" and self._in_slice_row and a.get("class") == "slice":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.slices.append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.timeout(300)
def test_page_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    files, data = report
    flags = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
    ]
    page = files["html"].resolve().as_uri()
    env = dict(os.environ, HOME=str(tmp_path))
    dom = subprocess.run(
        [*flags, "--dump-dom", page], check=False, capture_output=True, text=True, timeout=120, env=env
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(dom.stdout)
    expected = [s["slice"] or "(untagged)" for s in data["slices"]]
    assert parsed.slices == expected  # the table as rendered, worst first
    assert [_headline(s) for s in data["slices"]] == sorted(_headline(s) for s in data["slices"])
    assert not [t for t, _ in parsed.tags if t == "script"], "a live <script> element made it into the DOM"
    assert not [a for t, a in parsed.tags if t == "img" and a.get("onerror")]
    assert "data-pwned" not in parsed.body_attrs
    assert PAYLOAD in dom.stdout.replace("&lt;", "<").replace("&gt;", ">")  # shown as text
    assert sum(1 for t, a in parsed.tags if t == "img" and a.get("src", "").startswith("data:image/png")) == 3

    shot = Path(os.environ.get("SENTINEL_REPORT_SCREENSHOT", tmp_path / "report.png"))
    res = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", page],
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert _png_size(shot) == (1280, 2000)
    assert shot.stat().st_size > 50_000  # a rendered page with plots, not a blank frame
