"""The HTTP client side: one pooled session to the upstream, header hygiene, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from entropy_sentinel.config import UpstreamConfig

#: RFC 9110 hop-by-hop headers, plus those the proxy must recompute itself
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
SENTINEL_PREFIX = "x-sentinel-"


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    """Headers named in ``Connection`` are hop-by-hop too (RFC 9110 section 7.6.1)."""
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    return listed


def request_headers(
    headers: CIMultiDictProxy[str], extra_drop: Iterable[str] = (), close: bool = False
) -> CIMultiDict[str]:
    """Client headers for the upstream: hop-by-hop and ``X-Sentinel-*`` removed, the rest as-is
    (``Authorization`` included). ``Content-Encoding`` goes too: the body forwarded is the one aiohttp
    inflated (see ``request_body.check_content_encoding``, which refuses codings it does not inflate).
    ``close``: the proxy's own ``Connection: close`` for this hop (the connection is not pooled after)."""
    drop = HOP_BY_HOP | _connection_listed(headers) | {"content-encoding"} | {h.lower() for h in extra_drop}
    out = CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in drop and not k.lower().startswith(SENTINEL_PREFIX)
    )
    if close:
        out["Connection"] = "close"
    return out


def response_headers(
    headers: CIMultiDictProxy[str], keep_length: bool, drop_encoding: bool = False
) -> CIMultiDict[str]:
    """Upstream headers for the client. ``Content-Length`` survives only when the bytes do. An
    upstream's own ``X-Sentinel-*`` never does: only the proxy says those (a spoofed P(correct))."""
    drop = (HOP_BY_HOP - ({"content-length"} if keep_length else set())) | _connection_listed(headers)
    if drop_encoding:
        drop = drop | {"content-encoding"}
    return CIMultiDict(
        (k, v) for k, v in headers.items() if k.lower() not in drop and not k.lower().startswith(SENTINEL_PREFIX)
    )


class UpstreamHTTP:
    """Two sessions over one connection pool: ``raw`` forwards bytes untouched (no decompression),
    ``decoded`` is used where the proxy must read the JSON."""

    def __init__(self, base_url: str, cfg: UpstreamConfig) -> None:
        base = base_url.rstrip("/")
        self.base_url = base[:-3] if base.endswith("/v1") else base
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s)
        self._connector = aiohttp.TCPConnector(
            limit=cfg.max_connections, ttl_dns_cache=300, keepalive_timeout=cfg.keepalive_timeout_s
        )
        common = {"connector": self._connector, "connector_owner": False, "timeout": timeout, "auto_decompress": False}
        self.raw = aiohttp.ClientSession(**common)
        self.decoded = aiohttp.ClientSession(**{**common, "auto_decompress": True})

    def url(self, raw_path_qs: str) -> str:
        return self.base_url + raw_path_qs

    async def close(self) -> None:
        await self.raw.close()
        await self.decoded.close()
        await self._connector.close()


def classify_error(exc: BaseException) -> tuple[int, str, str]:
    """(status, error code, message) for a failure to get a response from the upstream."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return 504, "upstream_timeout", "The upstream server did not answer in time."
    if isinstance(exc, aiohttp.ClientConnectorError):
        return 502, "upstream_unreachable", "The upstream server could not be reached."
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        message = "The upstream server closed the connection before the response was complete."
        return 502, "upstream_disconnected", message
    return 502, "upstream_error", "The upstream server failed to answer."
