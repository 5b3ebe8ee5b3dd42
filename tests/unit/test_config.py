
import pytest
from entropy_sentinel.config import ConfigError, SentinelConfig, load_config, resolve

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
    f.write_text("server:\n  port: 70000\n  bogus: 1\nsignal:\n  top_k: 50\nupstream:\n  url: ftp://x\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={"SENTINEL_LOGGING_LOG_CONTENT": "maybe"})
    text = str(err.value)
    for needle in ("server.port", "server.bogus: unknown key", "signal.top_k", "upstream.url", "log_content"):
        assert needle in text
