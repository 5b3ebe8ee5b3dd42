"""Estimators keyed by model (issue 14) through the proxy: one upstream serving several models, each
response scored by its own model's artifact (the expected score recomputed from the features the
record shows), a model without an estimator recorded unscored with the reason; the map reloaded by
the admin endpoint and by SIGHUP without a restart, a stream in flight finishing with the estimator
it started with, a bad artifact refused with the previous one kept."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from entropy_sentinel import cli
from entropy_sentinel.config import load_config
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.estimator.scorer import ArtifactScorer

from tests.harness import ConstantScorer, chat_chunk, running_proxy, scripted_upstream, sse, wait_serve_ready
from tests.tiny_estimators import smuggling_artifact, two_artifacts

TOKEN = "admin-Reload-7f3e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVED = ("alpha", "beta-lora-1", "gamma")


def top(slope: float) -> list[tuple[str, float]]:
    """Five candidates, softmax of 0, -slope, -2 slope...: flat (high entropy) for a small slope."""
    logits = [-slope * i for i in range(5)]
    norm = math.log(sum(math.exp(x) for x in logits))
    return [(f"t{i}", x - norm) for i, x in enumerate(logits)]


def model_upstream(release: asyncio.Event):
    """Answers with ``model`` set to the request's (none at all for "beta-anon"); three tokens whose
    entropy the prompt picks ("flat" or "sharp"); a "slow" stream waits for ``release`` after its
    first token."""

    async def handler(request: web.Request, up: Any) -> web.StreamResponse:
        if not request.path.endswith("completions"):
            return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in SERVED]})
        body = await request.json()
        prompt = body["messages"][0]["content"]
        answered = None if body["model"] == "beta-anon" else body["model"]
        chunks = []
        for i in range(3):
            chunk = chat_chunk(f"w{i}", top(0.2 if "flat" in prompt else 3.0), "stop" if i == 2 else None)
            chunk["model"] = answered
            if answered is None:
                del chunk["model"]
            chunks.append(chunk)
        if not body.get("stream"):
            answer = {"id": "c", "object": "chat.completion", "created": 1, "model": answered, "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "w0w1w2"}, "finish_reason": "stop",
                "logprobs": {"content": [c["choices"][0]["logprobs"]["content"][0] for c in chunks]}}]}
            if answered is None:
                del answer["model"]
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chunks[0]))
        if "slow" in prompt:
            await release.wait()
        for chunk in chunks[1:]:
            await resp.write(sse(chunk))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    return handler


def write_config(path: Path, models: dict[str, str]) -> Path:
    lines = ["estimator:", "  models:", *(f'    "{glob}": "{artifact}"' for glob, artifact in models.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expected(artifact: Path, record: dict[str, Any]) -> float:
    """What ``artifact`` gives the features the proxy recorded for this response."""
    return ArtifactScorer.load(artifact)([record["choices"][0]["features_by_variant"]])[0]


async def ask(
    session: aiohttp.ClientSession, root: str, model: str, prompt: str = "flat", stream: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[str, bool, float | None]:
    """(request id, scored, P(correct)) as the client sees them: the header or the stream's comment."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    async with session.post(root + "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200
        rid = resp.headers["X-Sentinel-Request-Id"]
        if not stream:
            await resp.read()
            header = resp.headers.get("X-Sentinel-P-Correct")
            return rid, header is not None, None if header is None else float(header)
        events = (await resp.read()).split(b"\n\n")
    return rid, *_comment(events)


