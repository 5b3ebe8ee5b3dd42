"""The caller's W3C trace context (``traceparent``, ``tracestate``), validated before it is kept.

A request's span (:mod:`~entropy_sentinel.monitor.otel_sink`) joins the application's trace when
the request carries a valid ``traceparent``; anything else (a malformed value, uppercase hex, an
all-zero id, version ``ff``, several ``traceparent`` headers) is dropped, never echoed onward, and
the span starts a new trace. An invalid ``tracestate`` is dropped alone (the W3C rule: the parent
still counts). No OpenTelemetry import here: the gateway calls it on every request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["MAX_TRACESTATE_CHARS", "parse_traceparent", "parse_tracestate", "trace_context"]

#: version-00 layout: version, trace id, parent span id, flags (lowercase hex only)
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_KEY = r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"{_KEY}={_VALUE}")
#: the W3C list holds at most 32 members; 512 characters is what a propagator must keep
MAX_TRACESTATE_CHARS = 512
_MAX_MEMBERS = 32


def parse_traceparent(value: str | None) -> str | None:
    """``value`` as the W3C ``traceparent`` of a version this proxy reads, else None.

    Version 00 must be exactly 55 characters; a later version may carry more fields after a ``-``
    (they are cut: the span only needs the first four)."""
    if value is None:
        return None
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, _flags = match.groups()
    if version == "ff" or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    if len(value) != 55 and (version == "00" or value[55:56] != "-"):
        return None
    return value[:55]


def parse_tracestate(values: Sequence[str]) -> str | None:
    """The ``tracestate`` headers joined into one list when every member is well formed, else None."""
    members = [m.strip(" \t") for value in values for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _MAX_MEMBERS:
        return None
    joined = ",".join(members)
    if len(joined) > MAX_TRACESTATE_CHARS or not all(_MEMBER.fullmatch(m) for m in members):
        return None
    keys = [m.partition("=")[0] for m in members]
    return joined if len(set(keys)) == len(keys) else None


def trace_context(traceparents: Sequence[str], tracestates: Sequence[str]) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) to keep from a request's headers: both None without one valid
    ``traceparent`` header (several of them are invalid too: which would be the parent?)."""
    parent = parse_traceparent(traceparents[0]) if len(traceparents) == 1 else None
    if parent is None:
        return None, None
    return parent, parse_tracestate(tracestates)
