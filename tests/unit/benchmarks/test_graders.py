"""Graders on real benchmark items (and the LLM judge against a local fake OpenAI server).

BIG-bench items come from ``loaded`` (conftest.py): where BIG-bench is unavailable (gone from PyPI,
no ``SENTINEL_BIGBENCH_DIR``) the tests of its items skip and the rest run."""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading

import pytest
from aiohttp import web
from entropy_sentinel.benchmarks.graders import (
    JUDGE_SYSTEM,
    Grade,
    LLMJudge,
    extract_choice,
    extract_number,
    grade,
    latex_match,
    numbers_match,
)
from entropy_sentinel.benchmarks.loader import Item
from entropy_sentinel.benchmarks.prompts import build_prompt

from tests.harness import served

pytestmark = pytest.mark.timeout(900)  # the first run may download the benchmarks


@pytest.fixture(scope="module")
def by_id(loaded) -> dict[str, Item]:
    """Items of the benchmarks that must load everywhere (BIG-bench's are read from ``loaded``)."""
    out = {}
    for name in ("gsm8k", "math", "arc_easy", "arc_challenge", "sciq", "mmlu_stem", "mawps", "asdiv_a"):
        out.update({i.item_id: i for i in loaded[name]})
    return out


# ---------------------------------------------------------------------------------------------
# numeric


def test_gsm8k_numeric_forms(by_id):
    item = by_id["gsm8k-2"]  # answer 70000
    assert item.answer == "70000"
    right = [
        " 70000",
        " 70,000",
        " $70,000.",
        " $70,000 dollars",
        "70000\n",
        " 70000.00",
        " He made 80000 + 150000 - 160000 = 70000 dollars.",
        " So the answer is 70,000.",
        "The profit is $70,000.\n#### 70000",
        " 70000\n\nQuestion: How many? Answer: 5",
    ]
    wrong = [
        " 7000",
        " 700,000",
        " -70000",
        " 69999",
        " The answer is 7.",
        "",
        " I do not know",
        " 5\n\nQuestion: x\nAnswer: 70000",
    ]
    for c in right:
        assert grade(item, c).correct, c
    for c in wrong:
        assert not grade(item, c).correct, c


def test_numeric_extraction_rules():
    assert extract_number(" 18") == "18"
    assert extract_number(" $1,450,000.") == "1450000"
    assert extract_number(" 16 - 3 - 4 = 9 eggs. 9 * 2 = 18") == "18"  # worked solution: last number
    assert extract_number(" 18 dollars a day, since 9 * 2 is 18") == "18"  # direct answer: first number
    assert extract_number(" 5 + 3 = 8. The answer is 8, not 5.") == "8"
    assert extract_number(" 12 eggs\n#### 24") == "24"
    assert extract_number(" the total is \\boxed{42} eggs") == "42"
    assert extract_number(" 16-3 = 13") == "13"
    assert extract_number(" \u22125") == "-5"
    assert extract_number(" no digits") is None


def test_numeric_tolerance_and_repeating_decimals(by_id):
    item = by_id["mawps-fold0-23"]
    assert item.answer == "0.8333333333333334"
    for c in (" 0.83", " 0.833", " 5/6", " 0.8333333333", " 0.8333333333333334"):
        assert grade(item, c).correct, c
    for c in (" 0.8", " 0.84", " 0.82", " 1", " 6/5"):
        assert not grade(item, c).correct, c
    item = by_id["asdiv_a-fold0-127"]
    assert item.answer == "7.142857142857143"
    assert grade(item, " 7.14").correct and grade(item, " 50/7").correct
    assert not grade(item, " 7.1").correct and not grade(item, " 7").correct
    assert numbers_match("1000000.6", "1000000.5") is True  # within 1e-6 relative
    assert numbers_match("1000003.5", "1000000.5") is False
    assert numbers_match("3152164068", "3152164067") is False  # integer gold: exact
    assert numbers_match("3152164067.0", "3152164067") is True
    assert numbers_match("0.5", "0.5000001") is True
    assert numbers_match("0.25", "0.2") is False  # gold has few decimals: no rounding leniency


def test_bigbench_arithmetic_items(loaded):
    item = next(i for i in loaded["arith_3d"] if i.item_id == "arith-3d-subtraction-0")
    a, b = map(int, re.findall(r"\d+", item.question))
    assert item.answer == str(a - b)
    assert grade(item, f" {a - b}").correct
    assert not grade(item, f" {b - a}").correct if a != b else True
    assert not grade(item, f" {a + b}").correct


# ---------------------------------------------------------------------------------------------
# LaTeX


