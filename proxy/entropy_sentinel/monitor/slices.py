"""Slice tags and per-slice counters.

A slice is a set of tags from the ``X-Sentinel-Slice: domain=algebra,tenant=acme`` request header
(at most 4 pairs, keys and values ``[A-Za-z0-9_.:-]{1,64}``), canonically written with keys sorted.
A configured API-key -> tenant map overrides any client-sent ``tenant``. At most ``max_slices`` live
slices are tracked; traffic of any further slice is counted under ``other``, so hostile or careless
tags can grow neither memory nor metric series.

Counters are additive sufficient statistics (n, Σp, Σp², and for labels m, Σy, Σr, Σr² with
r = y − p) kept lifetime and in 5-minute buckets covering the last day, so windows are sums -- and a
restart restores them from the store's per-bucket sums (:meth:`SliceRegistry.restore`) instead of
replaying every row.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from entropy_sentinel.monitor.store import BucketSums
from entropy_sentinel.stats.intervals import Tau, label_free, observed, recalibrated

OTHER = "other"
MAX_PAIRS = 4
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

BUCKET_S = 300
BUCKETS = 288  # one day of 5-minute buckets
WINDOWS = {"1h": 3600, "24h": 86400}
# columns of a counter row
N, SUM_P, SUM_P2, M, SUM_Y, SUM_R, SUM_R2, REQUESTS = range(8)
_COLS = 8


def restore_since(now: float) -> float:
    """The start of the oldest bucket a 24 h window can still reach at ``now``: a store's sums from then
    on are restored per bucket, everything older into lifetime only (windows only move forward)."""
    return float((int(now // BUCKET_S) - BUCKETS + 1) * BUCKET_S)


class SliceError(ValueError):
    """A malformed ``X-Sentinel-Slice`` header; the message is safe to send back (no echo)."""


def parse_slice(header: str | None) -> dict[str, str]:
    """``"domain=algebra,tenant=acme"`` -> ``{"domain": "algebra", "tenant": "acme"}``."""
    if header is None or not header.strip():
        return {}
    pairs = [p.strip() for p in header.split(",")]
    if len(pairs) > MAX_PAIRS:
        raise SliceError(f"X-Sentinel-Slice carries at most {MAX_PAIRS} key=value pairs")
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _TOKEN.match(key) or not _TOKEN.match(value):
            raise SliceError("X-Sentinel-Slice pairs must be key=value with [A-Za-z0-9_.:-]{1,64} on each side")
        if key in tags:
            raise SliceError("X-Sentinel-Slice repeats a key")
        tags[key] = value
    return tags


def canonical(tags: Mapping[str, str]) -> str:
    """Keys sorted, ``k=v,k=v``; the empty slice is ``""``."""
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags))


def tags_of(key: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in key.split(",")) if key and key != OTHER else {}


@dataclass
class SliceCounter:
    """Lifetime totals and a ring of 5-minute buckets for one slice."""

    lifetime: np.ndarray = field(default_factory=lambda: np.zeros(_COLS))
    ring: np.ndarray = field(default_factory=lambda: np.zeros((BUCKETS, _COLS)))
    ring_epoch: np.ndarray = field(default_factory=lambda: np.full(BUCKETS, -1, dtype=np.int64))

    def _row(self, now: float) -> np.ndarray | None:
        """The bucket of ``now``; None when that slot already holds a newer day (the event is too
        old for the ring: it must not wipe newer counts, and lifetime still takes it)."""
        epoch = int(now // BUCKET_S)
        i = epoch % BUCKETS
        if self.ring_epoch[i] > epoch:
            return None
        if self.ring_epoch[i] != epoch:
            self.ring[i] = 0.0
            self.ring_epoch[i] = epoch
        return self.ring[i]

    def add(self, values: dict[int, float], now: float) -> None:
        row = self._row(now)
        for col, value in values.items():
            self.lifetime[col] += value
            if row is not None:
                row[col] += value

    def window(self, seconds: float | None, now: float) -> np.ndarray:
        if seconds is None:
            return self.lifetime
        newest = int(now // BUCKET_S)
        oldest = newest - int(seconds // BUCKET_S) + 1
        live = (self.ring_epoch >= oldest) & (self.ring_epoch <= newest)
        return self.ring[live].sum(axis=0)


class SliceRegistry:
    """Bounded set of live slices and their counters."""

    def __init__(self, max_slices: int = 1000, level: float = 0.9, tau: Tau = 0.0, min_labels: int = 30) -> None:
        self.max_slices = max_slices
        self.level = level
        self.tau = tau
        self.min_labels = min_labels
        self.counters: dict[str, SliceCounter] = {}

    def admit(self, key: str) -> str:
        """The slice key to count under: itself while there is room, else ``other``."""
        if key in self.counters or key == OTHER:
            return key
        if len(self.counters) >= self.max_slices:
            return OTHER
        self.counters[key] = SliceCounter()
        return key

    def _counter(self, key: str) -> SliceCounter:
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = SliceCounter()
        return counter

    def record_request(self, key: str, now: float | None = None) -> None:
        self._counter(key).add({REQUESTS: 1.0}, time.time() if now is None else now)

    def record_score(self, key: str, p: float, now: float | None = None) -> None:
        self._counter(key).add({N: 1.0, SUM_P: p, SUM_P2: p * p}, time.time() if now is None else now)

    def record_label(self, key: str, y: int, p: float | None, now: float | None = None) -> None:
        values = {M: 1.0, SUM_Y: float(y)}
        if p is not None:
            r = y - p
            values.update({SUM_R: r, SUM_R2: r * r})
        self._counter(key).add(values, time.time() if now is None else now)

    def replay(
        self, key: str, ts: float, scores: list[float], p: float | None, label: int | None, label_ts: float | None
    ) -> None:
        """One stored request, counted as the live path counted it: the request and every choice's
        score at ``ts``, the label when it arrived (never before its request)."""
        self.record_request(key, ts)
        for score in scores:
            self.record_score(key, score, ts)
        if label is not None:
            self.record_label(key, int(label), p, max(label_ts if label_ts is not None else ts, ts))

    def restore(self, key: str, sums: BucketSums) -> None:
        """A store's sums for one bucket (:meth:`RecordStore.bucket_sums`), added as replaying its rows
        would: into lifetime, and into the ring when the bucket is one (``epoch`` None: lifetime only)."""
        values = {
            REQUESTS: float(sums.requests), N: float(sums.scores), SUM_P: sums.sum_p, SUM_P2: sums.sum_p2,
            M: float(sums.labels), SUM_Y: float(sums.sum_y), SUM_R: sums.sum_r, SUM_R2: sums.sum_r2,
        }
        counter = self._counter(key)
        if sums.epoch is None:
            for col, value in values.items():
                counter.lifetime[col] += value
        else:
            counter.add(values, float(sums.epoch * BUCKET_S))

    def restore_all(self, sums: Iterable[BucketSums]) -> int:
        """Every sum of :meth:`RecordStore.bucket_sums`, each slice admitted as a replay of the rows
        would admit it (``other`` past ``max_slices``); returns the requests they count."""
        n = 0
        for bucket in sums:
            self.restore(self.admit(bucket.slice), bucket)
            n += bucket.requests
        return n

    def empty_copy(self) -> SliceRegistry:
        """A registry with these settings (bounds, level, tau, min_labels) and no counters."""
        return SliceRegistry(self.max_slices, self.level, self.tau, self.min_labels)

    def summary(self, key: str, now: float | None = None) -> dict:
        """The slice's estimates, lifetime and per window, as ``/sentinel/v1/slices`` shows them."""
        now = time.time() if now is None else now
        counter = self.counters[key]
        windows = {}
        for name, seconds in (("lifetime", None), *WINDOWS.items()):
            c = counter.window(seconds, now).tolist()  # plain floats for JSON
            est = label_free(int(c[N]), c[SUM_P], c[SUM_P2], self.level, self.tau)
            windows[name] = {
                "requests": int(c[REQUESTS]),
                "n_scored": int(c[N]),
                **({"estimate": None, "lower": None, "upper": None} if est is None else est.as_dict()),
            }
        life = counter.lifetime.tolist()
        m = int(life[M])
        obs = observed(m, life[SUM_Y], self.level)
        recal = (
            recalibrated(
                int(life[N]), life[SUM_P], life[SUM_P2], m, life[SUM_R], life[SUM_R2], self.level, self.tau
            )
            if m >= self.min_labels
            else None
        )
        return {
            "slice": key,
            "tags": tags_of(key),
            "windows": windows,
            "labels": {"n": m, **(obs.as_dict() if obs else {"estimate": None, "lower": None, "upper": None})},
            "recalibrated": recal.as_dict() if recal else None,
        }

    def snapshot(self, now: float | None = None) -> list[dict]:
        return [self.summary(key, now) for key in sorted(self.counters)]
