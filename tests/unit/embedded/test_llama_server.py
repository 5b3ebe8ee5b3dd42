"""The embedded llama-server's command line: what ``serve --upstream local`` asks of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from entropy_sentinel.config import ConfigError, LocalUpstreamConfig, load_config
from entropy_sentinel.embedded import LocalLlamaServer


def _flag(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} given {argv.count(name)} times: {argv}"
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("threads_http", "max_connections", "expected"), [(0, 256, "256"), (0, 40, "40"), (8, 40, "8")]
)
def test_every_pooled_connection_gets_an_http_thread_unless_configured(threads_http, max_connections, expected):
    """llama-server's own default (slots + 2 threads) left bursts waiting ~5 s for a thread
    (bench/embedded_bursts.py); ``serve`` gives it one thread per connection the proxy may open."""
    server = LocalLlamaServer(LocalUpstreamConfig(threads_http=threads_http), max_connections)
    argv = server.command(Path("/bin/llama-server"), Path("/models/gemma.gguf"))
    assert _flag(argv, "--threads-http") == expected
    assert _flag(argv, "-np") == "4"  # generation concurrency stays the slots'


def test_a_negative_thread_count_is_refused():
    with pytest.raises(ConfigError, match="local.threads_http"):
        load_config(overrides={"local": {"threads_http": -1}}, environ={})
