"""The scoring worker: turns a finished response's trajectories into features and P(correct), on the
event loop when that is cheap, else in one thread that batches the responses finishing together into
one estimator call.

Per choice the caller gets its token count, its fewest candidates and its statistics under every
entropy variant (all four computed in one vectorised pass,
:meth:`~entropy_sentinel.signal.trajectory.Trajectory.features_by_variant`), and the scores when
asked.

**Where it runs.** The worker measures what each estimator costs per token (with features: CPU
seconds in the thread, ``time.thread_time``, so waiting for the GIL does not count; wall seconds on
the loop). A response whose expected cost is within ``inline_budget_s`` is scored on the loop, at
once: with the proxy on one core, handing ~1 ms of work to a thread that must win the GIL from the
loop delayed the score before ``[DONE]`` by up to a switch interval (bench/throughput.py, 64 paced
streams, two runs: [DONE] p99 +6.6 -> +1.5 ms and +4.4 -> +1.6 ms). A response that would cost
more (a long one, a slow estimator), or any response until its estimator has been measured, goes to
the thread, which keeps the loop free. An estimator that once took far longer on the loop than
measured (one that waits on I/O) is kept to the thread for good.

**The thread.** One, so the estimator sees one call at a time; responses that finish while it is
busy are scored together in its next call, one predict over all their rows per estimator (each
response names its own: with estimators keyed by model, a batch holds one call per estimator). A
batch whose call fails is scored again one response at a time, so one response's failure never
unscores another. The thread starts with the first response it gets and ends after ``idle_s``
without one (a later response starts it again), so an idle proxy, or a test that builds many, keeps
no thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
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
    tokens: int = 0
    cpu_s: float = 0.0  # the thread's CPU time spent on this job (its share of a batched call)


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


#: an estimator that took this many times its measured cost on the loop is kept to the thread
_OVERRUN = 10.0
#: weight of the newest measurement in an estimator's running cost per token
_EWMA = 0.2
#: estimators whose cost is remembered (a reload brings new ones; the oldest are forgotten)
_REMEMBERED = 256


class ScoringWorker:
    def __init__(self, idle_s: float = 30.0, inline_budget_s: float = 0.0) -> None:
        self.idle_s = idle_s
        #: a response expected to cost at most this is scored on the loop (0: always the thread)
        self.inline_budget_s = inline_budget_s
        self._per_token: dict[int, float] = {}  # id(scorer) -> seconds per token, running mean
        self._pinned: set[int] = set()  # scorers kept to the thread for good
        #: responses scored on the loop
        self.inline = 0
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
        expected = self._expected(scorer, trajectories)
        if expected is not None and expected <= self.inline_budget_s:
            t0 = time.perf_counter()
            self._process([job])
            took = time.perf_counter() - t0
            self.inline += 1
            if took > max(_OVERRUN * expected, 2 * self.inline_budget_s):  # it waits on something: the thread's
                self._pinned.add(id(scorer))
            if job.failure is not None:
                raise job.failure
            self._learn(id(scorer), took, job.tokens)
            return job.summary  # type: ignore[return-value]
        with self._lock:
            self._queue.put(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sentinel-scoring", daemon=True)
                self._thread.start()
        return await job.future

    def cost_per_token(self, scorer: Scorer | None) -> float | None:
        """What ``scorer`` (with the features) has been measured to cost per token, in seconds; None: not yet."""
        return self._per_token.get(id(scorer))

    def _expected(self, scorer: Scorer | None, trajectories: Sequence[tuple[int, Trajectory]]) -> float | None:
        """Seconds this response is expected to take; None: not to be scored on the loop."""
        key = id(scorer)
        per_token = self._per_token.get(key)
        if self.inline_budget_s <= 0 or per_token is None or key in self._pinned:
            return None
        return per_token * max(sum(len(traj) for _, traj in trajectories), 1)

    def _learn(self, key: int, seconds: float, tokens: int) -> None:
        per_token = seconds / max(tokens, 1)
        old = self._per_token.get(key)
        if old is None and len(self._per_token) >= _REMEMBERED:
            self._per_token.clear()
        self._per_token[key] = per_token if old is None else old + _EWMA * (per_token - old)

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
            self._process(jobs, clock=time.thread_time)
            for job in jobs:
                if job.failure is None:
                    self._learn(id(job.scorer), job.cpu_s, job.tokens)
                job.loop.call_soon_threadsafe(_resolve, job)

    def _process(self, jobs: list[_Job], clock: Callable[[], float] | None = None) -> None:
        """Summaries and scores of ``jobs``; with ``clock``, each job's share of its time in ``cpu_s``."""
        scoring: list[_Job] = []
        for job in jobs:
            t0 = clock() if clock else 0.0
            try:
                choices = summarize(job.trajectories)
            except Exception as exc:  # a bug of ours: raised where the response is finished
                job.failure = exc
                continue
            job.summary = Summary(choices)
            job.tokens = sum(c.tokens for c in choices)
            if clock:
                job.cpu_s = clock() - t0
            if job.scorer is not None and choices and all(c.tokens for c in choices):
                job.rows = [c.features_by_variant for c in choices]
                scoring.append(job)
        by_scorer: dict[int, list[_Job]] = {}
        for job in scoring:  # one call per estimator: each response is scored by its own model's
            by_scorer.setdefault(id(job.scorer), []).append(job)
        for group in by_scorer.values():
            t0 = clock() if clock else 0.0
            try:
                self._score(group)
            except Exception:  # one at a time: a response's failure stays its own
                for job in group:
                    try:
                        self._score([job])
                    except Exception as exc:
                        job.summary.error = exc  # type: ignore[union-attr]
            if clock:  # the call's time, shared by rows
                share = (clock() - t0) / max(sum(len(job.rows) for job in group), 1)
                for job in group:
                    job.cpu_s += share * len(job.rows)

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
