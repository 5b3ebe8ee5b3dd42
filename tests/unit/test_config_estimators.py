"""The estimator section: ``estimator.models`` (glob -> artifact, in order), ``estimator.path`` (the
one-estimator shorthand, and ``serve --estimator``), and the section re-read alone on reload."""

from __future__ import annotations

import pytest
from entropy_sentinel import cli
from entropy_sentinel.config import ConfigError, estimator_map, load_config, load_estimator_config


def test_the_default_maps_gemma_3_270m_to_the_builtin_estimator_only():
    assert estimator_map(load_config(environ={}).estimator) == [("gemma-3-270m*", "builtin")]


def test_models_keep_their_order_from_the_file_and_from_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('estimator:\n  models:\n    "llama-3*-lora-*": none\n    "llama-3*": /m/llama.skops\n'
                 '    "*": builtin\n')
    expected = [("llama-3*-lora-*", "none"), ("llama-3*", "/m/llama.skops"), ("*", "builtin")]
    assert estimator_map(load_config(f, environ={}).estimator) == expected
    env = {"SENTINEL_ESTIMATOR_MODELS": '{"qwen*": /m/qwen.skops, "gemma-3-270m*": builtin}'}
    assert estimator_map(load_config(f, environ=env).estimator) == [("qwen*", "/m/qwen.skops"),
                                                                    ("gemma-3-270m*", "builtin")]


def test_path_is_one_estimator_for_every_model_and_none_turns_scoring_off(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('estimator:\n  models: {"llama*": /m/llama.skops}\n  path: /m/any.skops\n')
    assert estimator_map(load_config(f, environ={}).estimator) == [("*", "/m/any.skops")]  # path wins
    for flag, expected in (("none", []), ("builtin", [("*", "builtin")])):
        overrides = cli._serve_overrides(cli.build_parser().parse_args(["serve", "--estimator", flag]))
        assert estimator_map(load_config(f, overrides, environ={}).estimator) == expected


def test_an_empty_glob_or_artifact_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('estimator:\n  models: {"": builtin, "m": ""}\n')
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    assert str(err.value).count("estimator.models") == 2


def test_the_reload_reads_the_estimator_section_alone_with_env_and_flags_on_top(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('server:\n  port: 70000\nnot_a_section: 1\nestimator:\n  models: {"a*": /m/a.skops}\n')
    assert estimator_map(load_estimator_config(f, environ={})) == [("a*", "/m/a.skops")]  # the rest not checked
    env = {"SENTINEL_ESTIMATOR_MODELS": '{"b": /m/b.skops}', "SENTINEL_SERVER_PORT": "nope"}
    assert estimator_map(load_estimator_config(f, environ=env)) == [("b", "/m/b.skops")]
    assert estimator_map(load_estimator_config(f, {"estimator": {"path": "none"}}, environ=env)) == []
    f.write_text('estimator:\n  model: {"a*": /m/a.skops}\n')
    with pytest.raises(ConfigError, match="estimator.model: unknown key"):
        load_estimator_config(f, environ={})
    f.write_text("estimator: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_estimator_config(f, environ={})
