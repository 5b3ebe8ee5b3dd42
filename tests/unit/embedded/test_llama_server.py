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


def test_build_progress_in_a_log_is_a_line_per_tenth_not_one_redrawn_line(tmp_path, capsys):
    """cmake prints hundreds of ``[ NN%]`` lines; on a terminal one line is redrawn, but in a log (CI,
    ``> file``) the carriage returns made one line of hundreds of padded entries. Not a TTY: a line
    each time the build passes another tenth, and everything still in the build log."""
    import sys

    from entropy_sentinel.embedded.llama_server import _run

    lines = [f"[{p:3d}%] Building CXX object file{p}.o" for p in range(0, 101, 2)] + ["a line of no progress"]
    script = "import sys\nfor l in sys.argv[1:]: print(l)\n"
    log = tmp_path / "build.log"
    _run([sys.executable, "-c", script, *lines], log, "building something")
    err = capsys.readouterr().err
    assert "\r" not in err
    shown = [line for line in err.splitlines() if "%]" in line]
    assert [line.split("[", 2)[2][:4] for line in shown] == [f"{p:3d}%" for p in range(0, 101, 10)]
    assert err.splitlines()[-1].startswith("[entropy-sentinel]   done in")
    assert log.read_text().splitlines() == lines  # the log keeps every line


def test_cmake_percent_reads_only_progress_lines():
    from entropy_sentinel.embedded.llama_server import _cmake_percent

    assert _cmake_percent("[ 42%] Building C object x.o") == 42 and _cmake_percent("[100%] Built target") == 100
    assert _cmake_percent("[abc%] odd") is None and _cmake_percent("-- Configuring done") is None


def test_a_failed_build_step_in_a_log_says_where_to_look(tmp_path, capsys):
    import sys

    from entropy_sentinel.embedded.llama_server import _run

    with pytest.raises(RuntimeError, match=r"building something failed \(exit 3\); see .*build.log"):
        _run([sys.executable, "-c", "print('[ 10%] Building x.o'); raise SystemExit(3)"], tmp_path / "build.log",
             "building something")
    err = capsys.readouterr().err.splitlines()
    assert err == ["[entropy-sentinel] building something (log: " + str(tmp_path / "build.log") + ")",
                   "[entropy-sentinel]   [ 10%] Building x.o"]  # no stray blank line: nothing was redrawn
