"""Pin the shipped estimator's P(correct) on the committed traces (tests/fixtures/builtin_scores.json).

Run after retraining the builtin artifact on purpose; a refactor must leave the pinned scores alone
(tests/unit/estimator/test_builtin_scores.py compares them).

    .venv/bin/python scripts/pin_builtin_scores.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "data" / "traces" / "gemma-3-270m.jsonl.gz"
OUT = ROOT / "tests" / "fixtures" / "builtin_scores.json"
EVERY = 10  # one trace in ten: ~1,000 rows across every slice


def pinned_rows() -> list[dict]:
    with gzip.open(TRACES, "rt") as f:
        return [json.loads(line) for i, line in enumerate(f) if i % EVERY == 0]


def main() -> None:
    from entropy_sentinel.estimator.scorer import BUILTIN_ARTIFACT, ArtifactScorer

    rows = pinned_rows()
    scorer = ArtifactScorer.load(BUILTIN_ARTIFACT)
    scores = scorer([r["features_by_variant"] for r in rows])
    OUT.write_text(
        json.dumps(
            {
                "artifact_sha256": hashlib.sha256(BUILTIN_ARTIFACT.read_bytes()).hexdigest(),
                "traces": TRACES.relative_to(ROOT).as_posix(),
                "every": EVERY,
                "request_ids": [r["request_id"] for r in rows],
                "p_correct": [round(p, 12) for p in scores],
            },
            indent=0,
        )
        + "\n"
    )
    print(f"{len(rows)} scores pinned -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
