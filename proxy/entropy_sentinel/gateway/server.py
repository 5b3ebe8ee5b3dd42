"""The listening side: read timeouts, a connection cap, and the blocking loop ``serve`` runs.

* ``server.header_timeout_s``: a connection must deliver a complete request head within this many
  seconds of opening, or of its previous response (aiohttp's keep-alive timer, which it also starts
  at connection time): slow-loris heads and idle keep-alive connections are closed after it.
* ``server.body_timeout_s``: see :mod:`entropy_sentinel.gateway.request_body` (408).
* ``server.max_connections``: connections beyond it never reach aiohttp: they are answered 503
  (OpenAI's error JSON, ``Retry-After: 1``) and closed within about two seconds (see :class:`_Refusal`).

The graceful stop (:func:`drain`, on SIGTERM or SIGINT): readiness goes false at once
(``/sentinel/readyz`` answers 503; liveness stays 200); for ``server.shutdown_delay_s`` every request
is still served, while the load balancer takes the replica out; then the listener closes (new
connections are refused), idle keep-alive connections are closed, and in-flight requests and streams
get ``server.drain_timeout_s`` to finish (those still running then are cancelled); then the app's
cleanup closes the upstream pool and flushes and closes the store, and ``run`` returns (exit 0). A
second signal during the delay ends the delay.

SIGHUP reloads the estimator map and its artifacts (:func:`~entropy_sentinel.gateway.estimators.reload_on_signal`:
the configuration file's estimator section re-read; in-flight streams keep their estimators; a bad
artifact is refused in the log and the previous estimators stay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, cast

from aiohttp import web

from entropy_sentinel.config import ServerConfig
from entropy_sentinel.gateway.errors import error_body
from entropy_sentinel.gateway.estimators import reload_on_signal
from entropy_sentinel.gateway.logsafe import SERVER_LOG
from entropy_sentinel.gateway.readiness import READINESS_KEY, Readiness

log = logging.getLogger(__name__)

_OVERLOADED_BODY = error_body(
    503, "The proxy has too many open connections; retry shortly.", code="too_many_connections"
)
OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(_OVERLOADED_BODY)
) + _OVERLOADED_BODY


def handler_args(cfg: ServerConfig) -> dict[str, Any]:
    """aiohttp request-handler settings (``web.Application(handler_args=...)``, so every runner gets them)."""
    return {"keepalive_timeout": cfg.header_timeout_s, "logger": SERVER_LOG}


class ConnectionGate:
    """Protocol factory in front of aiohttp's: counts open connections, refuses those past the cap."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server = server
        self.limit = limit
        self.open = 0
        #: refused connections still being answered, and refused in all
        self.refusing = 0
        self.refused = 0
        self._logged_at = 0.0
        self._logged_refused = 0

    def __call__(self) -> asyncio.Protocol:
        return _GatedProtocol(self)

    def __getattr__(self, name: str) -> Any:  # the rest of aiohttp's Server (connections, shutdown...)
        return getattr(self.server, name)

    def refuse(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            log.warning(
                "refused %d connection(s): server.max_connections (%d) are open",
                self.refused - self._logged_refused, self.limit,
            )
            self._logged_at, self._logged_refused = now, self.refused


class _Refusal:
    """A connection past the cap. It is answered 503 when its request starts to arrive (or after
    ``LINGER_S`` of silence), then its write side is shut and whatever else it sends is dropped for
    ``LINGER_S`` before the close: the client reads the answer rather than a reset. Past ``limit``
    refusals at once (a flood), the answer is written and the connection closed at once."""

    LINGER_S = 1.0

    def __init__(self, gate: ConnectionGate, transport: asyncio.Transport) -> None:
        self.gate, self.transport = gate, transport
        gate.refuse()
        gate.refusing += 1
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None
        if gate.refusing > gate.limit:
            self.answered = True
            transport.write(OVERLOADED_RESPONSE)
            transport.close()
        else:
            self.timer = asyncio.get_running_loop().call_later(self.LINGER_S, self.answer)

    def answer(self) -> None:
        if self.answered:
            return
        self.answered = True
        self.transport.write(OVERLOADED_RESPONSE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.LINGER_S, self.transport.close)

    def lost(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.gate.refusing -= 1


class _GatedProtocol(asyncio.Protocol):
    """Forwards every transport event to aiohttp's handler, created only for an admitted connection."""

    __slots__ = ("_gate", "_inner", "_refusal")

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate
        self._inner: asyncio.Protocol | None = None
        self._refusal: _Refusal | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.open >= gate.limit:
            self._refusal = _Refusal(gate, cast(asyncio.Transport, transport))
            return
        gate.open += 1
        self._inner = gate.server()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._gate.open -= 1
            self._inner.connection_lost(exc)
        elif self._refusal is not None:
            self._refusal.lost()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._refusal is not None:
            self._refusal.answer()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GatedRunner(web.AppRunner):
    """An ``AppRunner`` whose sites accept through a :class:`ConnectionGate`."""

    def __init__(self, app: web.Application, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._limit = max_connections
        self._gate: ConnectionGate | None = None

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        if self._gate is None or self._gate.server is not inner:
            self._gate = ConnectionGate(inner, self._limit)
        return self._gate  # type: ignore[return-value]  # a Server in every way a site uses one

    @property
    def gate(self) -> ConnectionGate | None:
        return self._gate


def make_runner(app: web.Application, cfg: ServerConfig, handle_signals: bool = False) -> GatedRunner:
    return GatedRunner(
        app,
        cfg.max_connections,
        handle_signals=handle_signals,
        handler_cancellation=True,  # a client that disconnects cancels its upstream request
        access_log=None,  # our own request log line carries no prompt, query string or key
        shutdown_timeout=cfg.drain_timeout_s,  # cleanup(): in-flight handlers get this long, then are cancelled
    )


async def start(app: web.Application, cfg: ServerConfig, port: int | None = None) -> tuple[GatedRunner, int]:
    """Start serving ``app`` on ``cfg.host`` (and ``port``, default ``cfg.port``; 0 picks a free one)."""
    runner = make_runner(app, cfg)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port if port is None else port)
    await site.start()
    return runner, site.port


def readiness_of(app: web.Application) -> Readiness:
    """The app's readiness flag (``create_app`` sets one; a bare app gets a fresh one, unreported)."""
    readiness = app.get(READINESS_KEY)
    return readiness if readiness is not None else Readiness()


async def drain(
    runner: web.BaseRunner, readiness: Readiness, cfg: ServerConfig, cut_delay: asyncio.Event | None = None
) -> None:
    """The graceful stop (see the module's docstring); ``cut_delay`` set ends the pre-drain delay early."""
    readiness.drain()
    started = time.monotonic()
    if cfg.shutdown_delay_s > 0:
        log.info("stopping: readiness false, still serving for server.shutdown_delay_s (%g s)", cfg.shutdown_delay_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for((cut_delay or asyncio.Event()).wait(), cfg.shutdown_delay_s)
    server = runner.server
    in_flight = len(getattr(server, "connections", ()) or ())
    log.info(
        "stopping: listener closed; %d open connection(s) get up to server.drain_timeout_s (%g s) to finish",
        in_flight, cfg.drain_timeout_s,
    )
    await runner.cleanup()  # sites stopped, idle connections closed, handlers drained; app cleanup: store closed
    log.info("stopped in %.1f s: in-flight requests drained, store flushed and closed", time.monotonic() - started)


async def _serve_until_signalled(runner: GatedRunner, readiness: Readiness, cfg: ServerConfig) -> None:
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    again = asyncio.Event()

    def on_signal() -> None:
        (again if signalled.is_set() else signalled).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, reload_on_signal, runner.app)  # not a stop: the estimators reload
    await runner.setup()  # the app's start-up (store replay, warm-up); a signal meanwhile is kept
    try:
        if signalled.is_set():  # stopped before serving anyone: nothing to drain
            await runner.cleanup()
            return
        await web.TCPSite(runner, cfg.host, cfg.port).start()
        await signalled.wait()
    except BaseException:
        await runner.cleanup()  # the port was taken, or the task was cancelled: still a clean stop
        raise
    await drain(runner, readiness, cfg, cut_delay=again)


def run(app: web.Application, cfg: ServerConfig) -> None:
    """Serve through the connection gate until SIGINT/SIGTERM, then :func:`drain`."""
    loop = asyncio.new_event_loop()
    runner = make_runner(app, cfg)  # our own signal handlers: readiness first, then aiohttp's cleanup
    main = loop.create_task(_serve_until_signalled(runner, readiness_of(app), cfg))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            rest = asyncio.all_tasks(loop)
            for task in rest:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
