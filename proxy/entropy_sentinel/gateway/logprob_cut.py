"""The fast path for an upstream answer: decode only what the proxy reads, cut ``logprobs`` out of the
upstream's own bytes.

A streamed token is one event of ~1.7 KB, nearly all of it the top-20 candidates the proxy forced; a
client that asked for no logprobs gets ~230 bytes of it. Parsing every event into Python objects and
serializing it again was most of the proxy's work per token (issue 12). Here instead:

* msgspec decodes the answer against structs that name only what the proxy reads: each choice's
  ``index`` and the raw bytes of its ``logprobs``, ``model``, an ``error`` key, and the raw bytes of
  ``id`` and ``usage`` (decoded only when the span needs them). The rest is skipped, not built;
* each ``logprobs`` block is decoded against the OpenAI shapes (chat ``content[]``, legacy
  ``top_logprobs`` dicts) into the flat lists its trajectory takes;
* when the client asked for no logprobs, each block's span is cut out of the original bytes (``null``
  in its place, or the member removed where the dialect omits the key); everything else goes to the
  client byte for byte as the upstream sent it.

A large answer (a non-streamed one: ~360 KB for 256 tokens of top-20) is decoded in one pass instead
of two (:func:`_one_pass`): skipping the ``logprobs`` value to reach the rest cost half as much again
as decoding it. Its span is found first (the one ``"logprobs"`` key; the value's end among the ``}``
after it, last first) and proven: the answer with a marker in the value's place must decode with
that marker as its one choice's ``logprobs``, and the value must decode as one block. Anything else
falls back to the two passes, which give the same result.

The general path (parse, :class:`~entropy_sentinel.gateway.wire.ChoiceExtractor`, dump) stays the
reference. :func:`fast_process` returns None, having changed nothing, whenever it does not apply: a
client that asked for its own top-n (a rewrite, not a cut), an ``error`` object, a block not of those
exact shapes (the general path marks it malformed), invalid UTF-8 or JSON (the general path decides
what to relay), or a ``"logprobs"`` key it cannot tie one to one to its choice (see :func:`_spans`).
Tokens go to the trajectories only once the whole answer has been checked: a fall-back never counts
a token twice.

One difference is deliberate: a number beyond float range in a field the proxy does not read (orjson
refuses ``1e400``, msgspec skips it) no longer makes the general path relay a streamed event with its
logprobs; it is cut as any other, as the non-streamed path (whose stdlib fallback parses it) always did.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from msgspec import UNSET, Raw, UnsetType

from entropy_sentinel.gateway.wire import ChoiceExtractor

__all__ = ["FastResult", "answer_meta", "fast_process"]

_NAN = float("nan")
_KEY = b'"logprobs"'
_KEY_LEN = len(_KEY)
_WS = b" \t\n\r"
_BACKSLASH, _COMMA = ord("\\"), ord(",")

Block = tuple[list[int], list[float | None], list[float | None]]


class _Candidate(msgspec.Struct, gc=False):
    logprob: float | None  # required, as the general path's cand["logprob"]


class _Token(msgspec.Struct, gc=False):
    logprob: float | None = None
    top_logprobs: list[_Candidate] | None = None


class _Logprobs(msgspec.Struct, gc=False):
    content: list[_Token] | None = None  # chat (and llama.cpp's completions)
    top_logprobs: list[dict[str, float | None] | None] | None = None  # legacy completions
    tokens: list[str] | None = None
    token_logprobs: list[float | None] | None = None


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    logprobs: Raw | UnsetType = UNSET


class _Answer(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    model: str | None = None
    error: Raw | UnsetType = UNSET
    id: Raw | UnsetType = UNSET  # any JSON value: a server's odd id never sends the answer down the slow path
    usage: Raw | UnsetType = UNSET


_ANSWER = msgspec.json.Decoder(_Answer)
_LOGPROBS = msgspec.json.Decoder(_Logprobs)

#: answers at least this long are decoded in one pass (:func:`_one_pass`); streamed events (~2 KB) are not
ONE_PASS_MIN_BYTES = 32 * 1024
#: ``}`` tried as the end of the ``logprobs`` value, last first, before falling back to two passes
_ONE_PASS_TRIES = 16
#: what stands in for the value while the rest of the answer is decoded: a JSON number no answer needs
_MARK = b"-0.0e-99999"


class FastResult(NamedTuple):
    payload: bytes  # the JSON for the client (the upstream's own object when unchanged)
    changed: bool
    model: str | None
    #: the raw JSON of the answer's ``id`` and ``usage`` members (None when absent): see :func:`answer_meta`
    id: Raw | None = None
    usage: Raw | None = None


def answer_meta(id_raw: Raw | bytes | None, usage_raw: Raw | bytes | None) -> tuple[Any, Any]:
    """The ``id`` and ``usage`` values of :class:`FastResult` (None for absent or not JSON)."""
    out = []
    for raw in (id_raw, usage_raw):
        try:
            out.append(msgspec.json.decode(raw) if raw is not None else None)
        except msgspec.DecodeError:
            out.append(None)
    return out[0], out[1]


def _block(lp: _Logprobs) -> Block | None:
    """Per-token candidate counts, flat candidate logprobs, chosen logprobs; None: nothing to read
    (neither ``content`` nor ``top_logprobs``), the block is left as it is."""
    if lp.content is not None:
        content = lp.content
        counts = [len(t.top_logprobs) if t.top_logprobs else 0 for t in content]
        flat = [c.logprob for t in content if t.top_logprobs for c in t.top_logprobs]
        return counts, flat, [t.logprob for t in content]
    if lp.top_logprobs is not None:
        tops = lp.top_logprobs
        counts = [len(d) if d else 0 for d in tops]
        flat = [v for d in tops if d for v in d.values()]
        chosen = lp.token_logprobs or []
        return counts, flat, chosen if len(chosen) == len(counts) else [_NAN] * len(counts)
    return None


def _skip_ws(data: bytes, at: int) -> int:
    n = len(data)
    while at < n and data[at] in _WS:
        at += 1
    return at


def _past_colon(data: bytes, key: int) -> int | None:
    """Just past the colon after the ``"logprobs"`` found at ``key``; None: none found (``key`` < 0), its
    opening quote escaped (not trusted as a key), or no colon after it."""
    if key < 0 or (key > 0 and data[key - 1] == _BACKSLASH):
        return None
    at = key + _KEY_LEN
    if data[at : at + 1] != b":":  # compact JSON has the colon right there
        at = _skip_ws(data, at)
        if data[at : at + 1] != b":":
            return None
    return at + 1


def _spans(data: bytes, raws: list[Raw]) -> list[tuple[int, int, int]] | None:
    """(key start, value start, value end) of every choice's ``logprobs`` member, in choice order; None unless the
    key occurs exactly once per choice that has one, each followed by that choice's own value.

    A ``"logprobs"`` whose quotes are not escaped can only be a key in valid JSON (inside a string
    its quotes would be ``\\"``); an opening quote preceded by a backslash is not trusted. With one
    occurrence per choice that has the key, in order, and values byte-equal, every occurrence is
    that choice's own key: a stray one anywhere (a nested ``logprobs``, a duplicate key) leaves an
    occurrence unmatched or a value unequal.
    """
    spans: list[tuple[int, int, int]] = []
    pos = 0
    for raw in raws:
        key = data.find(_KEY, pos)
        at = _past_colon(data, key)
        if at is None:
            return None
        if not data.startswith(raw, at):
            at = _skip_ws(data, at)
        if not data.startswith(raw, at):
            return None
        pos = at + len(raw)
        spans.append((key, at, pos))
    if data.find(_KEY, pos) >= 0:
        return None
    return spans


def _member(data: bytes, key: int, end: int) -> tuple[int, int]:
    """The bytes to remove for the member from ``key`` to ``end``: with the comma before it, or
    (first member) the comma after it."""
    before = key - 1
    while before >= 0 and data[before] in _WS:
        before -= 1
    if before >= 0 and data[before] == _COMMA:
        return before, end
    after = _skip_ws(data, end)
    if after < len(data) and data[after] == _COMMA:
        return key, after + 1
    return key, end


def _cut(data: bytes, spans: list[tuple[int, int, int]], drop_key: bool) -> bytes:
    """``data`` with each span's value replaced by ``null`` (or its member removed, ``drop_key``)."""
    parts: list[bytes] = []
    pos = 0
    for key, value, end in spans:
        if drop_key:
            start, stop = _member(data, key, end)
            parts.append(data[pos:start])
        else:
            parts += (data[pos:value], b"null")
            stop = end
        pos = stop
    parts.append(data[pos:])
    return b"".join(parts)


def fast_process(data: bytes, extractor: ChoiceExtractor) -> FastResult | None:
    """Feed each choice's tokens to ``extractor`` and rewrite ``data`` for the client as the general
    path would; None (nothing fed, nothing changed) where this path does not apply."""
    plan = extractor.plan
    cut = plan.client_n is None
    if not cut and not plan.passthrough:
        return None  # the client's own top-n: candidates are dropped, not a span
    if not data.isascii():
        try:
            data.decode()
        except UnicodeDecodeError:
            return None
    if len(data) >= ONE_PASS_MIN_BYTES:
        one = _one_pass(data, extractor, cut)
        if one is not None:
            return one
    try:
        answer = _ANSWER.decode(data)
        if answer.error is not UNSET:
            return None
        choices = answer.choices or ()
        if len(choices) == 1:  # the common case, without the bookkeeping of several choices
            return _one_choice(data, extractor, choices[0], cut, answer)
        raws: list[Raw] = []
        raw_blocks: list[Block | None] = []  # per choice with a logprobs key
        entries: list[tuple[int, Block | None]] = []
        any_block = False
        for choice in choices:
            block = None
            raw = choice.logprobs
            if raw is not UNSET:
                block = _decode_block(raw)
                any_block = any_block or block is not None
                raws.append(raw)
                raw_blocks.append(block)
            entries.append((choice.index, block))
    except (msgspec.DecodeError, RecursionError):
        return None
    payload = data
    if cut and any_block:
        spans = _spans(data, raws)
        if spans is None:
            return None
        payload = _cut(data, [span for span, block in zip(spans, raw_blocks, strict=True) if block is not None],
                       plan.drop_key)
    for index, block in entries:
        traj = extractor.trajectory(index)
        if block is not None and traj is not None:
            traj.add(*block)
    return _result(payload, data, answer)


def _result(payload: bytes, data: bytes, answer: _Answer) -> FastResult:
    return FastResult(
        payload, payload is not data, answer.model,
        None if answer.id is UNSET else answer.id, None if answer.usage is UNSET else answer.usage,
    )


def _decode_block(raw: Raw) -> Block | None:
    """The block of a ``logprobs`` value (None for ``null``, or nothing to read); raises
    ``msgspec.DecodeError`` for a value not of the exact shapes."""
    if len(raw) == 4 and bytes(raw) == b"null":
        return None
    return _block(_LOGPROBS.decode(raw))


def _one_choice(data: bytes, extractor: ChoiceExtractor, choice: _Choice, cut: bool, answer: _Answer
                ) -> FastResult | None:
    raw = choice.logprobs
    block = None if raw is UNSET else _decode_block(raw)
    spans = None
    if cut and block is not None:
        spans = _spans(data, [raw])  # type: ignore[list-item]  # not UNSET: there is a block
        if spans is None:
            return None
    return _deliver(data, extractor, choice.index, block, spans, answer)


def _deliver(data: bytes, extractor: ChoiceExtractor, index: int, block: Block | None,
             spans: list[tuple[int, int, int]] | None, answer: _Answer) -> FastResult:
    """The one choice's answer: ``data`` with ``spans`` cut out (none: as sent), ``block`` fed to its trajectory."""
    payload = data if spans is None else _cut(data, spans, extractor.plan.drop_key)
    traj = extractor.trajectory(index)
    if block is not None and traj is not None:
        traj.add(*block)
    return _result(payload, data, answer)


def _one_pass(data: bytes, extractor: ChoiceExtractor, cut: bool) -> FastResult | None:
    """:func:`fast_process` of a one-choice answer whose ``logprobs`` is an object, decoding that object
    once; None (nothing fed) where it cannot prove the span, and the two passes decide.

    The span: from the first unescaped ``"logprobs"`` in the answer, its value from the ``{`` after the
    colon to one of the ``}`` after it. The proof: with :data:`_MARK` in place of that span the answer
    decodes, its one choice's ``logprobs`` is that marker, the marker and the key occur once in it (no
    other ``"logprobs"`` outside the span, as :func:`_spans` requires), and the span alone decodes as
    one logprobs block. Then the span is exactly that choice's value, and the rest of the answer
    (model, id, usage, an ``error``) reads as in the answer itself. (What the span's own strings hold
    does not matter: the block is decoded, and the span leaves whole.)
    """
    key = data.find(_KEY)
    at = _past_colon(data, key)
    if at is None:
        return None
    at = _skip_ws(data, at)
    if data[at : at + 1] != b"{":
        return None
    view = memoryview(data)
    head = view[:at]
    hi = len(data)
    for _ in range(_ONE_PASS_TRIES):
        close = data.rfind(b"}", at, hi)
        if close < 0:
            return None
        rest = b"".join((head, _MARK, view[close + 1 :]))
        try:
            answer = _ANSWER.decode(rest)
        except (msgspec.DecodeError, RecursionError):
            hi = close
            continue
        break
    else:
        return None
    choices = answer.choices or ()
    if answer.error is not UNSET or len(choices) != 1:
        return None
    choice = choices[0]
    if choice.logprobs is UNSET or bytes(choice.logprobs) != _MARK or rest.count(_MARK) != 1 or rest.count(_KEY) != 1:
        return None  # (the rest is small: searched there, not in the whole answer)
    end = close + 1
    try:
        block = _block(_LOGPROBS.decode(view[at:end]))
    except (msgspec.DecodeError, RecursionError):
        return None
    spans = [(key, at, end)] if cut and block is not None else None
    return _deliver(data, extractor, choice.index, block, spans, answer)
