"""Slice tags, bounded registry, counters and intervals: pure units, values by hand."""

import math
import sqlite3
import time

import pytest
from entropy_sentinel.monitor.slices import OTHER, SliceError, SliceRegistry, canonical, parse_slice
from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.stats.intervals import label_free, observed, recalibrated, transfer_rms, z_value


def test_slice_header_parses_and_canonicalizes():
    tags = parse_slice(" tenant=acme , domain=algebra")
    assert tags == {"tenant": "acme", "domain": "algebra"}
    assert canonical(tags) == "domain=algebra,tenant=acme"
    assert parse_slice(None) == {} and parse_slice("") == {}


@pytest.mark.parametrize(
    "header",
    ["a=1,b=2,c=3,d=4,e=5", "tenant=<script>", "tenant", "=x", "k=" + "x" * 65, "a=1,a=2", "k=v w", "k=\u00e9"],
)
def test_bad_slice_headers_are_refused_without_echo(header):
    with pytest.raises(SliceError) as err:
        parse_slice(header)
    assert "<script>" not in str(err.value) and "x" * 65 not in str(err.value)


def test_registry_is_bounded_and_overflows_to_other():
    reg = SliceRegistry(max_slices=2)
    assert [reg.admit(k) for k in ("a=1", "b=2", "c=3", "a=1")] == ["a=1", "b=2", OTHER, "a=1"]
    reg.record_score(OTHER, 0.5)
    assert sorted(s["slice"] for s in reg.snapshot()) == ["a=1", "b=2", OTHER]


def test_windows_sum_only_recent_buckets():
    reg = SliceRegistry()
    now = 1_000_000.0
    reg.admit("s=1")
    reg.record_score("s=1", 1.0, now - 2 * 86400)  # two days ago: lifetime only
    reg.record_score("s=1", 0.0, now - 7200)  # two hours ago: 24h and lifetime
    reg.record_score("s=1", 0.5, now)  # now: every window
    w = reg.summary("s=1", now)["windows"]
    assert (w["lifetime"]["n_scored"], w["24h"]["n_scored"], w["1h"]["n_scored"]) == (3, 2, 1)
    assert w["lifetime"]["estimate"] == pytest.approx(0.5) and w["24h"]["estimate"] == pytest.approx(0.25)


def test_label_free_interval_by_hand():
    # p = (0.2, 0.8): estimate 0.5, sum p(1-p) = 0.32, sampling sd = sqrt(0.32)/2
    z = z_value(0.9)
    iv = label_free(2, 1.0, 0.68, 0.9)
    assert iv.estimate == 0.5 and iv.upper - iv.estimate == pytest.approx(z * math.sqrt(0.32) / 2)
    wide = label_free(2, 1.0, 0.68, 0.9, tau=0.1)
    assert wide.upper - wide.estimate == pytest.approx(z * math.sqrt(0.32 / 4 + 0.01))
    assert label_free(0, 0, 0) is None


def test_wilson_and_prediction_powered_intervals_by_hand():
    w = observed(10, 7, 0.95)
    assert (w.lower, w.upper) == pytest.approx((0.3968, 0.8922), abs=1e-3)  # textbook Wilson 7/10
    # all p = 0.4 over n = 100; 50 labelled residuals, half +0.6 half -0.4: mean 0.1, sample var 0.25*50/49
    r = recalibrated(100, 40.0, 16.0, 50, 5.0, 25 * 0.36 + 25 * 0.16, 0.9)
    assert r.estimate == pytest.approx(0.5)
    # var(p) = 0; the 50 labels are half the slice: finite-population factor (1 - 50/100)
    assert r.upper - r.estimate == pytest.approx(z_value(0.9) * math.sqrt(0.25 * 50 / 49 / 50 * (1 - 50 / 100)))
    validation = {"per_benchmark": {"a": {"est_acc": 0.5, "true_acc": 0.2}, "b": {"est_acc": 0.1, "true_acc": 0.5}}}
    assert transfer_rms(validation) == pytest.approx(math.sqrt((0.09 + 0.16) / 2))


def test_store_commits_in_batches_and_a_clean_close_loses_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "s.db", batch_size=7, flush_interval_s=30)
    for i in range(25):
        store.enqueue({"request_id": f"r{i}", "ts": time.time(), "slice": "a=1", "route": "chat", "scored": True,
                       "p_correct": i / 25, "features": {"mean": 1.0}})
    store.label("r3", 1)
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*), SUM(label) FROM requests").fetchone() == (25, 1)
    again = SQLiteStore(tmp_path / "s.db")
    assert again.get("r3")["features"] == {"mean": 1.0} and len(again.export()) == 25
    again.close()


def test_an_event_older_than_the_ring_does_not_wipe_newer_counts():
    reg = SliceRegistry()
    now = 1_000_000.0
    reg.admit("s=1")
    reg.record_score("s=1", 1.0, now)
    reg.record_score("s=1", 0.0, now - 86400)  # same ring slot, one day earlier, arriving late
    w = reg.summary("s=1", now)["windows"]
    assert w["1h"]["n_scored"] == 1 and w["1h"]["estimate"] == 1.0
    assert w["lifetime"]["n_scored"] == 2


def test_replay_counts_like_the_live_path():
    live, replayed = SliceRegistry(), SliceRegistry()
    now = 1_000_000.0
    live.record_request("s=1", now)
    for q in (0.2, 0.6):
        live.record_score("s=1", q, now)
    live.record_label("s=1", 1, 0.2, now + 600)
    replayed.replay("s=1", now, [0.2, 0.6], 0.2, 1, now + 600)
    assert replayed.summary("s=1", now + 600) == live.summary("s=1", now + 600)
