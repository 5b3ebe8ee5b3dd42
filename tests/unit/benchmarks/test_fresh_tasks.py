"""The committed fresh task files (data/tasks/, scripts/make_fresh_tasks.py): their gold answers are right.

Those files' labels are what docs/results/fresh/ reports the shipped estimator against; a wrong gold
answer would be a wrong label. The number tasks are checked here in full, by an independent reading
of the number words; the others by shape.
"""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from entropy_sentinel.benchmarks.graders import grade
from entropy_sentinel.benchmarks.loader import load_benchmark

from tests.paths import ROOT

TASKS = ROOT / "data" / "tasks"
UNITS = {w: i for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
))}
TENS = {
    w: 10 * i for i, w in enumerate(("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"), 2)
}


def read_number(text: str) -> int:
    """'three hundred and forty-two' -> 342, by hand (not the generator's own code)."""
    total = 0
    for word in re.split(r"[\s-]+", text.strip()):
        if word == "and":
            continue
        if word == "hundred":
            total *= 100
        else:
            total += UNITS.get(word, TENS.get(word, -10_000))
    return total


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS / f"{name}.jsonl").read_text().splitlines()]


def test_read_number_by_hand():
    assert read_number("three hundred forty-two") == 342
    assert read_number("nine hundred and nine") == 909
    assert read_number("twenty one") == 21


def test_words_of_number_gold_and_aliases_spell_the_number_asked():
    for row in rows("words_of_number"):
        asked = int(re.search(r"number (\d+) in words", row["question"]).group(1))
        for spelling in (row["answer"], *row["meta"]["aliases"]):
            assert read_number(spelling) == asked, row


def test_digits_of_words_gold_is_the_number_spelled():
    for row in rows("digits_of_words"):
        spelled = re.search(r'Write "(.+)" in digits', row["question"]).group(1)
        assert read_number(spelled) == int(row["answer"]), row


def test_next_number_and_letters_gold():
    for row in rows("next_number"):
        assert int(row["answer"]) == int(re.search(r"after (\d+)\?", row["question"]).group(1)) + 1
    for row in rows("letters_in_word"):
        assert int(row["answer"]) == len(re.search(r'word "([a-z]+)"', row["question"]).group(1))


@pytest.mark.parametrize("path", sorted(TASKS.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_file_loads_as_a_user_benchmark_with_unique_items_and_its_gold_grades_correct(path):
    items = load_benchmark(str(path))
    assert 200 <= len(items) <= 300 and len({i.item_id for i in items}) == len(items)
    for item in items:
        assert item.benchmark == path.stem and grade(item, f" {item.answer}\n").correct
        for alias in item.meta.get("aliases", ()):
            assert grade(item, f" {alias}\n").correct


def test_the_generator_spells_numbers_as_read_back():
    spec = importlib.util.spec_from_file_location("make_fresh_tasks", ROOT / "scripts" / "make_fresh_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for n in (21, 40, 100, 101, 342, 999):
        spellings = module.number_spellings(n)
        assert len(spellings) == len(set(spellings)) and all(read_number(s) == n for s in spellings)
    assert module.words(342) == "three hundred forty-two"
    assert module.words(342, and_=True) == "three hundred and forty-two"
