"""``select`` end to end on the real llama-server + Gemma 3 270M: tagged benchmark traffic through the
proxy, feedback labels posted as an application would, the estimators compared on those labels (read
back from the proxy's store), then ``--switch`` serving the winner without a restart.

The proxy starts on a deliberately poor estimator for this traffic (a constant fitted on the two
slices where Gemma is right ~80 % of the time), so what it serves is measurably off and the
comparison has a real winner to find.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import defaultdict
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from entropy_sentinel import cli
from entropy_sentinel.config import load_config
from entropy_sentinel.estimator.scorer import ArtifactScorer
from entropy_sentinel.evaluation.training import train
from entropy_sentinel.traces.collect import collect

from tests.harness import running_proxy
from tests.paths import ROOT

pytestmark = pytest.mark.llama

MODEL = "gemma-3-270m"
TOKEN = "admin-Select-5b1e"
STUDY_TRACES = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"
CANDIDATES = "constant,atc,logistic"
SLICES = {"benchmark=sciq,tenant=acme", "benchmark=svamp,tenant=acme"}


def poor_artifact(tmp_path: Path) -> tuple[Path, float]:
    """A constant estimator fitted on the study's two easiest slices; its constant."""
    easy = tmp_path / "easy.jsonl"
    labels = []
    with open(easy, "wb") as fh, gzip.open(STUDY_TRACES) as study:
        for line in study:
            row = orjson.loads(line)
            if row["benchmark"] in ("wikidata_country", "ling_singular"):
                fh.write(line)
                labels.append(row["label"])
    out = tmp_path / "served.skops"
    train([easy], out, method="constant", progress=False)
    return out, sum(labels) / len(labels)


async def test_select_compares_on_feedback_labels_and_switches_without_a_restart(llama_url, tmp_path, capsys):
    served, level = poor_artifact(tmp_path)
    config = tmp_path / "sentinel.yaml"
    config.write_text(f'estimator:\n  models:\n    "{MODEL}": "{served}"\n    "*": none\n')
    catalog = cli.load_estimators(load_config(config, environ={}), str(config))
    traces = tmp_path / "traffic.jsonl"
    store = {"path": str(tmp_path / "sentinel.db"), "flush_interval_s": 0.1}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_proxy(llama_url, scorer=catalog, admin={"token": TOKEN}, store=store) as proxy:
        for bench in ("sciq", "svamp"):
            await collect(proxy.root, bench, traces, {"tenant": "acme"}, limit=12, model=MODEL, progress=False,
                          admin_token=TOKEN)
        rows = [orjson.loads(line) for line in traces.read_bytes().splitlines()]
        async with aiohttp.ClientSession(headers=auth) as session:
            for r in rows:  # the application's feedback
                body = {"request_id": r["request_id"], "correct": bool(r["label"])}
                async with session.post(f"{proxy.root}/sentinel/v1/feedback", json=body) as resp:
                    assert resp.status == 200, await resp.text()
            async with session.get(f"{proxy.root}/sentinel/v1/export") as resp:
                exported = (await resp.json())["records"]

        report = tmp_path / "select.json"
        argv = ["select", "--proxy", proxy.root, "--model", "gemma-3-*", "--traces", str(STUDY_TRACES),
                "--estimators", CANDIDATES, "--min-labels", "5", "--admin-token", TOKEN, "--json", str(report),
                "--out", str(served)]
        assert await asyncio.to_thread(cli.main, argv) == 0
        printed = capsys.readouterr().out
        comparison = json.loads(report.read_text())
        assert ArtifactScorer.load(served).metadata["estimator"] == "constant"  # no --switch: nothing written

        # the comparison is over exactly the labelled, scored requests, by the slices they were sent with
        labelled = [e for e in exported if e["label"] is not None and e["p_correct"] is not None]
        assert comparison["n_labels"] == len(labelled) == len(rows)
        by_slice: dict[str, list[dict]] = defaultdict(list)
        for e in labelled:
            by_slice[e["slice"]].append(e)
        assert set(comparison["slices"]) == set(by_slice) == SLICES
        for key, es in by_slice.items():
            assert comparison["slices"][key]["accuracy"] == pytest.approx(sum(e["label"] for e in es) / len(es))
            # "current" is what the proxy served: the mean of its stored P(correct), the poor constant
            assert comparison["per_slice"]["current"][key] == pytest.approx(sum(e["p_correct"] for e in es) / len(es))
            assert comparison["per_slice"]["current"][key] == pytest.approx(level, abs=1e-6)
        assert set(comparison["slice_aee"]) == {"current", *CANDIDATES.split(",")}
        assert comparison["slice_aee"]["current"] > 0.4  # ~0.8 served for traffic right ~0-30 % of the time
        assert comparison["recommended"] == comparison["winner"] != "current"  # beats it in ~all resamples
        assert comparison["beats_current"][comparison["winner"]] > 0.95 and "--switch" in printed

        # --switch: the winner trained on the same traces into --out, which the map names: reloaded
        assert await asyncio.to_thread(cli.main, [*argv, "--switch"]) == 0
        assert "no restart" in capsys.readouterr().out
        switched = json.loads(report.read_text())
        new = ArtifactScorer.load(served)
        assert new.metadata["estimator"] == switched["recommended"] != "current"
        assert new.metadata["chosen_on_labels"]["n_labels"] == len(rows) and new.metadata["model"] == MODEL

        client = openai.AsyncOpenAI(base_url=proxy.url, api_key="x", max_retries=0)
        raw = await client.completions.with_raw_response.create(
            model=MODEL, prompt="Question: What is 2 plus 3?\nAnswer:", max_tokens=6, temperature=0
        )
        await client.close()
        async with aiohttp.ClientSession(headers=auth) as session:
            async with session.get(f"{proxy.root}/sentinel/v1/requests/{raw.headers['X-Sentinel-Request-Id']}") as resp:
                record = await resp.json()
        want = new([record["choices"][0]["features_by_variant"]])[0]
        assert record["p_correct"][0] == pytest.approx(want, abs=1e-9) and want != pytest.approx(level, abs=1e-6)
