"""The running proxy's estimators: which catalog the instrumented routes use, and its hot reload.

The gateway never loads an artifact (it does not import ``estimator``): it receives a
:class:`~entropy_sentinel.types.ScorerCatalog` (``serve`` builds one from ``estimator.models``), or
a bare :class:`~entropy_sentinel.types.Scorer`, which :func:`as_catalog` turns into one scorer for
every model (:class:`AnyModel`: tests and embedders).

A reload (``POST /sentinel/v1/estimators/reload``, or SIGHUP to ``serve``) asks the current catalog
for a fresh one (:meth:`~entropy_sentinel.types.ScorerCatalog.reloaded`: the configuration file's
estimator section re-read, every artifact loaded again), in a worker thread, and swaps the
:class:`~entropy_sentinel.gateway.instrumented.Instrumenter`'s reference in one assignment on the
loop: a request or stream in flight keeps the catalog it started with, the next one gets the new
one, nothing is dropped. A failure (:class:`~entropy_sentinel.types.EstimatorLoadError`) changes
nothing. Reloads run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from entropy_sentinel.gateway.instrumented import Instrumenter
from entropy_sentinel.monitor.slices import SliceRegistry
from entropy_sentinel.stats.intervals import Tau, transfer_tau
from entropy_sentinel.types import EstimatorLoadError, Scorer, ScorerCatalog

__all__ = ["RELOADS_KEY", "AnyModel", "EstimatorReloads", "as_catalog", "interval_tau", "reload_on_signal"]

log = logging.getLogger(__name__)


class AnyModel:
    """One scorer for every model (a :class:`ScorerCatalog` of the single glob ``*``); not reloadable."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def __len__(self) -> int:
        return 1

    def scorer_for(self, model: str | None) -> Scorer:
        return self.scorer

    def scorers(self) -> tuple[Scorer]:
        return (self.scorer,)

    def describe(self) -> list[dict[str, Any]]:
        meta = getattr(self.scorer, "metadata", None) or {}
        return [{"glob": "*", "artifact": None, "path": None, "sha256": None, "model": meta.get("model"),
                 "estimator": meta.get("estimator"), "scoring": True}]

    def check_models(self, upstream_models: Sequence[str]) -> list[str]:
        check = getattr(self.scorer, "check_model", None)
        warning = check(list(upstream_models)) if check is not None else None
        return [warning] if warning else []

    def reloaded(self) -> ScorerCatalog:
        raise EstimatorLoadError(
            "this proxy was given one scorer, not an estimator map read from a configuration: nothing to reload",
            kind="unavailable",
        )


def as_catalog(scorer: Scorer | ScorerCatalog | None) -> ScorerCatalog | None:
    if scorer is None or isinstance(scorer, ScorerCatalog):
        return scorer
    return AnyModel(scorer)


def interval_tau(estimators: ScorerCatalog | None, level: float) -> Tau:
    """The slices' interval spread τ, from the first estimator of the catalog (configuration order: the
    builtin's by default). Slices mix models, so one τ serves them all for now; a per-model τ would
    need per-model slices."""
    scorers = estimators.scorers() if estimators else ()
    metadata = (getattr(scorers[0], "metadata", None) or {}) if scorers else {}
    return transfer_tau(metadata.get("validation"), level)


def _summary(estimators: ScorerCatalog) -> str:
    parts = [
        f"{e['glob']} -> {e['artifact']} ({(e['sha256'] or '')[:12] or 'unscored'})" for e in estimators.describe()
    ]
    return ", ".join(parts) or "none (no scoring)"


class EstimatorReloads:
    """Swaps a freshly loaded catalog into the :class:`Instrumenter`, one reload at a time."""

    def __init__(self, instrumenter: Instrumenter, slices: SliceRegistry | None = None) -> None:
        self.instrumenter = instrumenter
        self.slices = slices
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.reloaded_at: float | None = None

    async def reload(self) -> ScorerCatalog:
        """The new catalog, now in use; raises :class:`EstimatorLoadError` and keeps the old one."""
        async with self._lock:
            current = self.instrumenter.estimators
            if current is None:
                raise EstimatorLoadError("this proxy was started without an estimator map: nothing to reload",
                                         kind="unavailable")
            fresh = await asyncio.to_thread(current.reloaded)  # artifacts load off the loop
            self.instrumenter.estimators = fresh  # one assignment: in-flight requests hold the old reference
            if self.slices is not None:  # the interval's spread follows the (new) first estimator
                self.slices.tau = interval_tau(fresh, self.slices.level)
            self.reloaded_at = time.time()
            log.info("estimators reloaded: %s", _summary(fresh))
            return fresh

    async def _reload_logged(self, why: str) -> None:
        try:
            await self.reload()
        except EstimatorLoadError as exc:
            log.error("%s: estimators not reloaded, the previous ones stay: %s", why, exc)
        except Exception:  # a bug of ours: logged, the proxy goes on with the previous estimators
            log.exception("%s: estimators not reloaded, the previous ones stay", why)

    def in_background(self, why: str) -> None:
        task = asyncio.get_running_loop().create_task(self._reload_logged(why), name="sentinel-estimator-reload")
        self._background.add(task)
        task.add_done_callback(self._background.discard)


#: set once the app has started (its Instrumenter exists)
RELOADS_KEY = web.AppKey("estimator_reloads", EstimatorReloads)


def reload_on_signal(app: web.Application) -> None:
    """SIGHUP: reload the estimators in the background; the outcome goes to the log."""
    reloads = app.get(RELOADS_KEY)
    if reloads is None:
        log.warning("SIGHUP before the proxy finished starting: estimators not reloaded")
        return
    reloads.in_background("SIGHUP")
