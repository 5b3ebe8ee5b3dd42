"""Incremental Server-Sent Events framing: bytes in, complete events out, nothing buffered longer
than one event."""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


class SSEEventTooLarge(ValueError):
    """One event grew past the decoder's cap (the upstream is broken or hostile)."""


#: default cap on one event's size (``upstream.max_event_mb``)
MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    """Splits a byte stream into events at blank lines (``\\n\\n``; ``\\r\\n`` is normalised).

    Linear in the bytes fed: an incomplete event is kept as a list of chunks and only the new chunk
    (plus the previous chunk's last byte) is searched for the blank line, so an event arriving in
    many chunks is joined once, when it completes. An event larger than ``max_event_bytes`` raises
    :class:`SSEEventTooLarge` (after the events completed before it have been returned: the call
    that meets it returns those, the next call raises).
    """

    __slots__ = ("_parts", "_size", "_cr", "_failed", "max_event_bytes")

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._cr = False  # the previous chunk ended with "\r": it may be half of a "\r\n"
        self._failed = False
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._failed:
            raise SSEEventTooLarge(f"an event exceeded {self.max_event_bytes} bytes")
        if self._cr:
            chunk, self._cr = b"\r" + chunk, False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n")
        if not chunk:
            return []
        joined = self._parts and self._parts[-1].endswith(b"\n") and chunk.startswith(b"\n")
        if not joined and b"\n\n" not in chunk:
            self._parts.append(chunk)
            self._size += len(chunk)
            return self._done([])
        data = b"".join((*self._parts, chunk)) if self._parts else chunk
        *events, rest = data.split(b"\n\n")
        self._parts, self._size = ([rest], len(rest)) if rest else ([], 0)
        for i, event in enumerate(events):
            if len(event) > self.max_event_bytes:
                self._size = len(event)
                return self._done([e for e in events[:i] if e])
        return self._done([e for e in events if e])

    def _done(self, events: list[bytes]) -> list[bytes]:
        """``events``, unless the event in progress is past the cap: then raise now or next call."""
        if self._size > self.max_event_bytes:
            self._parts, self._size, self._failed = [], 0, True
            if not events:
                raise SSEEventTooLarge(f"an event exceeded {self.max_event_bytes} bytes")
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete event (non-empty at the end only if the stream was cut)."""
        return b"".join(self._parts)


@dataclass(slots=True, frozen=True)
class Event:
    raw: bytes  # the event as received, without its terminating blank line
    data: bytes | None  # joined ``data:`` payload, None for comment-only events


def parse_event(raw: bytes) -> Event:
    if raw.startswith(b"data: ") and b"\n" not in raw:  # the common case, no copies
        return Event(raw, raw[6:])
    parts = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    return Event(raw, b"\n".join(parts) if parts else None)


def encode_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    return b": " + text + b"\n\n"
