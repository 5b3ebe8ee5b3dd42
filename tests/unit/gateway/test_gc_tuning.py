"""settle_heap: start-up's heap frozen out of the collector's way, young collections rarer, once per process."""

from __future__ import annotations

import gc

from entropy_sentinel.gateway import gc_tuning


def test_settle_heap_freezes_once_and_raises_the_young_threshold(monkeypatch):
    gc_tuning.settle_heap()  # whether or not an app of this test process already did
    assert gc.get_threshold()[0] == gc_tuning.GEN0_THRESHOLD
    assert gc.get_freeze_count() > 0
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    gc_tuning.settle_heap()
    assert calls == []  # a second app in the same process does not freeze again
