"""``entropy-sentinel serve`` as a user runs it: the embedded upstream, a real client, a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from entropy_sentinel.embedded.llama_server import free_port
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, ArtifactScorer

from tests.harness import get_json

pytestmark = pytest.mark.llama


def _port_open(url: str) -> bool:
    host, port = url.rsplit("/", 1)[-1].split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture
def served(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "entropy_sentinel", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SENTINEL_LOGGING_LEVEL": "DEBUG", "SENTINEL_STORE_PATH": str(tmp_path / "s.db")},
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            get_json(base + "/sentinel/healthz")
            break
        except OSError:
            time.sleep(0.5)
    yield base, proc, log
    if proc.poll() is None:
        proc.terminate()  # a clean stop also stops the embedded llama-server
        proc.wait(timeout=30)


def _llama_server_child(pid: int) -> tuple[list[str], int]:
    """The command line and thread count of ``serve``'s llama-server child (Linux /proc)."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    for child in children:
        argv = (Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0"))
        if Path(argv[0]).name == "llama-server":
            status = Path(f"/proc/{child}/status").read_text()
            return argv, int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    raise AssertionError(f"no llama-server among serve's children {children}")


def test_serve_local_end_to_end_and_clean_shutdown(served):
    base, proc, log = served
    health = get_json(base + "/sentinel/healthz")
    assert health["status"] == "ok" and health["upstream_dialect"] == "llamacpp"
    upstream = health["upstream"]
    assert upstream.startswith("http://127.0.0.1:") and _port_open(upstream)
    if sys.platform == "linux":  # an HTTP thread for every connection the proxy may open (default 256)
        argv, threads = _llama_server_child(proc.pid)
        assert argv[argv.index("--threads-http") + 1] == "256" and threads >= 256

    secret_prompt, secret_key = "Zebra-quokka 7781 plus 2 is", "sk-never-log-this-4242"
    client = openai.OpenAI(base_url=base + "/v1", api_key=secret_key, max_retries=0)
    raw = client.completions.with_raw_response.create(
        model="gemma-3-270m", prompt=secret_prompt, max_tokens=8, temperature=0
    )
    completion = raw.parse()
    assert completion.choices[0].logprobs is None  # asked for none, got none
    record = get_json(f"{base}/sentinel/v1/requests/{raw.headers['X-Sentinel-Request-Id']}")
    (choice,) = record["choices"]
    assert record["scored"] and choice["upstream_top_k"] == 20
    assert choice["tokens"] == completion.usage.completion_tokens
    assert choice["features"]["n_tokens"] == choice["tokens"] and choice["features"]["max"] > 0
    # out of the box, the shipped estimator (docs/results.md's winner) scores every response
    shipped = ArtifactScorer.load(BUILTIN_ARTIFACT)
    expected = shipped([choice["features_by_variant"]])[0]
    assert float(raw.headers["X-Sentinel-P-Correct"]) == pytest.approx(expected, abs=5e-5)
    assert 0.0 < expected < 1.0

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not _port_open(upstream), "the embedded llama-server must stop with the proxy"
    text = log.read_text()
    assert record["request_id"] in text  # the request was logged (at DEBUG even)...
    assert secret_prompt not in text and secret_key not in text  # ...but never its prompt or key


def test_a_killed_proxy_leaves_no_orphaned_llama_server(served):
    base, proc, _ = served
    upstream = get_json(base + "/sentinel/healthz")["upstream"]
    assert _port_open(upstream)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the child must go by itself
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while _port_open(upstream) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(upstream)


def test_unknown_request_id_is_404_in_openai_shape(served):
    base, _, _ = served
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base + "/sentinel/v1/requests/" + "0" * 32, timeout=5)
    assert err.value.code == 404
    assert json.loads(err.value.read())["error"]["code"] == "request_not_found"
