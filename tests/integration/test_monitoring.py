"""Slice monitoring with tagged traffic through the real llama-server + Gemma 3 270M: metrics,
slices JSON and store agree with each other and with the requests sent; feedback; hostile tags;
a killed-and-restarted proxy keeps every flushed record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import aiohttp
import openai
import pytest
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.estimator.scorer import ArtifactScorer
from entropy_sentinel.report.command import build_report, records_from_db
from entropy_sentinel.stats.intervals import transfer_tau

from tests.harness import get_json, running_proxy
from tests.unit.report.test_report import _chromium, _Dom

pytestmark = pytest.mark.llama
ADMIN = {"Authorization": "Bearer adm-token"}
ALGEBRA = "domain=algebra,tenant=acme"


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in metrics")


async def ask(client: openai.AsyncOpenAI, slice_header: str | None, prompt: str) -> tuple[str, float]:
    headers = {"X-Sentinel-Slice": slice_header} if slice_header else {}
    raw = await client.completions.with_raw_response.create(
        model="gemma-3-270m", prompt=prompt, max_tokens=6, temperature=0, extra_headers=headers
    )
    return raw.headers["X-Sentinel-Request-Id"], float(raw.headers["X-Sentinel-P-Correct"])


async def test_tagged_traffic_metrics_slices_store_and_feedback_agree(llama_url, trained_artifact, tmp_path):
    db = tmp_path / "sentinel.db"
    overrides = {
        "store": {"path": str(db), "flush_interval_s": 0.1},
        "monitor": {"api_key_tenants": {"sk-acme": "acme"}, "min_labels": 4, "max_slices": 3},
        "admin": {"token": "adm-token"},
    }
    scorer = ArtifactScorer.load(trained_artifact)
    async with running_proxy(llama_url, scorer=scorer, **overrides) as proxy:
        acme = openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-acme", max_retries=0)
        other = openai.AsyncOpenAI(base_url=proxy.url, api_key="sk-other", max_retries=0)
        # the configured key -> tenant map wins over the tenant the client claims
        algebra = [
            await ask(acme, "tenant=evil,domain=algebra", f"Question: What is {i} plus {i}?\nAnswer:") for i in range(4)
        ]
        geometry = [
            await ask(other, "domain=geometry", f"Question: How many sides has a shape number {i}?\nAnswer:")
            for i in range(3)
        ]
        overflow = [await ask(other, f"x={i}", "Question: What is 1 plus 1?\nAnswer:") for i in range(3)]

        for hostile in ("tenant=<script>alert(1)</script>", "a=1,b=2,c=3,d=4,e=5", "tenant=evil value"):
            with pytest.raises(openai.BadRequestError) as err:
                await ask(other, hostile, "x")
            assert err.value.body["code"] == "invalid_slice"

        async with aiohttp.ClientSession() as session:
            async with session.get(proxy.root + "/sentinel/metrics") as resp:
                assert resp.status == 401  # admin route, token configured
            async with session.get(proxy.root + "/sentinel/metrics", headers=ADMIN) as resp:
                text = await resp.text()
            async with session.get(proxy.root + "/sentinel/v1/slices", headers=ADMIN) as resp:
                slices = {s["slice"]: s for s in (await resp.json())["slices"]}

            # max_slices = 3: the third distinct slice overflowed into "other"
            assert set(slices) == {ALGEBRA, "domain=geometry", "x=0", "other"}
            for key, sent in ((ALGEBRA, algebra), ("domain=geometry", geometry), ("other", overflow[1:])):
                ps = [p for _, p in sent]
                assert metric(text, "sentinel_scored_total", slice=key) == len(sent)
                n_requests = metric(text, "sentinel_requests_total", slice=key, status="200", route="completions")
                assert n_requests == len(sent)
                assert metric(text, "sentinel_p_correct_sum", slice=key) == pytest.approx(sum(ps), abs=1e-3)
                life = slices[key]["windows"]["lifetime"]
                assert life["n_scored"] == len(sent) and life["estimate"] == pytest.approx(sum(ps) / len(ps), abs=1e-4)
                assert life["lower"] <= life["estimate"] <= life["upper"]
                estimate = metric(text, "sentinel_estimated_accuracy", slice=key, window="1h", bound="estimate")
                assert estimate == pytest.approx(life["estimate"])
            assert "script" not in text and "evil" not in text and "e=5" not in text
            # refused requests are counted, under no slice, and never reached the slice counters
            assert metric(text, "sentinel_requests_total", slice="", status="400", route="completions") == 3

            # feedback: labels change observed accuracy and, past min_labels, recalibrate
            for (rid, _), correct in zip(algebra, (True, True, True, False), strict=True):
                async with session.post(proxy.root + "/sentinel/v1/feedback", headers=ADMIN,
                                        json={"request_id": rid, "correct": correct}) as resp:
                    assert resp.status == 200
            async with session.post(proxy.root + "/sentinel/v1/feedback", headers=ADMIN,
                                    json={"request_id": algebra[0][0], "correct": False}) as resp:
                assert resp.status == 409
            async with session.post(proxy.root + "/sentinel/v1/feedback", headers=ADMIN,
                                    json={"request_id": "f" * 32, "correct": True}) as resp:
                assert resp.status == 404
            async with session.get(proxy.root + "/sentinel/v1/slices", headers=ADMIN) as resp:
                labelled = next(s for s in (await resp.json())["slices"] if s["slice"] == ALGEBRA)
        assert labelled["labels"]["n"] == 4 and labelled["labels"]["estimate"] == 0.75
        # every algebra request is labelled, so the prediction-powered estimate is the observed one
        assert labelled["recalibrated"]["estimate"] == pytest.approx(0.75)
    # the app is closed: the store drained; it agrees with what was sent
    conn = sqlite3.connect(db)
    rows = {r[0]: r[1:] for r in conn.execute("SELECT request_id, slice, p_correct, label FROM requests")}
    assert len(rows) == 10
    for rid, p in algebra:
        assert rows[rid][0] == ALGEBRA and rows[rid][1] == pytest.approx(p, abs=5e-5)
    assert sorted(rows[rid][2] for rid, _ in algebra) == [0, 1, 1, 1]
    assert {rows[rid][0] for rid, _ in geometry} == {"domain=geometry"}

    # the operator's report from this real traffic, opened as a person would
    files = build_report(records_from_db(db), tmp_path / "report", tau=scorer_tau(scorer))
    data = json.loads(files["json"].read_text())
    assert {s["slice"] for s in data["slices"]} == {ALGEBRA, "domain=geometry", "x=0", "other"}
    worst = data["slices"][0]
    assert worst["slice"] != ALGEBRA or worst["labels"]["n"] == 4
    assert files["slices"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (scripts/system_deps.sh installs it)")
    dom = await asyncio.to_thread(
        subprocess.run,
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         files["html"].resolve().as_uri()],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(dom.stdout)
    assert parsed.slices == [s["slice"] for s in data["slices"]]  # rendered, worst first


def test_killed_and_restarted_proxy_keeps_every_flushed_record(llama_url, trained_artifact, tmp_path):
    port, db = free_port(), tmp_path / "s.db"
    env = {**os.environ, "SENTINEL_STORE_PATH": str(db), "SENTINEL_STORE_FLUSH_INTERVAL_S": "0.1"}
    cmd = [sys.executable, "-m", "entropy_sentinel", "serve", "--upstream", llama_url, "--port", str(port),
           "--estimator", str(trained_artifact)]
    base = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                get_json(base + "/sentinel/healthz")
                return proc
            except OSError:
                time.sleep(0.1)
        raise TimeoutError("proxy did not start")

    proc = start()
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    ids = []
    for i in range(3):
        raw = client.completions.with_raw_response.create(
            model="gemma-3-270m", prompt=f"{i} + {i} =", max_tokens=4, temperature=0,
            extra_headers={"X-Sentinel-Slice": "domain=restart"},
        )
        ids.append(raw.headers["X-Sentinel-Request-Id"])
    time.sleep(1.0)  # > flush interval: the rows are committed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = start()
    try:
        slices = {s["slice"]: s for s in get_json(base + "/sentinel/v1/slices")["slices"]}
        assert slices["domain=restart"]["windows"]["lifetime"]["n_scored"] == 3
        for rid in ids:  # older than the in-memory window of this new process: served from the store
            assert get_json(f"{base}/sentinel/v1/requests/{rid}")["slice"] == "domain=restart"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def scorer_tau(scorer: ArtifactScorer) -> float:
    return transfer_tau(scorer.metadata.get("validation"), 0.9)
