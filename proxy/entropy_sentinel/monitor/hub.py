"""What happens to a finished request: slice counters, the sinks (Prometheus), the store, feedback."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from entropy_sentinel.monitor.records import RequestRecord
from entropy_sentinel.monitor.sinks import RecordSink
from entropy_sentinel.monitor.slices import BUCKET_S, SliceRegistry, canonical, parse_slice, restore_since
from entropy_sentinel.monitor.store import RecordStore

log = logging.getLogger(__name__)

#: ``store.durability``: ``batched`` commits a record with its batch (a kill loses at most the last
#: ``store.flush_interval_s``); ``strict`` has the gateway wait for the record's commit before the
#: response's last byte (:meth:`Monitor.finish` returns the store's ``flushed()`` Future)
DURABILITY = ("batched", "strict")


class Monitor:
    def __init__(
        self,
        slices: SliceRegistry,
        store: RecordStore | None = None,
        sinks: Sequence[RecordSink] = (),
        api_key_tenants: dict[str, str] | None = None,
        sample_rate: float = 1.0,
        slice_sample_rates: dict[str, float] | None = None,
        capture_content: bool = False,
        rng: random.Random | None = None,
        durability: str = "batched",
    ) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}")
        self.slices = slices
        self.strict = durability == "strict"
        self.sinks = tuple(sinks)
        self.store = store
        self.capture_content = capture_content
        self.sample_rate = sample_rate
        self.slice_sample_rates = dict(slice_sample_rates or {})
        self._rng = rng or random.Random()
        # keys may be configured in clear or as "sha256:<hex>" so the config need not hold secrets
        self._tenants: dict[str, str] = {}
        for key, tenant in (api_key_tenants or {}).items():
            if key.startswith("sha256:"):
                digest = key[len("sha256:") :].lower()
            else:
                digest = hashlib.sha256(key.encode()).hexdigest()
            self._tenants[digest] = tenant

    # -- request start ---------------------------------------------------------------------------
    def slice_of(self, header: str | None, authorization: str | None) -> str:
        """The canonical (and admitted) slice key; raises SliceError on a malformed header."""
        tags = parse_slice(header)
        if self._tenants and authorization and authorization.lower().startswith("bearer "):
            tenant = self._tenants.get(hashlib.sha256(authorization[7:].strip().encode()).hexdigest())
            if tenant is not None:
                tags["tenant"] = tenant  # the configured map wins over any client-sent tenant
        return self.slices.admit(canonical(tags))

    def sampled(self, slice_key: str) -> bool:
        """Whether to force logprobs and score this request (bounds the upstream's extra cost)."""
        rate = self.slice_sample_rates.get(slice_key)
        if rate is None:
            for pair in slice_key.split(","):
                if pair in self.slice_sample_rates:
                    rate = self.slice_sample_rates[pair]
                    break
        rate = self.sample_rate if rate is None else rate
        return rate >= 1.0 or self._rng.random() < rate

    # -- request end -----------------------------------------------------------------------------
    def finish(self, record: RequestRecord) -> Future[bool] | None:
        """Count, sink and store a finished request. Under strict durability, the Future of the
        stored row's commit (the gateway awaits it before the response's last byte); else None."""
        reason = record.unscored_reason
        if reason is None or reason.counts_as_traffic:  # refused before the upstream: no slice traffic
            now = record.started_at
            self.slices.record_request(record.slice, now)
            for p in record.p_correct or ():
                self.slices.record_score(record.slice, p, now)
        for sink in self.sinks:
            try:
                sink.record_finished(record)
            except Exception:  # a sink never hurts the request path
                log.exception("sink %s failed on a finished request", type(sink).__name__)
        if (reason is not None and not reason.counts_as_traffic) or self.store is None:
            return None
        first = sorted(record.features)[0] if record.features else None
        self.store.enqueue(
            {
                "request_id": record.request_id,
                "ts": record.started_at,
                "slice": record.slice,
                "route": record.route,
                "model": record.model,
                "status": record.status,
                "scored": record.scored,
                "p_correct": record.p_correct[0] if record.p_correct else None,
                "p_correct_all": record.p_correct,
                "features": record.features.get(first) if first is not None else None,
                "tokens": sum(record.tokens.values()) if record.tokens else None,
                "latency_s": record.latency_s,
                "prompt": record.prompt if self.capture_content else None,
                "completion": record.completion if self.capture_content else None,
            }
        )
        return self.store.flushed() if self.strict else None

    def label(self, slice_key: str, correct: bool, p: float | None, request_id: str) -> None:
        """A label taken on the in-memory record: counted, and queued to the store behind its row."""
        self.count_label(slice_key, correct, p)
        if self.store is not None:
            self.store.label(request_id, int(correct))

    def count_label(self, slice_key: str, correct: bool, p: float | None) -> None:
        """A label already taken (by the record or by :meth:`RecordStore.try_label`): counters, sinks."""
        self.slices.record_label(slice_key, int(correct), p, time.time())
        for sink in self.sinks:
            try:
                sink.label_received(slice_key, correct, p)
            except Exception:
                log.exception("sink %s failed on a label", type(sink).__name__)

    def replay_store(self, now: float | None = None) -> int:
        """Rebuild the slice counters from the store (after a restart). Returns the requests counted.

        The counters a replay of every row would give, from the store's per-slice sums: lifetime
        totals, and the 5-minute buckets a window can still reach (the last day's; an older bucket
        never counts again, since windows only move forward): aggregate queries, not a row each."""
        if self.store is None:
            return 0
        since = restore_since(time.time() if now is None else now)  # the oldest bucket of a 24 h window now
        return self.slices.restore_all(self.store.bucket_sums(since, BUCKET_S))

    def close(self) -> None:
        """At the app's stop (in a worker thread): every sink that holds resources (``close()``: the
        OpenTelemetry exporter's flush, bounded) and the store (its queue drained)."""
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # the store still closes
                    log.exception("sink %s failed to close", type(sink).__name__)
        if self.store is not None:
            self.store.close()


def feedback_payload(body: Any) -> tuple[str, bool]:
    """Validate ``{"request_id": ..., "correct": true}``; ValueError with a safe message otherwise."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    request_id, correct = body.get("request_id"), body.get("correct")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64 or not request_id.isalnum():
        raise ValueError("request_id must be the X-Sentinel-Request-Id of a response")
    if not isinstance(correct, bool):
        raise ValueError("correct must be true or false")
    return request_id, correct
