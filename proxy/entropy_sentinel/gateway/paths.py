"""Request paths that could resolve elsewhere than they were routed are refused before routing.

aiohttp routes on the path as sent (``/v1/../metrics`` matches ``/v1/{tail}``), while the client
session that forwards it normalizes it (to ``/metrics``, also from ``%2e%2e``): the upstream would
serve a path outside ``/v1/``. No OpenAI client sends dot segments, encoded slashes or an absolute
URL as the request target, so such a request gets 404 in OpenAI's shape and is never forwarded;
every path that passes reaches the upstream exactly as routed.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from aiohttp import web

from entropy_sentinel.gateway.errors import Handler, ProxyError

#: encoded "/", "\\" and NUL: an upstream that decodes them would see other segments than we routed
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c|00)", re.IGNORECASE)
_DOT_SEGMENTS = frozenset({".", ".."})


def unsafe_path(raw_target: str) -> bool:
    """Whether a request target (path and query, as sent) is not a plain origin-form path."""
    path = raw_target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or "\\" in path or _ENCODED_SEPARATOR.search(path):
        return True  # an absolute URL, "*", or a separator in disguise
    return any(segment in _DOT_SEGMENTS for segment in unquote(path).split("/"))


@web.middleware
async def path_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if unsafe_path(request.raw_path):
        raise ProxyError(
            404, "Invalid URL: send a plain path, without dot segments, encoded slashes or a scheme and host.",
            code="invalid_url",
        )
    return await handler(request)
