"""The proxy's own endpoints under ``/sentinel/``: health, readiness, records, slices, feedback, metrics, export.

Everything but ``/sentinel/healthz`` (liveness) and ``/sentinel/readyz`` (readiness: 503 once a
SIGTERM started the drain) is an admin route: when ``admin.token`` is configured it takes
``Authorization: Bearer <token>`` (compared in constant time).

``/sentinel/v1/slices`` serves the fleet's counters when the store is shared by replicas
(:class:`~entropy_sentinel.monitor.fleet.FleetView`, ``"scope": "fleet"``), else this replica's
(``"scope": "replica"``).

``GET /sentinel/v1/estimators`` lists the estimator map in use (glob, artifact, sha256, the model it
was fitted on); ``POST /sentinel/v1/estimators/reload`` reloads it (:mod:`~entropy_sentinel.gateway.estimators`):
200 with the new map, or the old map stays and the answer says why (400: the configuration's estimator
section; 422: an artifact; 409: nothing to reload from).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from entropy_sentinel import __version__
from entropy_sentinel.gateway.errors import error_response
from entropy_sentinel.gateway.estimators import RELOADS_KEY
from entropy_sentinel.gateway.instrumented import Instrumenter
from entropy_sentinel.gateway.readiness import READINESS_KEY
from entropy_sentinel.gateway.request_body import read_body
from entropy_sentinel.monitor.fleet import FleetView
from entropy_sentinel.monitor.hub import Monitor, feedback_payload
from entropy_sentinel.monitor.prometheus import PrometheusSink
from entropy_sentinel.monitor.records import RecentRecords
from entropy_sentinel.monitor.store import RecordStore
from entropy_sentinel.stats.intervals import spread_of
from entropy_sentinel.types import EstimatorLoadError

INSTRUMENTER_KEY = web.AppKey("instrumenter", Instrumenter)
RECORDS_KEY = web.AppKey("records", RecentRecords)
MONITOR_KEY = web.AppKey("monitor", Monitor)
ADMIN_TOKEN_KEY = web.AppKey("admin_token", str)
#: set at start-up when the store is shared and ``monitor.fleet_refresh_s`` > 0
FLEET_KEY = web.AppKey("fleet", FleetView)
#: the probes a load balancer or kubelet calls: never behind the admin token
PROBES = frozenset({"/sentinel/healthz", "/sentinel/readyz"})
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


@web.middleware
async def admin_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[ADMIN_TOKEN_KEY]
    path = request.path
    if token and path.startswith("/sentinel/") and path not in PROBES:
        given = request.headers.get("Authorization", "")  # non-UTF-8 bytes arrive as surrogates
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), f"Bearer {token}".encode()):
            message = "This admin route needs Authorization: Bearer <admin token>."
            return error_response(401, message, code="unauthorized")
    return await handler(request)


#: what /sentinel/healthz (outside the admin token) shows of each estimator: no file paths
_PUBLIC_ESTIMATOR_KEYS = ("glob", "model", "estimator", "sha256", "scoring")
#: a refused reload's status and code, by EstimatorLoadError.kind
_RELOAD_REFUSED = {
    "config": (400, "invalid_estimator_config"),
    "artifact": (422, "invalid_estimator_artifact"),
    "unavailable": (409, "estimator_reload_unavailable"),
}


async def healthz(request: web.Request) -> web.Response:
    instrumenter = request.app[INSTRUMENTER_KEY]
    estimators = instrumenter.estimators
    listing = estimators.describe() if estimators is not None else []
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "upstream": instrumenter.upstream.base_url,
            "upstream_dialect": instrumenter.dialect.name,
            "estimator_loaded": any(e["scoring"] for e in listing),
            "estimators": [{k: e.get(k) for k in _PUBLIC_ESTIMATOR_KEYS} for e in listing],
        }
    )


def _estimators_body(request: web.Request) -> dict[str, Any]:
    estimators = request.app[INSTRUMENTER_KEY].estimators
    reloads = request.app.get(RELOADS_KEY)
    return {
        "estimators": estimators.describe() if estimators is not None else [],
        "reloaded_at": reloads.reloaded_at if reloads is not None else None,
        "tau": spread_of(request.app[MONITOR_KEY].slices.tau).tau0,
    }


async def estimators_list(request: web.Request) -> web.Response:
    return _json(_estimators_body(request))


async def estimators_reload(request: web.Request) -> web.Response:
    """Reload the estimator map and its artifacts; refused in OpenAI's error shape, the old map kept."""
    try:
        await request.app[RELOADS_KEY].reload()
    except EstimatorLoadError as exc:
        status, code = _RELOAD_REFUSED.get(exc.kind, (422, "invalid_estimator_artifact"))
        return error_response(status, f"Estimators not reloaded, the previous ones stay: {exc}", code=code)
    return _json(_estimators_body(request))


async def readyz(request: web.Request) -> web.Response:
    """200 while serving; 503 from the moment a SIGTERM/SIGINT starts the drain (gateway/server.py)."""
    readiness = request.app.get(READINESS_KEY)
    if readiness is None or readiness.ready:
        return _json({"status": "ready"})
    return _json({"status": "draining", "draining_since": readiness.draining_since}, status=503)


