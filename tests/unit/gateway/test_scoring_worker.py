"""The scoring worker: features and scores off the loop, responses finishing together scored in one
estimator call, one response's failure kept its own, no thread left behind when idle."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from entropy_sentinel.gateway.scoring import ScoringWorker
from entropy_sentinel.signal import Trajectory


def trajectory(tokens: int, seed: float = 0.0) -> Trajectory:
    traj = Trajectory()
    for i in range(tokens):
        traj.add([3], [-0.1 - seed, -2.0 - i % 5, -3.5], [-0.1 - seed])
    return traj


class SlowScorer:
    """Mean entropy as the score; records each call's size; the first call waits, so others queue."""

    metadata: dict = {}

    def __init__(self, fail_when: float | None = None) -> None:
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.fail_when = fail_when

    def __call__(self, rows):
        self.threads.add(threading.current_thread().name)
        if not self.calls:
            time.sleep(0.2)
        self.calls.append(len(rows))
        if self.fail_when is not None and any(r["topk"]["nll_mean"] == self.fail_when for r in rows):
            raise ValueError("this row")
        return [min(1.0, r["topk"]["mean"]) for r in rows]

    def check_model(self, ids):
        return None


async def test_responses_finishing_together_share_one_call_with_the_same_scores():
    scorer = SlowScorer()
    worker = ScoringWorker()
    trajs = [[(0, trajectory(5 + i, i / 10))] for i in range(6)]
    alone = [scorer([t.features_by_variant() for _, t in tr]) for tr in trajs]
    scorer.calls.clear()
    scorer.threads.clear()
    summaries = await asyncio.gather(*(worker.summarize(tr, scorer) for tr in trajs))
    assert [s.scores for s in summaries] == alone
    assert scorer.calls[0] == 1 and sum(scorer.calls) == 6 and len(scorer.calls) < 6  # batched
    assert scorer.threads == {"sentinel-scoring"}
    s = summaries[2]
    assert s.choices[0].tokens == 7 and s.choices[0].min_candidates == 3
    assert s.choices[0].features_by_variant == trajs[2][0][1].features_by_variant()


async def test_a_failing_response_does_not_unscore_the_others():
    bad = trajectory(4, 0.5)
    bad_nll = bad.features_by_variant()["topk"]["nll_mean"]
    worker, scorer = ScoringWorker(), SlowScorer(fail_when=bad_nll)
    summaries = await asyncio.gather(
        worker.summarize([(0, trajectory(3))], scorer),
        worker.summarize([(0, trajectory(4))], scorer),
        worker.summarize([(0, bad)], scorer),
        worker.summarize([(0, trajectory(6))], scorer),
    )
    assert [s.error is None for s in summaries] == [True, True, False, True]
    assert summaries[2].scores is None and isinstance(summaries[2].error, ValueError)
    assert all(s.scores is not None for i, s in enumerate(summaries) if i != 2)


async def test_not_scored_when_not_asked_or_a_choice_has_no_tokens():
    scorer = SlowScorer()
    worker = ScoringWorker()
    unasked = await worker.summarize([(0, trajectory(3))], None)
    empty = await worker.summarize([(0, trajectory(3)), (1, Trajectory())], scorer)
    nothing = await worker.summarize([], scorer)
    assert unasked.scores is None and empty.scores is None and nothing.scores is None
    assert [c.tokens for c in empty.choices] == [3, 0] and not scorer.calls
    assert unasked.choices[0].tokens == 3  # features without a scorer


async def test_a_cancelled_request_does_not_break_the_worker():
    worker, scorer = ScoringWorker(), SlowScorer()
    first = asyncio.ensure_future(worker.summarize([(0, trajectory(3))], scorer))
    await asyncio.sleep(0.05)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    later = await worker.summarize([(0, trajectory(3))], scorer)
    assert later.scores is not None


async def test_the_thread_ends_when_idle_and_comes_back():
    worker, scorer = ScoringWorker(idle_s=0.05), SlowScorer()
    await worker.summarize([(0, trajectory(2))], scorer)
    for _ in range(100):
        if worker._thread is None:
            break
        await asyncio.sleep(0.02)
    assert worker._thread is None
    again = await worker.summarize([(0, trajectory(2))], scorer)
    assert again.scores is not None


