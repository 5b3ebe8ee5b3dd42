"""Readiness: whether a load balancer should send this replica new traffic (``GET /sentinel/readyz``).

It is true from the moment the port opens (start-up is done by then) until a SIGTERM/SIGINT starts
the drain (:func:`entropy_sentinel.gateway.server.run`): from then on ``/sentinel/readyz`` answers
503, so the load balancer (Kubernetes' endpoints controller, nginx's health check) takes the replica
out while it still serves what reaches it. Liveness (``/sentinel/healthz``) stays 200 throughout.
"""

from __future__ import annotations

import time

from aiohttp import web

__all__ = ["READINESS_KEY", "Readiness"]


class Readiness:
    def __init__(self) -> None:
        #: UNIX time the drain began; None while serving normally
        self.draining_since: float | None = None

    @property
    def ready(self) -> bool:
        return self.draining_since is None

    def drain(self) -> None:
        """Readiness false from now on (idempotent: the first call's time is kept)."""
        if self.draining_since is None:
            self.draining_since = time.time()


READINESS_KEY = web.AppKey("readiness", Readiness)
