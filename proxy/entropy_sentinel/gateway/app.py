"""The aiohttp application: routes, shared state, start-up and shutdown."""

from __future__ import annotations

import asyncio
import logging
import re

import aiohttp
import orjson
from aiohttp import web

from entropy_sentinel import __version__
from entropy_sentinel.config import SentinelConfig
from entropy_sentinel.gateway.errors import error_response
from entropy_sentinel.gateway.forward import forward
from entropy_sentinel.gateway.instrumented import Instrumenter, Scorer
from entropy_sentinel.gateway.upstream_http import UpstreamHTTP
from entropy_sentinel.gateway.wire import DIALECTS, detect_dialect
from entropy_sentinel.monitor.records import RecentRecords

UPSTREAM_KEY = web.AppKey("upstream", UpstreamHTTP)
INSTRUMENTER_KEY = web.AppKey("instrumenter", Instrumenter)
RECORDS_KEY = web.AppKey("records", RecentRecords)
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
log = logging.getLogger(__name__)


async def probe_models(upstream: UpstreamHTTP, timeout_s: float = 10.0) -> object:
    """The upstream's ``GET /v1/models`` answer (None when it has none): its family and models."""
    try:
        async with upstream.decoded.get(upstream.url("/v1/models"), timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        log.warning("could not list the upstream's models (%s)", type(exc).__name__)
        return None


def model_ids(listing: object) -> list[str]:
    data = listing.get("data") if isinstance(listing, dict) else None
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)] if isinstance(data, list) else []


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


async def _chat(request: web.Request) -> web.StreamResponse:
    return await request.app[INSTRUMENTER_KEY].handle(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await request.app[INSTRUMENTER_KEY].handle(request, "completions")


async def _forward(request: web.Request) -> web.StreamResponse:
    return await forward(request, request.app[UPSTREAM_KEY])


async def _healthz(request: web.Request) -> web.Response:
    instrumenter = request.app[INSTRUMENTER_KEY]
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "upstream": request.app[UPSTREAM_KEY].base_url,
            "upstream_dialect": instrumenter.dialect.name,
            "estimator_loaded": instrumenter.scorer is not None,
        }
    )


async def _request_record(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    record = request.app[RECORDS_KEY].get(request_id) if _REQUEST_ID.match(request_id) else None
    if record is None:
        return error_response(404, "No finished request with that id (it may be too old).", code="request_not_found")
    return _json(record.to_json())


def create_app(cfg: SentinelConfig, upstream_url: str, scorer: Scorer | None = None) -> web.Application:
    """The proxy in front of ``upstream_url`` (an OpenAI-compatible base URL)."""
    app = web.Application(client_max_size=int(cfg.server.max_body_mb * 1024 * 1024))
    records = RecentRecords(cfg.server.recent_requests)
    app[RECORDS_KEY] = records

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        upstream = UpstreamHTTP(upstream_url, cfg.upstream)
        app[UPSTREAM_KEY] = upstream
        dialect = cfg.upstream.dialect
        if dialect == "auto" or scorer is not None:
            listing = await probe_models(upstream)
            if dialect == "auto":
                dialect = detect_dialect(listing)
            warning = getattr(scorer, "check_model", lambda ids: None)(model_ids(listing))
            if warning:
                log.warning(warning)
        log.info("upstream dialect: %s", dialect)
        app[INSTRUMENTER_KEY] = Instrumenter(
            upstream, records, cfg.signal.top_k, cfg.signal.entropy_variant, scorer=scorer, dialect=DIALECTS[dialect]
        )
        yield
        await upstream.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_route("*", "/v1/{tail:.*}", _forward)
    app.router.add_get("/sentinel/healthz", _healthz)
    app.router.add_get("/sentinel/v1/requests/{request_id}", _request_record)
    return app
