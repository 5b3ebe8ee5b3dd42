"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Every error the proxy itself gives has this shape: its own refusals (:class:`ProxyError`), aiohttp's
404/405/413, and any unexpected exception (a 500 whose log line names the exception's type and
place, never its message, which may quote the request).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from entropy_sentinel.gateway.logsafe import describe_exception

log = logging.getLogger(__name__)

#: the request id the instrumented routes give a request, for errors raised past their own handling
REQUEST_ID_KEY = web.RequestKey("sentinel_request_id", str)
REQUEST_ID_HEADER = "X-Sentinel-Request-Id"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    502: "upstream_error",
    504: "upstream_timeout",
}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}
    )


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, code, param),
        content_type="application/json",
        headers=headers,
    )


class ProxyError(Exception):
    """A request the proxy refuses itself; rendered by :func:`openai_errors` (or caught earlier)."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return error_response(self.status, self.message, code=self.code, param=self.param, headers=headers)


#: aiohttp's own refusals, said our way (its text bodies are plain text and may quote the request)
_HTTP_ERRORS = {
    404: ("Unknown URL: the proxy serves the OpenAI API under /v1/ and its own routes under /sentinel/.",
          "unknown_url"),
    405: ("This method is not allowed on this URL.", "method_not_allowed"),
    413: ("The request body is larger than the proxy accepts (server.max_body_mb).", "request_too_large"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _ids(request: web.Request) -> dict[str, str] | None:
    request_id = request.get(REQUEST_ID_KEY)
    return {REQUEST_ID_HEADER: request_id} if request_id else None


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: whatever goes wrong, the client gets OpenAI's error JSON."""
    try:
        return await handler(request)
    except ProxyError as exc:
        return exc.response(_ids(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message, code = _HTTP_ERRORS.get(exc.status, (exc.reason, "http_error"))
        headers = _ids(request) or {}
        if "Allow" in exc.headers:
            headers["Allow"] = exc.headers["Allow"]
        return error_response(exc.status, message, code=code, headers=headers)
    except Exception as exc:
        if request.writer.output_size > 0:
            raise  # the response has begun: aiohttp closes the connection, the client sees a cut
        route = request.match_info.route.resource
        log.error(
            "unhandled %s on %s %s", describe_exception(exc), request.method,
            route.canonical if route is not None else "(no route)",
        )
        return error_response(500, "The proxy failed to handle this request.", code="internal_error",
                              headers=_ids(request))
