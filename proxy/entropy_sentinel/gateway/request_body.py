"""Reading and parsing a client's request body, with every failure a :class:`ProxyError`.

* The body must arrive within ``server.body_timeout_s`` (a client trickling it is cut: 408).
* ``Content-Encoding``: aiohttp inflates gzip/deflate (br, zstd when installed); the inflated body is
  what the proxy reads, forwards (without the header) and bounds by ``server.max_body_mb`` (413).
  Any other coding, or a stack of them, is refused with 415.
* JSON: parsed by orjson, then the stdlib for what orjson refuses (a UTF-8 BOM, UTF-16); either way
  no lone surrogate, no NaN/Infinity, no number beyond a double, and nothing nested deeper than the
  proxy can write back (400, never a 500).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from entropy_sentinel.gateway.errors import ProxyError


@dataclass(frozen=True)
class BodyLimits:
    max_mb: float
    timeout_s: float


BODY_LIMITS_KEY = web.AppKey("body_limits", BodyLimits)
#: codings aiohttp inflates itself (it answers 400 itself for br/zstd without their library)
INFLATED_CODINGS = frozenset({"gzip", "deflate", "br", "zstd"})
#: orjson writes at most this many levels; a body nested deeper cannot be forwarded rewritten
_ORJSON_MAX_DEPTH = 254


def check_content_encoding(request: web.Request) -> None:
    codings = [
        c.strip().lower() for value in request.headers.getall("Content-Encoding", []) for c in value.split(",")
    ]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1 or (codings and codings[0] not in INFLATED_CODINGS):
        raise ProxyError(
            415, "Unsupported Content-Encoding: send the body plain, or compressed once with gzip or deflate.",
            code="unsupported_content_encoding", param="Content-Encoding",
        )


async def read_body(request: web.Request) -> bytes:
    """The whole (inflated) body, within the configured time and size."""
    limits = request.app.get(BODY_LIMITS_KEY)
    check_content_encoding(request)
    try:
        async with asyncio.timeout(limits.timeout_s if limits is not None else None):
            return await request.read()
    except TimeoutError:  # aiohttp then reads (and drops) the rest for at most 10 s, and closes
        raise ProxyError(
            408, "The request body did not arrive in time (server.body_timeout_s).", code="request_timeout"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        limit = f" ({limits.max_mb:g} MB)" if limits is not None else ""
        raise ProxyError(
            413, f"The request body is larger than the proxy accepts{limit}.", code="request_too_large"
        ) from None
    except RequestPayloadError:  # a corrupt gzip stream, a broken chunked framing
        raise ProxyError(
            400, "The request body could not be read (its Content-Encoding or chunked framing is broken).",
            code="invalid_body_encoding",
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _invalid(detail: str = "") -> ProxyError:
    return ProxyError(400, f"The request body is not valid JSON{detail}.", code="invalid_json")


def _stdlib_loads(raw: bytes) -> Any:
    try:
        obj = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise _invalid(" (nested too deeply)") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, and ours
        raise _invalid() from None
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _invalid(" (a string holds an unpaired UTF-16 surrogate)") from None
    except RecursionError:
        raise _invalid(" (nested too deeply)") from None
    return obj


def parse_request_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 :class:`ProxyError` saying why not."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = _stdlib_loads(raw)
    if not isinstance(obj, dict):
        raise ProxyError(400, "The request body must be a JSON object.", code="invalid_body")
    if raw.count(b"[") + raw.count(b"{") > _ORJSON_MAX_DEPTH:
        encode_request_json(obj)  # deep enough to matter: check that it can be written back
    return obj


def encode_request_json(obj: Any) -> bytes:
    """``obj`` as JSON bytes (orjson; the stdlib for integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise _invalid(" (nested too deeply)") from None
    except (ValueError, TypeError):
        raise _invalid() from None


def utf8_or_none(value: str | None) -> str | None:
    """A header value, or None when its bytes were not UTF-8 (aiohttp keeps them as surrogates)."""
    if value is None:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value
