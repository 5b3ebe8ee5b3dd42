
import re
from pathlib import Path

import pytest
from entropy_sentinel.config import (
    OTHER_ENV_VARS,
    ConfigError,
    SentinelConfig,
    config_env_vars,
    load_config,
    resolve,
)

from tests.paths import ROOT

DEFAULT = ROOT / "configs" / "sentinel.yaml"


def test_documented_default_file_equals_the_built_in_defaults():
    assert load_config(DEFAULT, environ={}) == resolve(SentinelConfig())


def test_env_then_flags_override_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 9000\nupstream:\n  url: http://a:1\n")
    cfg = load_config(f, environ={"SENTINEL_SERVER_PORT": "9001", "SENTINEL_UPSTREAM_READ_TIMEOUT_S": "5"})
    assert cfg.server.port == 9001 and cfg.upstream.read_timeout_s == 5.0 and cfg.upstream.url == "http://a:1"
    cfg = load_config(f, overrides={"server": {"port": 9002}}, environ={"SENTINEL_SERVER_PORT": "9001"})
    assert cfg.server.port == 9002


def test_every_bad_key_is_reported_at_once(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 70000\n  bogus: 1\nsignal:\n  top_k: 50\n  score_on_loop_ms: -1\nupstream:\n  url: ftp://x\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={"SENTINEL_LOGGING_LOG_CONTENT": "maybe"})
    text = str(err.value)
    needles = ("server.port", "server.bogus: unknown key", "signal.top_k", "signal.score_on_loop_ms")
    for needle in (*needles, "upstream.url", "log_content"):
        assert needle in text


def test_the_removed_log_content_key_is_refused_with_the_reason(tmp_path):
    # the proxy never logs content: an old config that still sets the switch learns why it is gone
    f = tmp_path / "old.yaml"
    f.write_text("logging:\n  level: INFO\n  log_content: false\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    assert "logging.log_content: this key was removed: the proxy never logs prompts or completions" in str(err.value)
    with pytest.raises(ConfigError, match="log_content: this key was removed"):
        load_config(environ={"SENTINEL_LOGGING_LOG_CONTENT": "true"})
    assert not hasattr(SentinelConfig().logging, "log_content")


def test_a_mistyped_env_section_is_reported_with_the_name_it_meant(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  bogus: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={"SENTINEL_UPSTREM_URL": "http://vllm:8000", "SENTINEL_SERVER": "x"})
    text = str(err.value)
    # reported together with the file's own bad keys, each on its line
    assert "server.bogus: unknown key" in text
    assert "env SENTINEL_UPSTREM_URL: not a configuration variable (did you mean SENTINEL_UPSTREAM_URL?" in text
    assert "env SENTINEL_SERVER: not a configuration variable" in text
    assert "upstream" in text.split("SENTINEL_SERVER:")[1]  # the known sections are listed
    # an unknown key inside a known section is reported too
    with pytest.raises(ConfigError, match="upstream.urll: unknown key"):
        load_config(environ={"SENTINEL_UPSTREAM_URLL": "http://x:1"})


def test_sentinel_variables_read_elsewhere_and_other_variables_are_left_alone():
    environ = dict.fromkeys(OTHER_ENV_VARS, "1") | {"SENTINEL": "x", "PATH": "/bin", "sentinel_upstrem": "y"}
    assert load_config(environ=environ) == resolve(SentinelConfig())
    # and every configuration key has its variable
    assert "SENTINEL_UPSTREAM_URL" in config_env_vars() and "SENTINEL_STORE_CAPTURE_CONTENT" in config_env_vars()
    assert load_config(environ={"SENTINEL_STORE_CAPTURE_CONTENT": "yes"}).store.capture_content is True


#: SENTINEL_ names in the repository that are not environment variables
_NOT_ENV = {
    "SENTINEL_PREFIX",  # gateway/upstream_http.py: the x-sentinel- header prefix
    "SENTINEL_UPSTREM_URL",  # config.py and configs/sentinel.yaml: the example of a typo that is refused
    "SENTINEL_SERVER_PROT",  # tests/deploy/test_stack.py: typos the deploy checks rely on being refused
    "SENTINEL_SERVR_PORT",
}


def test_every_sentinel_variable_the_repository_reads_is_a_key_or_allowed():
    """A variable some script or test reads must be in OTHER_ENV_VARS, or `serve` (which inherits
    the environment) would refuse to start wherever it is set."""
    seen: dict[str, str] = {}
    folders = ("proxy", "scripts", "tests", "bench", "deploy", ".ci", "configs", "docs")
    files = [ROOT / "README.md", *(p for d in folders for p in (ROOT / d).rglob("*") if p.is_file())]
    for path in files:
        if path.suffix not in (".py", ".sh", ".md", ".yaml", ".yml", ".toml", "") or path == Path(__file__):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for name in re.findall(r"\bSENTINEL_[A-Z0-9_]*[A-Z0-9]\b", text):
            seen.setdefault(name, str(path.relative_to(ROOT)))
    assert "SENTINEL_BENCHMARK_CACHE" in seen and "SENTINEL_UPSTREAM_URL" in seen  # the scan finds them
    known = set(config_env_vars()) | OTHER_ENV_VARS | _NOT_ENV
    unknown = {name: where for name, where in seen.items() if name not in known}
    assert not unknown, f"add these to config.OTHER_ENV_VARS (or fix the name): {unknown}"
