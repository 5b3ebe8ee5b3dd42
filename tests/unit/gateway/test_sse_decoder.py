"""SSEDecoder against a one-shot reference (normalise CRLF, split at blank lines) on generated streams
cut into generated chunks: the events, and what is left pending, do not depend on the chunking."""

from __future__ import annotations

from entropy_sentinel.gateway.sse import SSEDecoder
from hypothesis import given, settings
from hypothesis import strategies as st

_piece = st.sampled_from([b"data: ", b"{", b"}", b"x", b"\n", b"\n\n", b"\r\n", b"\r", b"\n\n\n", b": c", b"\r\n\r\n"])


def reference(stream: bytes) -> tuple[list[bytes], bytes]:
    *events, rest = stream.replace(b"\r\n", b"\n").split(b"\n\n")
    return [e for e in events if e], rest


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_piece, max_size=40), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_events_do_not_depend_on_the_chunking(pieces, cuts):
    stream = b"".join(pieces)
    if stream.endswith(b"\r"):  # a trailing CR waits for its LF: the reference cannot know
        stream += b"x"
    want, pending = reference(stream)
    decoder = SSEDecoder()
    got, at = [], 0
    for cut in sorted({c for c in cuts if c < len(stream)}) + [len(stream)]:
        got += decoder.feed(stream[at:cut])
        at = cut
    assert got == want
    assert decoder.pending == pending