def test_math_half(by_id):
    for item_id in ("math-algebra-481", "math-algebra-261"):  # \frac{1}{2} and \frac12
        item = by_id[item_id]
        assert item.answer in (r"\frac{1}{2}", r"\frac12")
        for c in (
            r" $\frac{1}{2}$",
            " 0.5",
            r" $\dfrac12$",
            " 1/2",
            r" The answer is $\boxed{\tfrac{1}{2}}$.",
            r" $\frac{2}{4}$",
            r" \frac 12.",
        ):
            assert grade(item, c).correct, (item_id, c)
        for c in (r" $\frac{1}{3}$", " 0.51", " 2", r" $\frac{2}{1}$", "", r" $\boxed{}$"):
            assert not grade(item, c).correct, (item_id, c)


def test_math_sqrt2_over_2(by_id):
    item = by_id["math-geometry-7"]
    assert item.answer == r"\frac{\sqrt{2}}{2}"
    for c in (r" $\sqrt{2}/2$", r" $\frac{\sqrt2}{2}$", r" $\frac{1}{\sqrt{2}}$", r" $\dfrac{\sqrt{2}}{2}$"):
        assert grade(item, c).correct, c
    for c in (r" $\sqrt{2}$", r" $\frac{\sqrt{3}}{2}$", " 0.7", r" $2\sqrt{2}$"):
        assert not grade(item, c).correct, c


def test_math_intervals_and_packaged_corruption(by_id):
    item = by_id["math-algebra-40"]
    assert item.answer == r"(-\infty,-8)\cup (8,\infty)"
    assert grade(item, r" $(-\infty,-8)\cup(8,\infty)$").correct
    assert grade(item, r" $(-\infty, -8) \cup (8, \infty)$").correct
    assert not grade(item, r" $(-\infty,-8]\cup[8,\infty)$").correct
    assert not grade(item, r" $(-8,8)$").correct
    # The package's damaged answer field for this item, "(-\iny,-8)\cup(8,\iny)", is not it.
    assert not latex_match(item.answer, r"(-\iny,-8)\cup(8,\iny)")


def test_math_gold_answers_match_themselves_in_model_form_and_not_others(by_id):
    """Every MATH gold answer, written the way the prompt's exemplars write answers (``$...$``),
    is graded correct; a different integer gold is graded wrong."""
    math_items = [i for i in by_id.values() if i.kind == "latex"]
    rng = random.Random(0)
    sample = rng.sample(math_items, 150)
    for item in sample:
        assert grade(item, f" ${item.answer}$.").correct, item.answer
        assert grade(item, f" The answer is $\\boxed{{{item.answer}}}$.").correct, item.answer
    ints = [i for i in math_items if re.fullmatch(r"-?\d+", i.answer)]
    for item in rng.sample(ints, 60):
        other = next(o for o in ints if o.answer != item.answer and o is not item)
        assert not grade(item, f" ${other.answer}$").correct, (item.answer, other.answer)


def test_latex_units_dollars_and_text(by_id):
    gold = Item("math", "t", "q", r"\$15,\!000", "latex")
    assert grade(gold, " 15000").correct and grade(gold, r" $\$15{,}000$").correct
    assert not grade(gold, " 1500").correct
    name = Item("math", "t", "q", r"\text{Evelyn}", "latex")
    assert grade(name, " Evelyn").correct and not grade(name, " Emily").correct


def test_latex_grading_off_the_main_thread(by_id):
    """collect may grade from a worker thread, where math-verify cannot use SIGALRM timeouts."""
    item = by_id["math-geometry-7"]
    out: list[bool] = []
    t = threading.Thread(
        target=lambda: out.extend([grade(item, r" $\frac{1}{\sqrt{2}}$").correct, grade(item, r" $\sqrt{3}$").correct])
    )
    t.start()
    t.join()
    assert out == [True, False]


# ---------------------------------------------------------------------------------------------
# Multiple choice and exact


def test_choice_letters_on_real_items(by_id):
    for item_id in ("sciq-0", "mmlu-abstract_algebra-0"):
        item = by_id[item_id]
        gold = item.answer
        other = next(letter for letter in "ABCD" if letter != gold)
        text = item.choices["ABCD".index(gold)]
        for c in (
            f" {gold}",
            f" ({gold})",
            f" {gold}.",
            f" {gold}) {text}",
            f" The answer is {gold}.",
            f" I think the answer is ({gold})",
            f" {text}",
            f" {gold.lower()}",
            f"**{gold}**",
        ):
            assert grade(item, c) == Grade(True, gold), (item_id, c)
        for c in (f" {other}", f" ({other})", f" The answer is {other}", f" {other}. {text}"):
            g = grade(item, c)
            assert not g.correct and g.predicted == other, (item_id, c)
        assert grade(item, " E") == Grade(False, None)  # not one of the four
        assert not grade(item, " none of these").correct


