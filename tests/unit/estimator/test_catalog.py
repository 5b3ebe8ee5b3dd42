"""estimator/catalog.py: the estimator map (glob -> artifact) loaded once, matched in order, immutable,
reloaded whole from its source or refused with the reason."""

from __future__ import annotations

import hashlib

import pytest
from entropy_sentinel.config import ConfigError
from entropy_sentinel.estimator.artifact import save_artifact
from entropy_sentinel.estimator.catalog import EstimatorCatalog, sample_features
from entropy_sentinel.estimator.registry import make_estimator
from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, ArtifactScorer
from entropy_sentinel.types import EstimatorLoadError, ScorerCatalog

from tests.tiny_estimators import smuggling_artifact, two_artifacts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return two_artifacts(tmp_path_factory.mktemp("artifacts"))


def test_first_matching_glob_in_order_case_sensitive_and_none_leaves_a_model_unscored(artifacts):
    a, b = artifacts
    catalog = EstimatorCatalog.load([
        ("llama-3*-lora-*", "none"), ("llama-3*", str(a)), ("qwen?", str(b)), ("[xy]-model", str(b)),
    ])
    assert isinstance(catalog, ScorerCatalog) and len(catalog) == 4
    by_a, by_b = catalog.scorer_for("llama-3.1-8b"), catalog.scorer_for("qwen3")
    assert by_a.metadata["model"] == "alpha" and by_b.metadata["model"] == "beta"
    assert catalog.scorer_for("y-model") is by_b  # one file, one scorer, whatever globs name it
    assert catalog.scorer_for("llama-3.1-8b-lora-sql") is None  # an earlier glob says none: not llama-3*'s
    assert catalog.scorer_for("Llama-3.1-8b") is None  # case-sensitive
    assert catalog.scorer_for("qwen3-32b") is None  # ? is one character, and the glob spans the whole id
    assert catalog.scorer_for(None) is None and catalog.scorer_for("") is None
    assert catalog.scorers() == (by_a, by_b)
    assert EstimatorCatalog.load([("*", str(a))]).scorer_for(None) is not None  # only * takes a missing model


def test_describe_names_each_glob_with_its_file_sha256_and_fitted_model(artifacts):
    a, _ = artifacts
    catalog = EstimatorCatalog.load([("gemma-3-270m*", "builtin"), ("alpha", str(a)), ("gamma", "none")])
    builtin, alpha, gamma = catalog.describe()
    assert builtin["path"] == str(BUILTIN_ARTIFACT) and builtin["model"] == ArtifactScorer.load(BUILTIN_ARTIFACT).model
    assert alpha == {
        "glob": "alpha", "artifact": str(a), "path": str(a), "sha256": hashlib.sha256(a.read_bytes()).hexdigest(),
        "model": "alpha", "estimator": "LogisticEstimator", "scoring": True,
    }
    assert gamma["scoring"] is False and gamma["sha256"] is None and gamma["path"] is None
    # the scorer scores: the same numbers as the artifact loaded on its own
    assert catalog.scorer_for("alpha")([sample_features()]) == ArtifactScorer.load(a)([sample_features()])


def test_a_bad_artifact_is_refused_naming_the_glob_and_why(artifacts, tmp_path):
    a, _ = artifacts
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"\x80\x04 a pickle, say")
    foreign = save_artifact(  # loads, but scores a statistic the proxy never computes
        tmp_path / "foreign.skops",
        make_estimator("logistic", features=("surprise",)).fit([[0.1], [0.9], [0.2], [0.8]], [1, 0, 1, 0]),
        {"features": ["surprise"], "entropy_variant": "topk", "model": "m"},
    )
    cases = [
        (tmp_path / "missing.skops", "no such file"),
        (tmp_path, "is a directory"),
        (junk, "not a skops file"),
        (smuggling_artifact(tmp_path / "evil.skops"), "tests.tiny_estimators.Smuggled"),
        (foreign, "fails to score a response (KeyError: 'surprise')"),
    ]
    for path, why in cases:
        with pytest.raises(EstimatorLoadError) as err:
            EstimatorCatalog.load([("alpha", str(a)), ("beta*", str(path))])
        assert err.value.kind == "artifact"
        assert str(err.value).startswith(f"estimator.models['beta*'] = '{path}'") and why in str(err.value)


def test_reloaded_is_a_new_catalog_from_the_source_and_a_failure_leaves_the_old_one(artifacts):
    a, b = artifacts
    mapping = [("m", str(a))]
    catalog = EstimatorCatalog.from_source(lambda: mapping)
    old = catalog.scorer_for("m")
    mapping = [("m", str(b)), ("n", str(a))]
    fresh = catalog.reloaded()
    assert fresh is not catalog and fresh.scorer_for("m").metadata["model"] == "beta"
    assert catalog.scorer_for("m") is old and len(catalog) == 1  # immutable
    assert fresh.scorer_for("n").metadata["model"] == "alpha"

    def broken():
        raise ConfigError("invalid estimator configuration:\n  estimator.bogus: unknown key")

    with pytest.raises(EstimatorLoadError, match="estimator.bogus") as err:
        EstimatorCatalog.load(mapping, source=broken).reloaded()
    assert err.value.kind == "config"
    with pytest.raises(EstimatorLoadError) as err:
        EstimatorCatalog.load(mapping).reloaded()
    assert err.value.kind == "unavailable"


def test_check_models_warns_of_models_without_an_estimator_or_fitted_on_another(artifacts):
    a, _ = artifacts
    catalog = EstimatorCatalog.load([("alpha*", str(a)), ("gamma", "none")])
    warnings = catalog.check_models(["alpha", "alpha-lora", "gamma", "delta"])
    assert len(warnings) == 3
    assert "serves alpha-lora" in warnings[0] and "trained on model 'alpha'" in warnings[0]
    assert "'gamma'" in warnings[1] and "no_estimator_for_model" in warnings[1]
    assert "'delta'" in warnings[2] and "no_estimator_for_model" in warnings[2]
    assert catalog.check_models(["alpha"]) == []
