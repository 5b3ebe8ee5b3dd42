"""Incremental Server-Sent Events framing: bytes in, complete events out, nothing buffered longer
than one event."""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


class SSEDecoder:
    """Splits a byte stream into events at blank lines (``\\n\\n``; ``\\r\\n`` is normalised)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        data = self._buffer + chunk if self._buffer else chunk
        if b"\n\n" not in data:
            self._buffer = data
            return []
        *events, self._buffer = data.split(b"\n\n")
        return [e for e in events if e]

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete event (non-empty at the end only if the stream was cut)."""
        return self._buffer


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
