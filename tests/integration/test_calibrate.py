"""``calibrate`` end to end on the real llama-server + Gemma 3 270M: a small benchmark mix through the
proxy, graded, trained, validated, written, and loaded into the running proxy without a restart (its
estimator map already names the artifact): the next response is scored by the new artifact."""

from __future__ import annotations

import shutil

import aiohttp
import openai
import orjson
import pytest
from entropy_sentinel import cli
from entropy_sentinel.config import load_config
from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
from entropy_sentinel.evaluation.calibrate import calibrate, summary_lines

from tests.harness import running_proxy

pytestmark = pytest.mark.llama

MODEL = "gemma-3-270m"
TOKEN = "admin-Calibrate-19c2"
MIX = ("sciq", "arc_easy", "svamp")


async def test_calibrate_collects_trains_and_loads_into_the_running_proxy(llama_url, tmp_path):
    out, traces = tmp_path / "gemma.skops", tmp_path / "gemma.traces.jsonl"
    shutil.copyfile(resolve_artifact("builtin"), out)  # the proxy starts on the shipped one at that path
    before = ArtifactScorer.load(out)
    config = tmp_path / "sentinel.yaml"
    config.write_text(f'estimator:\n  models:\n    "{MODEL}": "{out}"\n    "*": none\n')
    catalog = cli.load_estimators(load_config(config, environ={}), str(config))
    notes: list[str] = []
    async with running_proxy(llama_url, scorer=catalog, admin={"token": TOKEN}) as proxy:
        result = await calibrate(proxy.root, MODEL, out, traces=traces, budget=24, benchmarks=[*MIX, "arith_9d"],
                                 admin_token=TOKEN, progress=False, note=notes.append)
        assert result.loaded, result.load_note
        assert result.plan == dict.fromkeys(MIX, 8) and list(result.skipped) == ["arith_9d"]  # unknown: skipped
        assert notes == [f"skipping arith_9d: {result.skipped['arith_9d']}"]
        rows = [orjson.loads(line) for line in traces.read_bytes().splitlines()]
        assert sum(s.written + s.unscored for s in result.collected.values()) == 24 and len(rows) > 20
        assert all(r["slice"] == {"source": "calibrate", "benchmark": r["benchmark"]} for r in rows)
        meta = result.metadata
        assert meta["model"] == MODEL and meta["estimator"] == "monotone_boost"
        assert set(meta["validation"]["per_benchmark"]) == set(MIX)
        text = "\n".join(summary_lines(result))
        assert "median AEE" in text and "svamp" in text and "loaded:" in text

        # the proxy now scores with the new artifact: the same as applying it to the recorded features
        client = openai.AsyncOpenAI(base_url=proxy.url, api_key="x", max_retries=0)
        raw = await client.completions.with_raw_response.create(
            model=MODEL, prompt="Question: What is 2 plus 3?\nAnswer:", max_tokens=6, temperature=0
        )
        p = float(raw.headers["X-Sentinel-P-Correct"])
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            rid = raw.headers["X-Sentinel-Request-Id"]
            async with session.get(f"{proxy.root}/sentinel/v1/requests/{rid}") as resp:
                record = await resp.json()
        await client.close()
        features = record["choices"][0]["features_by_variant"]
        want = ArtifactScorer.load(out)([features])[0]
        assert record["p_correct"][0] == pytest.approx(want, abs=1e-9) and p == pytest.approx(want, abs=1e-4)
        assert want != pytest.approx(before([features])[0], abs=1e-9)

        # a rerun continues the traces: nothing is sent twice; --no-load leaves the proxy as it is
        again = await calibrate(proxy.root, MODEL, out, traces=traces, budget=24, benchmarks=MIX,
                                admin_token=TOKEN, progress=False, load=False)
        assert all(s.written == 0 and s.skipped_done == 8 for s in again.collected.values())
        assert not again.loaded and '"gemma-3-270m": ' in again.load_note


async def test_a_proxy_whose_map_names_another_artifact_gets_the_lines_to_add(llama_url, tmp_path):
    builtin = ArtifactScorer.load(resolve_artifact("builtin"))
    async with running_proxy(llama_url, scorer=builtin) as proxy:  # one scorer for every model, no map
        result = await calibrate(proxy.root, MODEL, tmp_path / "c.skops", budget=6, benchmarks=MIX,
                                 method="logistic", progress=False)
    assert not result.loaded
    assert f'"{MODEL}": "{tmp_path / "c.skops"}"' in result.load_note and "estimators/reload" in result.load_note

