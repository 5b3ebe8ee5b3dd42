"""Incremental Server-Sent Events framing: bytes in, complete events out, nothing buffered longer
than one event."""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


class SSEEventTooLarge(ValueError):
    """One event grew past the decoder's cap (the upstream is broken or hostile)."""


#: default cap on one event's size (``upstream.max_event_mb``)
MAX_EVENT_BYTES = 16 * 1024 * 1024


def _blank_line(data: bytes, pos: int) -> int:
    """Where the next ``\\n\\n`` at or after ``pos`` starts, or -1. A one-byte find is a memchr,
    several times faster than searching for the two bytes (events are single lines: one find each)."""
    while (i := data.find(b"\n", pos)) >= 0:
        if data[i + 1 : i + 2] == b"\n":
            return i
        pos = i + 1
    return -1


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
        if chunk.find(b"\r") >= 0:  # a memchr (``in`` is slower on bytes)
            if chunk.endswith(b"\r"):
                chunk, self._cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n")
        if not chunk:
            return []
        parts = self._parts
        joined = parts and parts[-1].endswith(b"\n") and chunk.startswith(b"\n")
        if not joined and _blank_line(chunk, 0) < 0:
            parts.append(chunk)
            self._size += len(chunk)
            return self._done([])
        # search only the new bytes (and the held part's last "\n"): linear in what is fed
        data = b"".join((*parts, chunk)) if parts else chunk
        start, pos = 0, len(data) - len(chunk) - (1 if joined else 0)
        events: list[bytes] = []
        while (cut := _blank_line(data, pos)) >= 0:
            if cut > start:
                if cut - start > self.max_event_bytes:
                    self._size = cut - start
                    return self._done(events)
                events.append(data[start:cut])
            start = pos = cut + 2
        rest = data[start:]
        self._parts, self._size = ([rest], len(rest)) if rest else ([], 0)
        return self._done(events)

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
