"""The scoring worker: one thread that turns a finished response's trajectories into features and
P(correct), batching the responses that finish together into one estimator call.

The event loop hands over the trajectories and awaits, per choice, its token count, its fewest
candidates and its statistics under every entropy variant (all four computed in one vectorised pass,
:meth:`~entropy_sentinel.signal.trajectory.Trajectory.features_by_variant`), and the scores when
asked. None of it runs on the loop, which keeps relaying the other streams. One thread, so the
estimator sees one call at a time (the :class:`~entropy_sentinel.types.Scorer` contract: a worker
thread, never the loop); responses that finish while it is busy are scored together in its next
call, one predict over all their rows per estimator (each response names its own: with estimators
keyed by model, a batch holds one call per estimator). A batch whose call fails is scored again one
response at a time, so one response's failure never unscores another.

The thread starts with the first response and ends after ``idle_s`` without one (a later response
starts it again), so an idle proxy, or a test that builds many, keeps no thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from entropy_sentinel.signal import Trajectory
from entropy_sentinel.types import FeaturesByVariant, Scorer

__all__ = ["ChoiceSummary", "ScoringWorker", "Summary"]


@dataclass(frozen=True, slots=True)
class ChoiceSummary:
    index: int
    tokens: int
    min_candidates: int | None
    features_by_variant: dict[str, dict[str, float]]


@dataclass(slots=True)
class Summary:
    choices: list[ChoiceSummary]
    #: one per choice when scoring was asked and every choice had tokens; else None
    scores: list[float] | None = None
    #: the estimator's failure for this response (scores None)
    error: Exception | None = None


@dataclass(slots=True)
class _Job:
    trajectories: Sequence[tuple[int, Trajectory]]
    scorer: Scorer | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Summary]
    summary: Summary | None = None
    failure: Exception | None = None
    rows: list[FeaturesByVariant] = field(default_factory=list)


def summarize(trajectories: Sequence[tuple[int, Trajectory]]) -> list[ChoiceSummary]:
    return [
        ChoiceSummary(index, len(traj), traj.min_candidates, traj.features_by_variant())
        for index, traj in trajectories
    ]


def _resolve(job: _Job) -> None:
    """On the loop: hand the result over, unless the awaiting request is gone (cancelled)."""
    if job.future.done():
        return
    if job.failure is not None:
        job.future.set_exception(job.failure)
    else:
        job.future.set_result(job.summary)  # type: ignore[arg-type]


class ScoringWorker:
    def __init__(self, idle_s: float = 30.0) -> None:
        self.idle_s = idle_s
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: estimator calls made, and responses scored by them (batching shows as responses > calls)
        self.calls = 0
        self.scored = 0

    async def summarize(self, trajectories: Sequence[tuple[int, Trajectory]], scorer: Scorer | None) -> Summary:
        """Features of every choice of a finished response; its scores too, by ``scorer``, when one is
        given and every choice has tokens."""
        loop = asyncio.get_running_loop()
        job = _Job(trajectories, scorer, loop, loop.create_future())
        with self._lock:
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sentinel-scoring", daemon=True)
                self._thread.start()
        return await job.future

    def _run(self) -> None:
        while True:
            try:
                jobs = [self._queue.get(timeout=self.idle_s)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            while True:  # every response that finished meanwhile joins this batch
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._process(jobs)
            for job in jobs:
                job.loop.call_soon_threadsafe(_resolve, job)

    def _process(self, jobs: list[_Job]) -> None:
        scoring: list[_Job] = []
        for job in jobs:
            try:
                choices = summarize(job.trajectories)
            except Exception as exc:  # a bug of ours: raised where the response is finished
                job.failure = exc
                continue
            job.summary = Summary(choices)
            if job.scorer is not None and choices and all(c.tokens for c in choices):
                job.rows = [c.features_by_variant for c in choices]
                scoring.append(job)
        by_scorer: dict[int, list[_Job]] = {}
        for job in scoring:  # one call per estimator: each response is scored by its own model's
            by_scorer.setdefault(id(job.scorer), []).append(job)
        for group in by_scorer.values():
            try:
                self._score(group)
            except Exception:  # one at a time: a response's failure stays its own
                for job in group:
                    try:
                        self._score([job])
                    except Exception as exc:
                        job.summary.error = exc  # type: ignore[union-attr]

    def _score(self, jobs: list[_Job]) -> None:
        rows = [row for job in jobs for row in job.rows]
        scores = [float(p) for p in jobs[0].scorer(rows)]  # type: ignore[misc]  # one scorer per group
        self.calls += 1
        if len(scores) != len(rows):
            raise ValueError(f"the estimator returned {len(scores)} scores for {len(rows)} rows")
        at = 0
        for job in jobs:
            job.summary.scores = scores[at : at + len(job.rows)]  # type: ignore[union-attr]
            at += len(job.rows)
        self.scored += len(jobs)
