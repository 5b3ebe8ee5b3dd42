"""Benchmark rows from ``bigbench``'s task files: arithmetic, and the generative tasks with short,
exactly gradable answers (word forms, word games, counting, facts, unit sums)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIGBENCH_TASKS = "bigbench-1.0.0/bigbench/benchmark_tasks"
BIGBENCH_ARITH = f"{BIGBENCH_TASKS}/arithmetic"
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


@dataclass(frozen=True)
class GenerativeTask:
    """A BIG-bench task whose examples have a short ``target`` (or a list of accepted targets).

    ``question`` formats the example's ``input`` into the question the prompt asks; ``kind`` is the
    item kind the grader uses. Extra accepted targets go to ``meta["aliases"]`` (the grader accepts
    any; like all item meta they travel into the trace rows: short gold answers, no prompt text).
    For ``numeric`` items the first numeric target is the answer (object_counting lists
    ``["three", "3"]``). ``meta`` gives an item's extra meta from (question input, answer): what the
    benchmark's difficulty ladders filter on.
    """

    path: str  # under benchmark_tasks/
    question: str = "{input}"
    kind: str = "exact"
    inverted: bool = False  # ask for the input given the target (singular of a plural)
    meta: Callable[[str, str], dict[str, Any]] | None = None

    @property
    def member(self) -> str:
        return f"{BIGBENCH_TASKS}/{self.path}/"


_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")
_RELATION = re.compile(r"The (.+?) of ")  # qa_wikidata: "The native language of X is"
#: qa_wikidata relations grouped into slices of one difficulty each
WIKIDATA_LANGUAGE = ("native language", "language", "official language", "writing languages")
WIKIDATA_COUNTRY = ("country", "original country")


def _relation(text: str, _answer: str) -> dict[str, Any]:
    found = _RELATION.match(text)
    return {"relation": found.group(1) if found else "other"}


def _first_number_digits(text: str, _answer: str) -> dict[str, Any]:
    return {"digits": len(_NUMERIC.findall(text)[0].lstrip("-").split(".")[0])}


#: source name -> task. The questions are worded for a few-shot ``Question: ... Answer:`` prompt.
GENERATIVE_TASKS: dict[str, GenerativeTask] = {
    "ling_plural": GenerativeTask("linguistic_mappings/plural_json", 'What is the plural of "{input}"?'),
    "ling_past_tense": GenerativeTask("linguistic_mappings/past_tense_json", 'What is the past tense of "{input}"?'),
    "ling_singular": GenerativeTask(
        "linguistic_mappings/plural_json", 'What is the singular of "{input}"?', inverted=True
    ),
    "ling_base_form": GenerativeTask(
        "linguistic_mappings/past_tense_json", 'What is the base form of the verb "{input}"?', inverted=True
    ),
    "ling_negation": GenerativeTask("linguistic_mappings/sentence_negation_json", 'Negate the sentence "{input}".'),
    "ling_question": GenerativeTask(
        "linguistic_mappings/question_formation_json", 'Turn the sentence "{input}" into a yes/no question.'
    ),
    "ling_pronoun": GenerativeTask(
        "linguistic_mappings/pronoun_replacement_json",
        'Replace the repeated name with a pronoun in "{input}".',
    ),
    "word_unscrambling": GenerativeTask("word_unscrambling", "{input}"),
    "word_sorting": GenerativeTask(
        "word_sorting", "Sort the words alphabetically: {input}", meta=lambda text, _: {"words": len(text.split())}
    ),
    "object_counting": GenerativeTask(
        "object_counting", "{input}", kind="numeric", meta=lambda _, answer: {"count": int(answer)}
    ),
    "periodic_elements": GenerativeTask("periodic_elements/subtask_1", "{input}"),
    "qa_wikidata": GenerativeTask("qa_wikidata", "Complete the sentence: {input} ...", meta=_relation),
    "unit_addition": GenerativeTask(
        "unit_conversion/unit_addition_same", "{input}", kind="numeric", meta=_first_number_digits
    ),
}



def parse_bigbench_generative(root: Path, name: str) -> list[dict[str, Any]]:
    """Rows of one :data:`GENERATIVE_TASKS` task, in the task file's order."""
    task = GENERATIVE_TASKS[name]
    data = json.loads((root / task.member / "task.json").read_text())
    rows = []
    for i, ex in enumerate(data["examples"]):
        targets = ex["target"] if isinstance(ex["target"], list) else [ex["target"]]
        targets = [str(t).strip() for t in targets if str(t).strip()]
        text = ex["input"].strip()
        if task.inverted:
            text, targets = targets[0], [text]
        if task.kind == "numeric":
            numeric = [t for t in targets if _NUMERIC.fullmatch(t)]
            if not numeric:
                continue
            answer = numeric[0]
            aliases: list[str] = []
        else:
            answer, aliases = targets[0], targets[1:]
        meta = task.meta(text, answer) if task.meta is not None else {}
        if aliases:
            meta["aliases"] = aliases
        rows.append(
            {
                "item_id": f"{name}-{i}",
                "question": task.question.format(input=text),
                "answer": answer,
                "kind": task.kind,
                "meta": meta,
            }
        )
    return rows