def _comment(events: list[bytes]) -> tuple[bool, float | None]:
    comment = next(e for e in events if e.startswith(b": sentinel "))
    payload = orjson.loads(comment[len(b": sentinel ") :])
    return payload["scored"], (payload["p_correct"] or [None])[0]


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Any:
    async with session.get(url, **kwargs) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_each_model_is_scored_by_its_own_artifact_and_a_third_is_unscored_with_the_reason(tmp_path):
    a, b = two_artifacts(tmp_path)
    config = write_config(tmp_path / "sentinel.yaml", {"alpha": str(a), "beta*": str(b)})
    catalog = cli.load_estimators(load_config(config, environ={}), str(config))
    async with (
        scripted_upstream(model_upstream(asyncio.Event())) as up,
        running_proxy(up.url, dialect="openai", scorer=catalog) as proxy,
        aiohttp.ClientSession() as session,
    ):
        root = proxy.root
        seen: dict[str, list[tuple[bool, float | None, dict[str, Any]]]] = {}
        for model in ("alpha", "beta-lora-1", "beta-anon", "gamma"):
            for stream in (False, True):
                rid, scored, p = await ask(session, root, model, stream=stream,
                                           headers={"X-Sentinel-Slice": f"model={model}"})
                record = await get(session, f"{root}/sentinel/v1/requests/{rid}")
                seen.setdefault(model, []).append((scored, p, record))
        health = await get(session, root + "/sentinel/healthz")
        listed = (await get(session, root + "/sentinel/v1/slices"))["slices"]
        slices = {s["slice"]: s["windows"]["lifetime"] for s in listed}
        async with session.get(root + "/sentinel/metrics") as resp:
            metrics = await resp.text()

    for model, own, other in (("alpha", a, b), ("beta-lora-1", b, a), ("beta-anon", b, a)):
        for scored, p, record in seen[model]:
            mine = expected(own, record)
            assert abs(mine - expected(other, record)) > 0.3  # the two artifacts disagree on these features
            assert scored and record["scored"] and record["unscored_reason"] is None
            assert record["p_correct"][0] == pytest.approx(mine, abs=1e-9)
            assert p == pytest.approx(mine, abs=1e-4)  # what the client got (header: 4 decimals)
            assert record["model"] == (None if model == "beta-anon" else model)  # beta-anon: the request's picked
    for scored, p, record in seen["gamma"]:
        assert not scored and p is None and record["p_correct"] is None
        assert record["scored"] is False and record["unscored_reason"] == "no_estimator_for_model"
        assert record["model"] == "gamma" and record["choices"][0]["features"]["mean"] > 1.5  # features kept

    # counted: gamma is traffic of its slice, never scored; the metrics count it as a request, not a score
    assert slices["model=gamma"]["requests"] == 2 and slices["model=gamma"]["n_scored"] == 0
    assert all(slices[f"model={m}"] == {**slices[f"model={m}"], "requests": 2, "n_scored": 2}
               for m in ("alpha", "beta-lora-1", "beta-anon"))

    def total(name: str, where: str = "") -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(name + "{") and where in line)

    assert total("sentinel_requests_total", 'slice="model=gamma",status="200"') == 2
    assert total("sentinel_scored_total", 'slice="model=gamma"') == 0
    assert total("sentinel_scored_total") == 6

    assert health["estimator_loaded"] is True
    assert health["estimators"] == [
        {"glob": "alpha", "model": "alpha", "estimator": "LogisticEstimator", "sha256": sha(a), "scoring": True},
        {"glob": "beta*", "model": "beta", "estimator": "LogisticEstimator", "sha256": sha(b), "scoring": True},
    ]  # no file paths outside the admin token


async def test_reload_switches_a_models_artifact_while_a_stream_in_flight_keeps_the_old_one(tmp_path):
    a, b = two_artifacts(tmp_path)
    config = write_config(tmp_path / "sentinel.yaml", {"alpha": str(a), "beta*": str(b)})
    catalog = cli.load_estimators(load_config(config, environ={}), str(config))
    release = asyncio.Event()
    async with (
        scripted_upstream(model_upstream(release)) as up,
        running_proxy(up.url, dialect="openai", scorer=catalog, admin={"token": TOKEN}) as proxy,
        aiohttp.ClientSession() as session,
        aiohttp.ClientSession() as streams,
    ):
        root, reload_url = proxy.root, proxy.root + "/sentinel/v1/estimators/reload"
        body = {"model": "alpha", "messages": [{"role": "user", "content": "slow flat"}], "stream": True}
        async with streams.post(root + "/v1/chat/completions", json=body) as slow:
            slow_id = slow.headers["X-Sentinel-Request-Id"]
            head = await slow.content.readuntil(b"\n\n")  # under way, before the reload

            write_config(config, {"alpha": str(b), "beta*": str(a)})
            async with session.post(reload_url) as resp:  # admin route: the token is needed
                assert resp.status == 401
            async with session.post(reload_url, headers=AUTH) as resp:
                assert resp.status == 200, await resp.text()
                reloaded = await resp.json()
            assert [(e["glob"], e["sha256"], e["model"]) for e in reloaded["estimators"]] == [
                ("alpha", sha(b), "beta"), ("beta*", sha(a), "alpha")]
            assert reloaded["reloaded_at"] is not None

            # new requests get the new map, while the slow stream is still open
            rid, _, p_new = await ask(session, root, "alpha", headers=AUTH)
            record = await get(session, f"{root}/sentinel/v1/requests/{rid}", headers=AUTH)
            assert p_new == pytest.approx(expected(b, record), abs=1e-4)
            rid, _, p_beta = await ask(session, root, "beta-lora-1", stream=True, headers=AUTH)
            record = await get(session, f"{root}/sentinel/v1/requests/{rid}", headers=AUTH)
            assert p_beta == pytest.approx(expected(a, record), abs=1e-9)

            release.set()
            rest = await slow.content.read()
        events = (head + rest).split(b"\n\n")
        assert events[-2] == b"data: [DONE]" and sum(e.startswith(b"data: {") for e in events) == 3
        scored, p_slow = _comment(events)
        record = await get(session, f"{root}/sentinel/v1/requests/{slow_id}", headers=AUTH)
        assert scored and p_slow == pytest.approx(expected(a, record), abs=1e-9)  # the map it started with
        assert abs(p_slow - expected(b, record)) > 0.3

        # a bad artifact or section is refused, in OpenAI's error shape, and the map in use stays
        junk = tmp_path / "junk.skops"
        junk.write_bytes(b"\x80\x04 a pickle is never loaded")
        bad = [
            ({"alpha": str(tmp_path / "missing.skops")}, 422, "invalid_estimator_artifact", "no such file"),
            ({"alpha": str(junk)}, 422, "invalid_estimator_artifact", "not a skops file"),
            ({"alpha": str(smuggling_artifact(tmp_path / "evil.skops"))}, 422, "invalid_estimator_artifact",
             "outside the estimator allow-list: tests.tiny_estimators.Smuggled"),
        ]
        for models, status, code, why in bad:
            write_config(config, {"beta*": str(b), **models})
            async with session.post(reload_url, headers=AUTH) as resp:
                error = (await resp.json())["error"]
                assert resp.status == status
            assert error["code"] == code and error["type"] == "invalid_request_error" and why in error["message"]
            assert error["message"].startswith("Estimators not reloaded, the previous ones stay: ")
        config.write_text("estimator:\n  modles: {}\n")
        async with session.post(reload_url, headers=AUTH) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and error["code"] == "invalid_estimator_config"
            assert "estimator.modles: unknown key" in error["message"]
        listing = await get(session, root + "/sentinel/v1/estimators", headers=AUTH)
        assert [(e["glob"], e["sha256"]) for e in listing["estimators"]] == [("alpha", sha(b)), ("beta*", sha(a))]
        rid, _, p = await ask(session, root, "alpha", headers=AUTH)
        record = await get(session, f"{root}/sentinel/v1/requests/{rid}", headers=AUTH)
        assert p == pytest.approx(expected(b, record), abs=1e-4)


