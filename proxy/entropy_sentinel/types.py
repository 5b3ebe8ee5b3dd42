"""The shared vocabulary at the bottom of the package: what the layers above pass to each other.

Nothing here imports anything of ours; every other package may import it.

* :data:`FeaturesByVariant` — one response's trajectory statistics under every entropy variant.
* :class:`Scorer` — what turns those statistics into P(correct) (the runtime estimator
  implements it: :class:`entropy_sentinel.estimator.scorer.ArtifactScorer`).
* :class:`ScorerCatalog` — which :class:`Scorer` scores which model (``estimator.models``; the
  runtime implements it: :class:`entropy_sentinel.estimator.catalog.EstimatorCatalog`), and
  :class:`EstimatorLoadError`, why a catalog could not be (re)loaded.
* :class:`UnscoredReason` — why a request was relayed without a score.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["EstimatorLoadError", "FeaturesByVariant", "Scorer", "ScorerCatalog", "UnscoredReason"]

#: entropy variant -> statistic name -> value, for one choice of one response
FeaturesByVariant = Mapping[str, Mapping[str, float]]


@runtime_checkable
class Scorer(Protocol):
    """Scores the choices of one response.

    ``__call__`` receives, per choice, the statistics under every entropy variant and returns one
    P(correct) in [0, 1] per choice, in order. It runs in the scoring worker's thread, or on the event
    loop once it has been measured to take no longer than ``signal.score_on_loop_ms`` for the response
    (``gateway/scoring.py``): it must be thread-agnostic, should not wait on I/O (one that does is kept
    to the thread once seen), and must not keep references to its argument. ``metadata`` describes
    the estimator (at least ``validation`` when the interval's spread is to come from it);
    ``check_model`` returns a warning when the upstream serves models the estimator was not fitted
    on, else None.
    """

    metadata: Mapping[str, Any]

    def __call__(self, features_by_variant: Sequence[FeaturesByVariant], /) -> list[float]: ...

    def check_model(self, upstream_models: Sequence[str], /) -> str | None: ...


@runtime_checkable
class ScorerCatalog(Protocol):
    """Which estimator scores which model: a response is scored by ``scorer_for(its model)``, or not
    at all when that is None (never by another model's estimator).

    Immutable: a reload builds a new catalog (:meth:`reloaded`) and the gateway swaps its reference,
    so a request keeps the catalog it started with. ``len()`` counts the configured model patterns;
    an empty catalog means no scoring is configured at all (features only). ``scorers`` lists each
    loaded scorer once, in configuration order (the first one's metadata gives the slices' interval
    spread); ``describe`` one JSON-able dict per pattern (``glob``, ``artifact``, ``sha256``,
    ``model``, ``estimator``); ``check_models`` warnings about the upstream's models (one without an
    estimator, one its estimator was not fitted on).
    """

    def __len__(self) -> int: ...

    def scorer_for(self, model: str | None, /) -> Scorer | None: ...

    def scorers(self) -> Sequence[Scorer]: ...

    def describe(self) -> list[dict[str, Any]]: ...

    def check_models(self, upstream_models: Sequence[str], /) -> list[str]: ...

    def reloaded(self) -> ScorerCatalog:
        """A new catalog from the same source (the configuration re-read, the artifacts loaded again);
        raises :class:`EstimatorLoadError`, leaving this one as it is."""
        ...


class EstimatorLoadError(ValueError):
    """An estimator map or artifact that cannot be loaded; the message is meant for the operator.

    ``kind``: ``"config"`` (the estimator section of the configuration is invalid or unreadable),
    ``"artifact"`` (a file is missing, not a skops artifact, holds a type outside the allow-list, or
    fails to score), ``"unavailable"`` (this catalog has no source to reload from).
    """

    def __init__(self, message: str, kind: str = "artifact") -> None:
        super().__init__(message)
        self.kind = kind


class UnscoredReason(enum.StrEnum):
    """Why a request carries no P(correct). The values are what records and metric labels show."""

    #: refused by the proxy itself (bad slice header or body): counted in metrics, not in slices
    INVALID_REQUEST = "invalid_request"
    #: the client went away before the response was complete
    CLIENT_DISCONNECTED = "client_disconnected"
    #: sampling (``monitor.sample_rate``) left this request uninstrumented
    NOT_SAMPLED = "not_sampled"
    #: the body's logprob fields are not ones the proxy can force safely; relayed untouched
    LOGPROB_FIELDS_NOT_UNDERSTOOD = "logprob_fields_not_understood"
    #: the request asks for more choices (``n``) than ``signal.max_choices``: forwarded unforced; or the
    #: upstream sent more choice indexes than that: relayed, the extra ones not tracked
    TOO_MANY_CHOICES = "too_many_choices"
    #: the response carried no token with a finite logprob to score from (logprobs ignored, empty,
    #: NaN, -inf or vLLM's -9999 everywhere)
    NO_LOGPROBS = "no_logprobs"
    #: a logprobs block not of the OpenAI shapes (a string logprob, a candidate without one, ...):
    #: the answer was relayed as the upstream sent it
    MALFORMED_LOGPROBS = "malformed_logprobs"
    #: no estimator is configured for the response's model (``estimator.models``): features recorded,
    #: no P(correct) (another model's estimator would be miscalibrated)
    NO_ESTIMATOR_FOR_MODEL = "no_estimator_for_model"
    #: the upstream refused forced logprobs; the request was retried as the client sent it
    UPSTREAM_REFUSED_LOGPROBS = "upstream_refused_logprobs"
    #: the proxy failed on this request (a bug): a 500 when nothing was relayed yet, else the
    #: upstream's answer relayed as it came
    INTERNAL_ERROR = "internal_error"
    UPSTREAM_STATUS = "upstream_status"
    UPSTREAM_BODY_NOT_JSON = "upstream_body_not_json"
    UPSTREAM_STREAM_ERROR = "upstream_stream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_DISCONNECTED = "upstream_disconnected"
    UPSTREAM_ERROR = "upstream_error"
    #: one streamed event was larger than ``upstream.max_event_mb``: the stream was ended with an error event
    UPSTREAM_EVENT_TOO_LARGE = "upstream_event_too_large"

    @property
    def upstream_failure(self) -> bool:
        """The upstream failed (counted in ``sentinel_upstream_errors{kind}``)."""
        return self.value.startswith("upstream_")

    @property
    def counts_as_traffic(self) -> bool:
        """Whether the request reached the upstream and so counts in its slice's request rate."""
        return self is not UnscoredReason.INVALID_REQUEST
