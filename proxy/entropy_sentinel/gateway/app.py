"""The aiohttp application: routes, shared state, start-up and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import aiohttp
from aiohttp import web

from entropy_sentinel.config import SentinelConfig
from entropy_sentinel.gateway.admin import (
    ADMIN_TOKEN_KEY,
    FLEET_KEY,
    INSTRUMENTER_KEY,
    MONITOR_KEY,
    RECORDS_KEY,
    add_routes,
    admin_auth,
)
from entropy_sentinel.gateway.errors import openai_errors
from entropy_sentinel.gateway.estimators import RELOADS_KEY, EstimatorReloads, as_catalog, interval_tau
from entropy_sentinel.gateway.forward import asks_for_stream, forward
from entropy_sentinel.gateway.gc_tuning import settle_heap
from entropy_sentinel.gateway.instrumented import Instrumenter
from entropy_sentinel.gateway.logsafe import install_redaction
from entropy_sentinel.gateway.paths import path_guard
from entropy_sentinel.gateway.readiness import READINESS_KEY, Readiness
from entropy_sentinel.gateway.request_body import BODY_LIMITS_KEY, BodyLimits, read_body
from entropy_sentinel.gateway.server import handler_args
from entropy_sentinel.gateway.upstream_http import UpstreamHTTP
from entropy_sentinel.gateway.wire import DIALECTS, Dialect, detect_dialect
from entropy_sentinel.monitor.fleet import FleetView, is_shared
from entropy_sentinel.monitor.hub import Monitor
from entropy_sentinel.monitor.prometheus import PrometheusSink
from entropy_sentinel.monitor.records import RecentRecords
from entropy_sentinel.monitor.sinks import RecordSink
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.monitor.store_factory import open_store
from entropy_sentinel.types import Scorer, ScorerCatalog

__all__ = ["INSTRUMENTER_KEY", "MONITOR_KEY", "RECORDS_KEY", "UPSTREAM_KEY", "create_app"]

UPSTREAM_KEY = web.AppKey("upstream", UpstreamHTTP)
log = logging.getLogger(__name__)


async def probe_models(upstream: UpstreamHTTP, timeout_s: float = 10.0) -> object:
    """The upstream's ``GET /v1/models`` answer (None when it has none): its family and models."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with upstream.decoded.get(upstream.url("/v1/models"), timeout=timeout) as resp:
            return await resp.json(content_type=None) if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        log.warning("could not list the upstream's models (%s)", type(exc).__name__)
        return None


def upstream_dialect(configured: str, listing: object) -> Dialect:
    """The dialect of ``upstream.dialect`` (``auto``: detected from the ``/v1/models`` listing).

    Whether the upstream drops its connection after a stream is the server's, not the logprob
    dialect's: a configured dialect in front of a server that lists itself as llama.cpp's (probed
    when an estimator is loaded) keeps its logprob rules and sends streams with ``Connection: close``,
    else the pool hands the dropped connection to the next request (a 502)."""
    if configured == "auto":
        return DIALECTS[detect_dialect(listing)]
    dialect = DIALECTS[configured]
    detected = DIALECTS[detect_dialect(listing)] if listing is not None else dialect
    if detected.closes_after_stream and not dialect.closes_after_stream:
        log.warning(
            "upstream.dialect is %s but the upstream lists its models as %s's server does: its streams go with "
            "Connection: close (it drops the connection after each)", configured, detected.name,
        )
        return dataclasses.replace(dialect, closes_after_stream=True)
    return dialect


