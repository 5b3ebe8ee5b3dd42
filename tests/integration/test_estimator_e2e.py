"""Labelled traffic in, calibrated P(correct) out — on the real llama-server + Gemma 3 270M.

collect (through the proxy, real openai client) -> train -> serve with the estimator (scores on
real responses) -> evaluate (its numbers recomputed independently from the same traces).
"""

from __future__ import annotations

import math

import aiohttp
import numpy as np
import openai
import orjson
import pytest
from entropy_sentinel.config import load_config
from entropy_sentinel.estimator.artifact import load_artifact
from entropy_sentinel.estimator.estimators import make_estimator
from entropy_sentinel.estimator.scorer import ArtifactScorer
from entropy_sentinel.evaluation.protocol import benchmark_data, group_by_benchmark, read_traces, run_protocol
from entropy_sentinel.evaluation.training import train
from entropy_sentinel.gateway.app import create_app
from entropy_sentinel.traces.collect import collect

from tests.conftest import COLLECT_BENCHMARKS
from tests.harness import running_proxy, served

pytestmark = pytest.mark.llama

BENCHMARKS = COLLECT_BENCHMARKS


@pytest.fixture(scope="module")
async def traces(collected_traces, llama_url):
    # an interrupted run resumes: nothing is sent twice
    async with running_proxy(llama_url) as proxy:
        again = await collect(proxy.root, "svamp", collected_traces, limit=16, progress=False)
    assert again.written == 0 and again.skipped_done == 16
    return collected_traces


def test_collected_traces_are_complete_and_hold_no_text(traces):
    rows = read_traces(traces)
    assert len(rows) == sum(BENCHMARKS.values())
    assert len({r["request_id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["k"] == 20 and row["model"] == "gemma-3-270m" and row["label"] in (0, 1)
        assert set(row["features_by_variant"]) == {"topk", "renormalized", "tail_lumped", "tail_uniform"}
        assert row["features"]["n_tokens"] == row["tokens"] > 0
        assert row["slice"]["tenant"] == "ci"
        assert "prompt" not in row and "completion" not in row
    accuracy = {b: np.mean([r["label"] for r in rows if r["benchmark"] == b]) for b in BENCHMARKS}
    assert min(accuracy.values()) < max(accuracy.values()), accuracy  # difficulty spreads


async def test_train_then_serve_scores_real_responses(traces, llama_url, tmp_path):
    artifact = tmp_path / "estimator.skops"
    metadata = train([traces], artifact, method="logistic", progress=False)
    assert metadata["model"] == "gemma-3-270m" and set(metadata["training_benchmarks"]) == set(BENCHMARKS)
    assert set(metadata["validation"]["per_benchmark"]) == set(BENCHMARKS)
    _, loaded = load_artifact(artifact)
    assert loaded["features"] == metadata["features"]

    scorer = ArtifactScorer.load(artifact)
    cfg = load_config(overrides={"store": {"path": ""}}, environ={})
    app = create_app(cfg, llama_url, scorer=scorer)
    async with served(app, handler_cancellation=True) as base:
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        raw = await client.completions.with_raw_response.create(
            model="gemma-3-270m", prompt="Question: What is 2 plus 3?\nAnswer:", max_tokens=6, temperature=0
        )
        p = float(raw.headers["X-Sentinel-P-Correct"])
        assert 0.0 <= p <= 1.0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/sentinel/v1/requests/{raw.headers['X-Sentinel-Request-Id']}") as resp:
                record = await resp.json()
            # the header is the estimator applied to exactly the features the proxy recorded
            expected = scorer([record["choices"][0]["features_by_variant"]])[0]
            assert p == pytest.approx(expected, abs=5e-5) and record["p_correct"] == [pytest.approx(expected)]
            body = {"model": "gemma-3-270m", "prompt": "Question: What is 4 plus 4?\nAnswer:", "max_tokens": 6,
                    "temperature": 0, "stream": True, "n": 2}
            async with session.post(base + "/v1/completions", json=body) as resp:
                events = (await resp.read()).split(b"\n\n")
        comment = next(e for e in events if e.startswith(b": sentinel "))
        scores = orjson.loads(comment[len(b": sentinel ") :])["p_correct"]
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_evaluation_numbers_are_computed_from_the_traces(traces):
    grouped = group_by_benchmark(read_traces(traces))
    result = run_protocol(grouped, ["atc", "logistic"], ks=(1, 2), n_jobs=2, progress=False)
    n = len(BENCHMARKS)
    assert len(result.rows) == 2 * (n * (n - 1) + math.comb(n, 2) * (n - 2))
    # recompute one row by hand: ATC trained on one benchmark, tested on another
    row = next(r for r in result.rows if r["estimator"] == "atc" and r["k"] == 1)
    train_name = row["train"]  # k = 1: a single benchmark
    est = make_estimator("atc")
    data = benchmark_data(grouped, est.features)
    est.fit(data[train_name].matrix(est.features), data[train_name].y)
    held = data[row["heldout"]]
    p = est.predict_proba(held.matrix(est.features))[:, 1]
    assert row["est_acc"] == pytest.approx(p.mean())
    assert row["true_acc"] == pytest.approx(held.y.mean())
    assert row["aee"] == pytest.approx(abs(p.mean() - held.y.mean()))
