"""Does the label-free interval cover the true slice accuracy as often as it says?

Simulation on the committed labelled traces (real Gemma 3 270M output, data/traces/): each
benchmark in turn is a *new* slice. The shipped estimator is trained on the other benchmarks with
`train` (whose leave-one-benchmark-out validation gives τ, as in production), then random slices
of n responses are drawn from the held-out benchmark and scored; the 90 % interval must cover the
slice's true accuracy about 90 % of the time. Benchmarks share one bias each, so the noise of the
coverage figure is that of a proportion over benchmarks, not over draws.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from entropy_sentinel.estimator.artifact import load_artifact
from entropy_sentinel.estimator.protocol import benchmark_data, group_by_benchmark, read_traces
from entropy_sentinel.estimator.training import train
from entropy_sentinel.monitor.intervals import label_free, transfer_rms

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces" / "gemma-3-270m.jsonl.gz"
LEVEL, SLICE_N, DRAWS = 0.9, 100, 200


def test_label_free_interval_coverage_on_held_out_benchmarks(tmp_path):
    rows = read_traces(TRACES)
    grouped = {b: t for b, t in group_by_benchmark(rows).items() if len(t) >= SLICE_N}
    assert len(grouped) >= 8, "the study's traces must cover at least eight slices"
    rng = np.random.default_rng(0)
    per_benchmark = {}
    for held_out in grouped:
        train_file = tmp_path / f"train-{held_out}.jsonl"
        train_file.write_text("".join(json.dumps(t) + "\n" for b, ts in grouped.items() if b != held_out for t in ts))
        artifact = tmp_path / f"{held_out}.skops"
        metadata = train([train_file], artifact, progress=False)
        estimator, _ = load_artifact(artifact)
        tau = transfer_rms(metadata["validation"])
        data = benchmark_data({held_out: grouped[held_out]}, metadata["features"], metadata["entropy_variant"])[held_out]
        p = estimator.predict_proba(data.matrix(metadata["features"]))[:, 1]
        covered = 0
        for _ in range(DRAWS):
            idx = rng.choice(p.size, SLICE_N, replace=False)
            iv = label_free(SLICE_N, p[idx].sum(), (p[idx] ** 2).sum(), LEVEL, tau)
            covered += iv.lower <= data.y[idx].mean() <= iv.upper
        per_benchmark[held_out] = covered / DRAWS
    coverage = float(np.mean(list(per_benchmark.values())))
    noise = 2 * math.sqrt(LEVEL * (1 - LEVEL) / len(per_benchmark))
    print(f"coverage of the {LEVEL:.0%} interval: {coverage:.3f} (per benchmark: {per_benchmark})")
    assert coverage >= LEVEL - noise, per_benchmark