def model_ids(listing: object) -> list[str]:
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def _chat(request: web.Request) -> web.StreamResponse:
    return await request.app[INSTRUMENTER_KEY].handle(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await request.app[INSTRUMENTER_KEY].handle(request, "completions")


async def _forward(request: web.Request) -> web.StreamResponse:
    """Any other ``/v1/*`` route, relayed as it is. To an upstream that drops its connection after
    every streamed answer without saying so (llama-server: also ``/v1/messages`` and its other
    streaming routes), a request asking for a stream goes with ``Connection: close``, so the pool
    never hands that connection to the next request."""
    if not request.app[INSTRUMENTER_KEY].dialect.closes_after_stream:
        return await forward(request, request.app[UPSTREAM_KEY])
    body = await read_body(request)  # a ProxyError (408/413/415/400) is answered by the middleware
    return await forward(request, request.app[UPSTREAM_KEY], body=body, close=asks_for_stream(body))


def warm_up(estimators: ScorerCatalog | None) -> None:
    """Run the per-response path once at start-up (numpy, features, each estimator's first call are
    several times slower cold), so the first client does not pay for it."""
    from entropy_sentinel.signal import Trajectory

    traj = Trajectory()
    traj.add([2, 2], [-0.1, -2.5, -0.3, -1.5], [-0.1, -0.3])
    by_variant = traj.features_by_variant()  # what the scoring worker computes
    for scorer in estimators.scorers() if estimators else ():
        scorer([by_variant])


def build_monitor(cfg: SentinelConfig, estimators: ScorerCatalog | None) -> Monitor:
    slices = SliceRegistry(
        cfg.monitor.max_slices,
        cfg.monitor.level,
        interval_tau(estimators, cfg.monitor.level),  # the first estimator's τ (configuration order)
        cfg.monitor.min_labels,
    )
    store = open_store(cfg.store)  # PostgreSQL (store.url), the SQLite file (store.path), or none
    sinks: list[RecordSink] = [PrometheusSink(slices)]
    if cfg.otel.endpoint:  # a span per request to an OTLP/HTTP collector (the otel extra, checked by config)
        from entropy_sentinel.monitor.otel_sink import open_otel_sink

        sinks.append(open_otel_sink(cfg.otel))
    return Monitor(
        slices,
        store,
        sinks,
        cfg.monitor.api_key_tenants,
        cfg.monitor.sample_rate,
        cfg.monitor.slice_sample_rates,
        cfg.store.capture_content,
        durability=cfg.store.durability,
    )


def create_app(
    cfg: SentinelConfig, upstream_url: str, scorer: Scorer | ScorerCatalog | None = None
) -> web.Application:
    """The proxy in front of ``upstream_url`` (an OpenAI-compatible base URL). ``scorer``: the estimators
    by model (a :class:`ScorerCatalog`, reloadable), or one scorer for every model, or None (features only)."""
    estimators = as_catalog(scorer)
    install_redaction()  # aiohttp's server errors quote the raw request (API keys included)
    app = web.Application(
        client_max_size=int(cfg.server.max_body_mb * 1024 * 1024),
        middlewares=[openai_errors, path_guard, admin_auth],  # outermost first
        handler_args=handler_args(cfg.server),
    )
    app[BODY_LIMITS_KEY] = BodyLimits(cfg.server.max_body_mb, cfg.server.body_timeout_s)
    records = RecentRecords(cfg.server.recent_requests)
    app[RECORDS_KEY] = records
    app[ADMIN_TOKEN_KEY] = cfg.admin.token
    app[READINESS_KEY] = Readiness()  # gateway.server.run turns it false on SIGTERM, before the drain

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        monitor = build_monitor(cfg, estimators)
        app[MONITOR_KEY] = monitor
        if monitor.store is not None:
            replayed = await asyncio.to_thread(monitor.replay_store)
            log.info("store %s: %d records replayed into the slice counters", monitor.store.describe(), replayed)
        fleet_task = None
        if monitor.store is not None and is_shared(monitor.store) and cfg.monitor.fleet_refresh_s > 0:
            fleet = FleetView(monitor.store, monitor.slices, cfg.monitor.fleet_refresh_s)
            await fleet.refresh()  # /sentinel/v1/slices is the fleet's from the first request on
            app[FLEET_KEY] = fleet
            fleet_task = asyncio.create_task(fleet.run(), name="sentinel-fleet-view")
            log.info("/sentinel/v1/slices: the fleet's counters, refreshed from the store every %g s",
                     cfg.monitor.fleet_refresh_s)
        await asyncio.to_thread(warm_up, estimators)
        settle_heap()  # start-up's heap out of the collector's way (gc_tuning)
        upstream = UpstreamHTTP(upstream_url, cfg.upstream)
        app[UPSTREAM_KEY] = upstream
        listing = None
        if cfg.upstream.dialect == "auto" or estimators:
            listing = await probe_models(upstream)
            for warning in estimators.check_models(model_ids(listing)) if estimators else ():
                log.warning(warning)
        dialect = upstream_dialect(cfg.upstream.dialect, listing)
        log.info("upstream dialect: %s", dialect.name)
        instrumenter = app[INSTRUMENTER_KEY] = Instrumenter(
            upstream, records, cfg.signal.top_k, cfg.signal.entropy_variant, estimators=estimators,
            dialect=dialect, monitor=monitor, max_choices=cfg.signal.max_choices,
            max_event_bytes=int(cfg.upstream.max_event_mb * 1024 * 1024),
            score_on_loop_s=cfg.signal.score_on_loop_ms / 1000,
        )
        app[RELOADS_KEY] = EstimatorReloads(instrumenter, monitor.slices)  # the admin route and SIGHUP
        yield
        if fleet_task is not None:
            app[FLEET_KEY].stop()
            await fleet_task  # a refresh under way ends before the store closes
        await upstream.close()
        await asyncio.to_thread(monitor.close)  # drains the store's queue: a clean stop loses nothing

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_route("*", "/v1/{tail:.*}", _forward)
    add_routes(app)
    return app