def test_choice_five_options_and_arc_letters(by_id):
    item = next(i for i in by_id.values() if i.benchmark == "arc_easy" and len(i.choices) == 5)
    assert grade(item, f" {item.answer}").correct
    wrong = next(letter for letter in "ABCDE" if letter != item.answer)
    assert not grade(item, f" {wrong}").correct
    assert extract_choice(" A dog", ("cat", "dog")) == "A"  # a leading letter counts, as documented
    assert extract_choice(" dog", ("cat", "dog")) == "B"


def test_exact_match():
    item = Item("user", "1", "Capital of France?", "Paris", "exact")
    for c in (" Paris", " paris.", "  PARIS!", ' "Paris"', " Paris\n\nQuestion: next"):
        assert grade(item, c).correct, c
    for c in (" Lyon", " Paris, France", "", " The capital is Paris"):
        assert not grade(item, c).correct, c


def test_unknown_kind():
    with pytest.raises(ValueError):
        grade(Item("b", "1", "q", "a", "essay"), "x")


@pytest.mark.parametrize(
    "name",
    ["gsm8k", "gsm_symbolic", "svamp", "mawps", "asdiv_a", "arith_5d", "math_l2", "arc_challenge", "sciq", "mmlu_stem",
     "plural_rare", "past_irregular", "city_country_mid", "country_capital"],
)
def test_gold_answers_of_every_loader_grade_correct_in_prompt_format(loaded, name):
    """For each benchmark, the gold answer written exactly as the exemplars write theirs is
    correct and a perturbed one is not: prompts and graders agree on the answer format."""
    for item in loaded.load(name, limit=25, seed=5):
        prompt, extras = build_prompt(item)
        assert extras["stop"] and extras["max_tokens"] > 0
        exemplar_answer = re.search(r"Answer: (.*)\n\nQuestion:", prompt).group(1)
        gold = f"${item.answer}$" if exemplar_answer.startswith("$") else item.answer
        assert grade(item, " " + gold).correct, (name, item.item_id, gold)
        if item.kind == "choice":
            bad = next(letter for letter in "ABCDE" if letter != item.answer)
        elif item.kind == "numeric":
            bad = str(float(item.answer) + 1)
        else:
            bad = f"${item.answer}+1$"
        assert not grade(item, " " + bad).correct, (name, item.item_id, bad)


# ---------------------------------------------------------------------------------------------
# LLM judge against a fake OpenAI-compatible server on loopback


@pytest.fixture
async def fake_openai():
    seen: list[dict] = []

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "auth": request.headers.get("Authorization")})
        user = body["messages"][-1]["content"]
        reference = re.search(r"Reference answer: (.*)", user).group(1).strip()
        candidate = user.split("Candidate answer:", 1)[1].strip()
        verdict = "CORRECT" if reference.lower() in candidate.lower() else "INCORRECT"
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": verdict + "."}}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    async with served(app, access_log=None) as base:
        yield f"{base}/v1", seen


async def test_llm_judge_async_and_sync(fake_openai, by_id):
    url, seen = fake_openai
    judge = LLMJudge(url, "judge-model", api_key="sk-judge")
    item = by_id["gsm8k-0"]
    assert (await judge.agrade(item, " She makes 18 dollars.\n\nQuestion: more")) == Grade(
        True, "She makes 18 dollars."
    )
    assert (await judge.agrade(item, " 16")).correct is False  # "INCORRECT" must not read as CORRECT
    sciq = by_id["sciq-0"]
    assert (await judge.agrade(sciq, " D. darwin")).correct is True
    assert (await judge.agrade(sciq, " A. Scopes")).correct is False
    sync = await asyncio.to_thread(judge.grade, item, " 18")
    assert sync.correct is True
    await judge.aclose()
    judge.close()
    assert len(seen) == 5
    first = seen[0]
    assert first["auth"] == "Bearer sk-judge"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0
    assert first["body"]["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM}
    assert "Reference answer: 18" in first["body"]["messages"][1]["content"]
    assert "Question:\nJanet" in first["body"]["messages"][1]["content"]
    assert "more" not in first["body"]["messages"][1]["content"]  # the completion is cut at the next question
    assert "Reference answer: D. darwin" in seen[2]["body"]["messages"][1]["content"]
    assert json.dumps(seen[2]["body"])  # plain JSON body


def test_judge_verdict_parsing():
    assert LLMJudge.parse_verdict("CORRECT") is True
    assert LLMJudge.parse_verdict("correct.") is True
    assert LLMJudge.parse_verdict("INCORRECT") is False
    assert LLMJudge.parse_verdict("Incorrect, because it is not correct") is False
    assert LLMJudge.parse_verdict("") is False and LLMJudge.parse_verdict(None) is False


def test_exact_accepts_aliases():
    item = Item("qa_wikidata", "w-0", "Complete the sentence: The genre of X is ...", "comedy", "exact",
                meta={"aliases": ["parody"]})
    assert grade(item, " Parody.\n").correct
    assert grade(item, "comedy").correct
    assert not grade(item, "drama").correct
