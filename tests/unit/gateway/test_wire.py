"""Wire rewriting on real captured responses (scripts/capture_fixtures.py, llama.cpp and vLLM).

For each captured case the upstream answered the same request three or four ways. Rewriting the
forced top-20 answer for a client that asked for nothing / top-2 / logprobs without top-n must
give exactly what the upstream itself answered to that client's request (ids and timings aside).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import orjson
import pytest
from entropy_sentinel.gateway.sse import DONE, SSEDecoder, parse_event
from entropy_sentinel.gateway.wire import DIALECTS, ChoiceExtractor, detect_dialect, plan_logprobs

from tests.harness import assert_same
from tests.paths import FIXTURES

VOLATILE = {"id", "created", "system_fingerprint", "timings"}
EXPECTED_DIALECT = {"llama": "llamacpp", "vllm": "vllm"}
# llama.cpp's logprobs move by ~1e-4 with the number of candidates asked (float32 sums in another
# order; see test_differential). vLLM's are identical except a few 1e-6 of noise between two
# sampled n=2 requests (CPU kernels batching two sequences).
LOGPROB_TOL = {"llama": 1e-3, "vllm": 1e-4}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def cases() -> list[tuple[Path, str]]:
    out = []
    for forced in sorted(FIXTURES.glob("*/*.forced.json")):
        stem = forced.name[: -len(".forced.json")]
        for client in ("plain", "top2", "top0"):
            other = forced.with_name(f"{stem}.{client}.json")
            if other.exists() and load(forced)["status"] == 200 and load(other)["status"] == 200:
                out.append((forced, client))
    return out


def normalize(obj):
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k not in VOLATILE}
    return obj


def events(body: str) -> list:
    decoder = SSEDecoder()
    out = []
    for raw in decoder.feed(body.encode()):
        data = parse_event(raw).data
        if data is not None:
            out.append("[DONE]" if data == DONE else orjson.loads(data))
    assert decoder.pending == b""
    return out


def endpoint_of(fixture: dict) -> str:
    return "chat" if fixture["endpoint"] == "chat/completions" else "completions"


def dialect_of(path: Path):
    return DIALECTS[detect_dialect(load(path.parent / "models.json"))]


def test_fixtures_were_captured():
    servers = {p.parent.name for p, _ in cases()}
    assert {"llama", "vllm"} <= servers, "run scripts/capture_fixtures.py against llama-server and vLLM"


@pytest.mark.parametrize("server", sorted(EXPECTED_DIALECT))
def test_dialect_is_detected_from_the_real_models_listing(server):
    assert detect_dialect(load(FIXTURES / server / "models.json")) == EXPECTED_DIALECT[server]


def _case_id(v: object) -> str:
    return v.parent.name + "/" + v.stem if isinstance(v, Path) else str(v)


@pytest.mark.parametrize("forced_path, client", cases(), ids=_case_id)
def test_rewritten_forced_response_equals_the_direct_one(forced_path: Path, client: str):
    forced = load(forced_path)
    direct = load(forced_path.with_name(forced_path.name.replace(".forced.", f".{client}.")))
    body = copy.deepcopy(direct["request"])
    plan = plan_logprobs(body, endpoint_of(direct), dialect=dialect_of(forced_path))
    assert plan is not None and plan.forced_k == 20
    # the body we would send upstream is the one that was captured as "forced"
    assert body == forced["request"]
    extractor = ChoiceExtractor(plan)
    if plan.stream:
        got = []
        for event in events(forced["body"]):
            if event != "[DONE]":
                extractor.process_body(event)
            got.append(normalize(event))
        want = [normalize(e) for e in events(direct["body"])]
    else:
        got_obj = json.loads(forced["body"])
        extractor.process_body(got_obj)
        got, want = normalize(got_obj), normalize(json.loads(direct["body"]))
    assert_same(got, want, LOGPROB_TOL[forced_path.parent.name])
    assert extractor.trajectories and all(t.min_candidates == 20 for t in extractor.trajectories.values())


def _chat_shape_first_token_entropy(choice: dict) -> float:
    tops = choice["logprobs"]["content"][0]["top_logprobs"]
    return -sum(math.exp(t["logprob"]) * t["logprob"] for t in tops)


FORCED = sorted(FIXTURES.glob("*/chat.forced.json")) + sorted(FIXTURES.glob("*/completions.forced.json"))


@pytest.mark.parametrize("forced_path", FORCED)
def test_entropy_of_real_tokens_matches_a_hand_computation(forced_path: Path):
    fixture = load(forced_path)
    obj = json.loads(fixture["body"])
    plan = plan_logprobs(copy.deepcopy(fixture["request"]), endpoint_of(fixture), dialect=dialect_of(forced_path))
    extractor = ChoiceExtractor(plan)
    extractor.process_body(obj)
    choice = json.loads(fixture["body"])["choices"][0]
    lp = choice["logprobs"]
    if "content" in lp:
        expected = _chat_shape_first_token_entropy(choice)
        n_tokens = len(lp["content"])
    else:  # legacy completions: {token: logprob} dicts, possibly with the sampled token as a 21st entry
        top20 = sorted(lp["top_logprobs"][0].values(), reverse=True)[:20]
        expected = -sum(math.exp(v) * v for v in top20)
        n_tokens = len(lp["tokens"])
    traj = extractor.trajectories[0]
    assert len(traj) == n_tokens
    assert traj.entropy[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert 0.0 < traj.mass[0] <= 1.0
    features = traj.features()
    assert features["n_tokens"] == n_tokens
    assert features["max"] >= features["q90"] >= features["q50"] >= features["q10"] >= 0.0