class OffsetScorer(SlowScorer):
    """SlowScorer's score plus a constant: two estimators that score the same features differently."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = offset

    def __call__(self, rows):
        return [p * 0.5 + self.offset for p in super().__call__(rows)]


async def test_responses_of_different_estimators_in_one_batch_are_each_scored_by_their_own():
    a, b = OffsetScorer(0.0), OffsetScorer(0.5)
    worker = ScoringWorker()
    trajs = [[(0, trajectory(4 + i, i / 10))] for i in range(6)]
    scorers = [a if i % 2 else b for i in range(6)]
    expected = [s([t.features_by_variant() for _, t in tr]) for s, tr in zip(scorers, trajs, strict=True)]
    a.calls.clear(), b.calls.clear()
    blocker = asyncio.ensure_future(worker.summarize([(0, trajectory(2))], a))  # the first call sleeps: the rest batch
    await asyncio.sleep(0.05)
    summaries = await asyncio.gather(*(worker.summarize(tr, s) for s, tr in zip(scorers, trajs, strict=True)))
    await blocker
    assert [s.scores for s in summaries] == expected
    assert sum(a.calls) == 1 + 3 and sum(b.calls) == 3  # each row went to its own estimator only
    assert len(a.calls) == 2 and len(b.calls) == 1  # batched: one call per estimator


# ----------------------------------------------------------------------------- on the loop when cheap


class ThreadScorer(SlowScorer):
    """Records the thread of every call, in order; sleeps ``sleep_s`` in the calls after the first
    (an estimator that waits on I/O: CPU time does not see it, the loop would)."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        super().__init__()
        self.order: list[str] = []
        self.sleep_s = sleep_s

    def __call__(self, rows):
        self.order.append(threading.current_thread().name)
        if self.sleep_s and len(self.order) > 1:
            time.sleep(self.sleep_s)
        self.calls.append(len(rows))
        return [min(1.0, r["topk"]["mean"]) for r in rows]


async def test_a_measured_cheap_estimator_scores_on_the_loop_with_the_same_scores():
    scorer, worker = ThreadScorer(), ScoringWorker(inline_budget_s=1.0)
    trajs = [[(0, trajectory(5 + i, i / 10))] for i in range(3)]
    alone = [scorer([t.features_by_variant() for _, t in tr]) for tr in trajs]
    scorer.order.clear()
    summaries = [await worker.summarize(tr, scorer) for tr in trajs]
    assert [s.scores for s in summaries] == alone
    assert [s.choices[0].features_by_variant for s in summaries] == [
        tr[0][1].features_by_variant() for tr in trajs
    ]
    # unmeasured: the thread; measured, and far within the budget: the loop's own thread, at once
    assert scorer.order == ["sentinel-scoring", threading.current_thread().name, threading.current_thread().name]
    assert worker.inline == 2 and worker.cost_per_token(scorer) is not None


async def test_the_budget_counts_the_response_tokens_and_zero_keeps_the_thread():
    scorer = ThreadScorer()
    never = ScoringWorker(inline_budget_s=0.0)
    for _ in range(3):
        await never.summarize([(0, trajectory(8))], scorer)
    assert never.inline == 0 and set(scorer.order) == {"sentinel-scoring"}

    worker = ScoringWorker(inline_budget_s=1.0)
    await worker.summarize([(0, trajectory(100))], scorer)  # measured in the thread
    per_token = worker.cost_per_token(scorer)
    assert per_token is not None and per_token > 0
    worker.inline_budget_s = per_token * 200  # room for ~200 tokens
    await worker.summarize([(0, trajectory(20))], scorer)
    assert worker.inline == 1
    await worker.summarize([(0, trajectory(3000))], scorer)  # far past it: the thread
    assert worker.inline == 1 and scorer.order[-1] == "sentinel-scoring"


async def test_an_estimator_that_waits_on_io_is_kept_to_the_thread():
    scorer = ThreadScorer(sleep_s=0.05)  # 50 ms of waiting the thread's CPU clock does not count
    worker = ScoringWorker(inline_budget_s=0.005)
    for _ in range(12):  # enough cheap-measured thread calls to bring the running cost back under the budget
        summary = await worker.summarize([(0, trajectory(10))], scorer)
        assert summary.scores is not None
    loop_thread = threading.current_thread().name
    # the first call measured (CPU only) as cheap, the second on the loop overran: the thread for good
    assert scorer.order == ["sentinel-scoring", loop_thread] + ["sentinel-scoring"] * 10
    assert worker.inline == 1


async def test_a_failing_estimator_on_the_loop_leaves_the_response_unscored_not_broken():
    class FailsLater(ThreadScorer):
        def __call__(self, rows):
            if self.order:
                self.order.append(threading.current_thread().name)
                raise ValueError("estimator broke")
            return super().__call__(rows)

    scorer, worker = FailsLater(), ScoringWorker(inline_budget_s=1.0)
    await worker.summarize([(0, trajectory(5))], scorer)
    summary = await worker.summarize([(0, trajectory(5))], scorer)
    assert worker.inline == 1 and summary.scores is None and isinstance(summary.error, ValueError)
    assert summary.choices[0].tokens == 5  # the features are still there