async def request_record(request: web.Request) -> web.Response:
    request_id = request.match_info["request_id"]
    if not _REQUEST_ID.match(request_id):
        return error_response(404, "No finished request with that id.", code="request_not_found")
    record = request.app[RECORDS_KEY].get(request_id)
    if record is not None:
        return _json(record.to_json())
    store = request.app[MONITOR_KEY].store
    row = await asyncio.to_thread(store.get, request_id) if store is not None else None
    if row is None:
        return error_response(404, "No finished request with that id (it may be too old).", code="request_not_found")
    row.pop("prompt", None), row.pop("completion", None)
    return _json(row)


async def slices(request: web.Request) -> web.Response:
    fleet = request.app.get(FLEET_KEY)
    if fleet is not None and fleet.registry is not None:
        registry, scope = fleet.registry, fleet.scope()
    else:
        registry, scope = request.app[MONITOR_KEY].slices, {"scope": "replica", "refreshed_at": None}
    return _json(
        {
            **scope,
            "level": registry.level,
            "tau": spread_of(registry.tau).tau0,
            "tau_shape": spread_of(registry.tau).shape,
            "method": "label-free: mean P(correct) +- z*sqrt(sum p(1-p)/n^2 + tau(estimate)^2), tau(e) = tau for "
            "shape constant, tau * max(2 sqrt(e(1-e)), 0.2) for shape binomial; labelled: Wilson; "
            "recalibrated: prediction-powered inference (see monitor/intervals.py)",
            "slices": registry.snapshot(),
        }
    )


async def feedback(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await read_body(request))
    except orjson.JSONDecodeError:
        return error_response(400, "Invalid feedback: the body is not JSON.", code="invalid_feedback")
    try:
        request_id, correct = feedback_payload(body)
    except ValueError as exc:  # messages are ours, never an echo of the input
        return error_response(400, f"Invalid feedback: {exc}.", code="invalid_feedback")
    monitor = request.app[MONITOR_KEY]
    record = request.app[RECORDS_KEY].get(request_id)
    store = monitor.store
    # a store other replicas label too (PostgreSQL): only the store knows whether one of them took it
    shared = bool(getattr(store, "shared", False))
    if record is not None:
        reason = record.unscored_reason
        if reason is not None and not reason.counts_as_traffic:
            message = "That request was refused by the proxy: there is no answer to label."
            return error_response(409, message, code="request_refused")
        if record.label is not None:
            return error_response(409, "That request is already labelled.", code="already_labelled")
        if not shared:  # in memory, this process alone labels it: checked and set with no await in between
            record.label = int(correct)
            monitor.label(monitor.slices.admit(record.slice), correct, (record.p_correct or [None])[0], request_id)
            return _json({"request_id": request_id, "correct": correct, "slice": record.slice})
    # no longer in memory, or a shared store: the store's conditional write decides (RecordStore.try_label)
    row = await asyncio.to_thread(_durable_row, store, request_id) if store is not None else None
    if store is None or row is None:
        return error_response(404, "No request with that id to label.", code="request_not_found")
    if not await asyncio.to_thread(store.try_label, request_id, int(correct), time.time()):
        return error_response(409, "That request is already labelled.", code="already_labelled")
    if record is not None:
        record.label = int(correct)
    monitor.count_label(monitor.slices.admit(row["slice"]), correct, row["p_correct"])
    return _json({"request_id": request_id, "correct": correct, "slice": row["slice"]})


def _durable_row(store: RecordStore, request_id: str) -> dict[str, Any] | None:
    """The stored row, after a flush: a label queued while the record was still in memory is then
    committed before the store is asked to take another."""
    store.flush()
    return store.get(request_id)


async def metrics(request: web.Request) -> web.Response:
    sink = next((s for s in request.app[MONITOR_KEY].sinks if isinstance(s, PrometheusSink)), None)
    if sink is None:
        return error_response(404, "No Prometheus sink is configured.", code="no_metrics")
    body = await asyncio.to_thread(generate_latest, sink.registry)  # ~0.3 s at 1,000 slices: not on the loop
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def export(request: web.Request) -> web.Response:
    store = request.app[MONITOR_KEY].store
    if store is None:
        return error_response(404, "No store is configured.", code="no_store")
    try:
        since = float(request.query.get("since", "0"))
        limit = int(request.query.get("limit", "10000"))
    except ValueError:
        since, limit = math.nan, 0
    if not math.isfinite(since) or limit < 1:  # SQLite reads LIMIT -1 as "no limit"
        message = "since must be a finite number (a UNIX time) and limit a positive integer (at most 100000)."
        return error_response(400, message, code="invalid_query")
    limit = min(limit, 100_000)
    return _json({"records": await asyncio.to_thread(_durable_export, store, since, limit)})


def _durable_export(store: RecordStore, since: float, limit: int) -> list[dict[str, Any]]:
    """The stored rows after a flush: a request or label answered before the export is in it."""
    store.flush()
    return store.export(since, limit)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sentinel/healthz", healthz)
    app.router.add_get("/sentinel/readyz", readyz)
    app.router.add_get("/sentinel/metrics", metrics)
    app.router.add_get("/sentinel/v1/requests/{request_id}", request_record)
    app.router.add_get("/sentinel/v1/slices", slices)
    app.router.add_post("/sentinel/v1/feedback", feedback)
    app.router.add_get("/sentinel/v1/export", export)
    app.router.add_get("/sentinel/v1/estimators", estimators_list)
    app.router.add_post("/sentinel/v1/estimators/reload", estimators_reload)