async def test_a_proxy_given_one_scorer_scores_every_model_and_has_nothing_to_reload():
    async with (
        scripted_upstream(model_upstream(asyncio.Event())) as up,
        running_proxy(up.url, dialect="openai", scorer=ConstantScorer(0.5)) as proxy,
        aiohttp.ClientSession() as session,
    ):
        assert (await ask(session, proxy.root, "gamma"))[1:] == (True, 0.5)
        async with session.post(proxy.root + "/sentinel/v1/estimators/reload") as resp:
            assert resp.status == 409 and (await resp.json())["error"]["code"] == "estimator_reload_unavailable"
        assert (await get(session, proxy.root + "/sentinel/healthz"))["estimators"][0]["glob"] == "*"


async def test_sighup_reloads_a_running_serve_and_a_bad_map_is_refused_in_the_log(tmp_path):
    a, b = two_artifacts(tmp_path)
    config = write_config(tmp_path / "sentinel.yaml", {"alpha": str(a)})
    async with scripted_upstream(model_upstream(asyncio.Event())) as up:
        port = free_port()
        root = f"http://127.0.0.1:{port}"
        env = {**os.environ, "SENTINEL_UPSTREAM_DIALECT": "openai", "SENTINEL_ADMIN_TOKEN": TOKEN}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "entropy_sentinel", "serve", "--config", str(config), "--upstream", up.url,
            "--port", str(port), "--store", "", env=env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        log = asyncio.create_task(proc.stderr.read())  # read all along: a full pipe would stall the proxy
        try:
            async with aiohttp.ClientSession() as session:
                await wait_serve_ready(session, root, proc)

                async def alpha_by(artifact: Path) -> None:
                    rid, _, p = await ask(session, root, "alpha", headers=AUTH)
                    record = await get(session, f"{root}/sentinel/v1/requests/{rid}", headers=AUTH)
                    assert p == pytest.approx(expected(artifact, record), abs=1e-4)

                async def alpha_sha() -> str:
                    listing = await get(session, root + "/sentinel/v1/estimators", headers=AUTH)
                    return listing["estimators"][0]["sha256"]

                await alpha_by(a)
                write_config(config, {"alpha": str(b), "gamma": "none"})
                proc.send_signal(signal.SIGHUP)
                for _ in range(100):
                    if await alpha_sha() == sha(b):
                        break
                    await asyncio.sleep(0.05)
                assert await alpha_sha() == sha(b)
                await alpha_by(b)

                write_config(config, {"alpha": str(tmp_path / "gone.skops")})
                proc.send_signal(signal.SIGHUP)
                await asyncio.sleep(1.0)
                assert proc.returncode is None and await alpha_sha() == sha(b)  # still serving, with the old map
                await alpha_by(b)
                proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text = (await log).decode(errors="replace")
    assert code == 0, text[-3000:]
    assert f"estimators reloaded: alpha -> {b} ({sha(b)[:12]}), gamma -> none (unscored)" in text
    assert "SIGHUP: estimators not reloaded, the previous ones stay: estimator.models['alpha'] = " in text
    assert "gone.skops" in text and TOKEN not in text

