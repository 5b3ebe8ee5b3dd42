"""Faithful forwarding of any ``/v1/*`` request: method, path, query, headers, body; status,
headers and bytes back, streamed as they arrive."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web

from entropy_sentinel.gateway.errors import error_response
from entropy_sentinel.gateway.request_body import read_body
from entropy_sentinel.gateway.upstream_http import UpstreamHTTP, classify_error, request_headers, response_headers

log = logging.getLogger(__name__)


def asks_for_stream(body: bytes) -> bool:
    """Whether a request body asks for a streamed answer (a JSON object with a truthy ``stream``),
    read only when the bytes mention it. A body that mentions it but is not a JSON object counts as
    asking: the cost of a wrong yes is one new upstream connection, of a wrong no a lost request."""
    if b'"stream"' not in body:
        return False
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True
    return bool(obj.get("stream", False)) if isinstance(obj, dict) else True


async def forward(
    request: web.Request,
    upstream: UpstreamHTTP,
    body: bytes | None = None,
    extra_headers: dict[str, str] | None = None,
    before_end: Callable[[int], Awaitable[None]] | None = None,
    close: bool = False,
) -> web.StreamResponse:
    """Relay one request; ``body`` replaces the client's body when given (already read).

    ``before_end(status)`` is awaited before the response's last byte: before the chunk that
    completes a ``Content-Length`` body (or before the headers of an empty one), else before the
    end of a chunked body (strict durability commits the request's record there).

    ``close`` asks the upstream for ``Connection: close`` (a stream to an upstream that drops the
    connection after it without saying so: the pool must not hand that connection on).

    The path is the one routed: ``paths.path_guard`` has refused any that the client session would
    normalize elsewhere."""
    if body is None:
        body = await read_body(request)  # a ProxyError (408/413/415/400) is answered by the middleware
    try:
        async with upstream.raw.request(
            request.method,
            upstream.url(request.raw_path),
            headers=request_headers(request.headers, close=close),
            data=body,
            allow_redirects=False,
        ) as up:
            headers = response_headers(up.headers, keep_length=True)
            if extra_headers:
                headers.update(extra_headers)
            response = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
            length, sent = response.content_length, 0
            if before_end is not None and length == 0:
                await before_end(up.status)
                before_end = None
            await response.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    sent += len(chunk)
                    if before_end is not None and length is not None and sent >= length:
                        await before_end(up.status)
                        before_end = None
                    await response.write(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError) as exc:
                log.warning("upstream cut a forwarded response: %s", type(exc).__name__)
                if request.transport is not None:
                    request.transport.close()  # the client must see a truncated response, not a clean one
                return response
            except ConnectionResetError:
                log.info("client went away; upstream request closed")
                return response
            if before_end is not None:
                await before_end(up.status)
            await response.write_eof()
            return response
    except (aiohttp.ClientError, TimeoutError) as exc:
        status, code, message = classify_error(exc)
        log.warning("upstream error on %s %s: %s", request.method, request.path, type(exc).__name__)
        return error_response(status, message, code=code, headers=extra_headers)
