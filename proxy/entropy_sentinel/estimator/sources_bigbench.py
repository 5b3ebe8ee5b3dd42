"""Benchmark rows from ``bigbench``'s arithmetic task files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BIGBENCH_ARITH = "bigbench-1.0.0/bigbench/benchmark_tasks/arithmetic"
_ARITH_OPS = {"addition": "plus", "subtraction": "minus", "multiplication": "times", "division": "divided by"}


def parse_bigbench_arithmetic(root: Path) -> list[dict[str, Any]]:
    """BIG-bench ``arithmetic``: 20 subtasks, 1-5 digits x four operations (15,023 questions;
    1-digit division has 23, other 1-digit ones 100, 2-digit division 200, 3-digit division 500,
    the rest 1,000). Division questions are exact integer divisions."""
    rows = []
    for digits in range(1, 6):
        for op_name, op_word in _ARITH_OPS.items():
            task = json.loads((root / BIGBENCH_ARITH / f"{digits}_digit_{op_name}/task.json").read_text())
            for i, ex in enumerate(task["examples"]):
                rows.append(
                    {
                        "item_id": f"arith-{digits}d-{op_name}-{i}",
                        "question": ex["input"].strip(),
                        "answer": str(ex["target"]).strip(),
                        "kind": "numeric",
                        "meta": {"digits": digits, "op": op_word.replace(" ", "_")},
                    }
                )
    return rows

