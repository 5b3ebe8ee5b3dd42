#!/usr/bin/env python3
"""The baseline of bench/throughput.py: the least an aiohttp proxy can do, a byte pipe.

Every request goes upstream as it came (method, path, headers but hop-by-hop ones, body); every
answer comes back chunk by chunk as it arrives, untouched: no parsing, no logprobs, no score. What
entropy-sentinel adds on top of this is its own cost.

    python bench/bytepipe.py --port 8002 --upstream http://127.0.0.1:8001
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_KEY = web.AppKey("upstream", str)


async def pipe(request: web.Request) -> web.StreamResponse:
    upstream = request.app[UPSTREAM_KEY]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = await request.read()
    session = request.app[SESSION_KEY]
    async with session.request(request.method, upstream + request.raw_path, data=body, headers=headers) as up:
        out = {k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP}
        resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


def make_app(upstream: str, max_connections: int = 256) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM_KEY] = upstream.rstrip("/")

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        connector = aiohttp.TCPConnector(limit=max_connections)
        app[SESSION_KEY] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        yield
        await app[SESSION_KEY].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", pipe)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
