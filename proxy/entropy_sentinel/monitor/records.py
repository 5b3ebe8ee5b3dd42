"""Finished-request records, kept in a bounded in-memory window for ``/sentinel/v1/requests/{id}``."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from entropy_sentinel.types import UnscoredReason


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    route: str
    #: canonical slice key ("" untagged, "other" past the live-slice bound)
    slice: str = ""
    started_at: float = field(default_factory=time.time)
    status: int = 0
    stream: bool = False
    model: str | None = None
    #: False when the request was not instrumented (logprobs refused, malformed, upstream error)
    scored: bool = False
    unscored_reason: UnscoredReason | None = None
    #: per choice index: the trajectory statistics
    features: dict[int, dict[str, float]] = field(default_factory=dict)
    #: per choice index: the statistics under every entropy variant (for estimator studies)
    features_by_variant: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    #: fewest candidates any token carried upstream, per choice (20 when top-20 was really forced)
    upstream_top_k: dict[int, int | None] = field(default_factory=dict)
    p_correct: list[float | None] | None = None
    latency_s: float | None = None
    overhead_s: float = 0.0
    label: int | None = None
    #: prompt and completion text, kept only when the operator enabled capture (never serialized)
    prompt: str | None = None
    completion: str | None = None
    #: the model the request named (``model`` is the one the response named), cut to 256 characters
    request_model: str | None = None
    #: the caller's W3C trace context, validated (monitor/trace_context.py): the OpenTelemetry span's
    #: parent; never serialized
    traceparent: str | None = None
    tracestate: str | None = None
    #: the response's ``id`` (cut to 256 characters) and the upstream's own ``usage`` counts, when it
    #: sent them (a stream: only when the client asked for ``stream_options.include_usage``)
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def note_answer(self, response_id: Any, usage: Any) -> None:
        """Keep the first string ``id`` and the last ``usage`` counts an answer (or event) carried;
        anything of another type is ignored."""
        if self.response_id is None and isinstance(response_id, str):
            self.response_id = response_id[:256]
        if isinstance(usage, dict):
            for key, attr in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                    setattr(self, attr, value)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["choices"] = [
            {
                "index": i,
                "tokens": self.tokens.get(i, 0),
                "upstream_top_k": self.upstream_top_k.get(i),
                "features": f,
                "features_by_variant": self.features_by_variant.get(i, {}),
            }
            for i, f in sorted(self.features.items())
        ]
        for key in ("features", "features_by_variant", "tokens", "upstream_top_k", "prompt", "completion",
                    "traceparent", "tracestate"):
            del out[key]
        return out


class RecentRecords:
    """The last ``capacity`` finished records by id (oldest evicted first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, RequestRecord] = OrderedDict()

    def add(self, record: RequestRecord) -> None:
        self._items[record.request_id] = record
        self._items.move_to_end(record.request_id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> RequestRecord | None:
        return self._items.get(request_id)

    def __len__(self) -> int:
        return len(self._items)
