"""Grading a model's completion against a benchmark item: the label the estimator learns from.

The completions are short few-shot continuations (``prompts.py``): what the model wrote after
``Answer:`` up to a stop sequence. The rules, by item kind:

* ``numeric``: the answer is, in order of preference, the number after ``####``, after the last
  "answer is", inside the last ``\\boxed{}``; else, when the first line starts with a number (a
  direct answer such as ``18 dollars.``), that number; else the last number written (a worked
  solution that never states its result). ``$``, thousands commas and a trailing period are
  ignored; ``a/b`` is read as a fraction. An integer gold must be matched exactly (a 1e-6
  tolerance would pass 3152164068 for 5-digit multiplication's 3152164067); a non-integer gold
  within 1e-6 relative, or, when it has a long decimal expansion (``0.8333333333333334`` in
  MAWPS / ASDiv-A), by that value rounded to the prediction's own decimals (at least 2).
* ``latex``: the last ``\\boxed{}``, else what follows "answer is", else the first line; compared
  with the gold answer by a normalised string match, then by ``math-verify`` (symbolic
  equivalence: ``\\frac12`` = ``0.5`` = ``\\dfrac{1}{2}``). If math-verify fails, the string match
  stands.
* ``choice``: the letter the completion starts with (``A``, ``(A)``, ``A.``), else the letter after
  "answer is", else the choice whose text the completion starts with.
* ``exact``: the first line, compared case-, whitespace- and trailing-punctuation-insensitively
  with the answer or any of ``meta["aliases"]`` (tasks that accept several answers).

``LLMJudge`` is an optional model-based grader for free-form answers (any OpenAI-compatible server).
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from entropy_sentinel.benchmarks.loader import Item
from entropy_sentinel.benchmarks.sources import last_boxed

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
REL_TOL = 1e-6


@dataclass(frozen=True)
class Grade:
    correct: bool
    predicted: str | None  # the extracted answer (None: nothing answer-like in the completion)


def grade(item: Item, completion: str) -> Grade:
    """Grade ``completion`` (the model's text after the prompt) against ``item``'s gold answer."""
    text = _cut(completion or "")
    if item.kind == "numeric":
        pred = extract_number(text)
        return Grade(pred is not None and numbers_match(pred, item.answer), pred)
    if item.kind == "latex":
        pred = extract_latex(text)
        return Grade(pred is not None and latex_match(item.answer, pred), pred)
    if item.kind == "choice":
        pred = extract_choice(text, item.choices)
        return Grade(pred is not None and pred == item.answer.strip().upper(), pred)
    if item.kind == "exact":
        line = _first_line(text)
        accepted = {normalize_text(a) for a in (item.answer, *item.meta.get("aliases", ()))}
        return Grade(bool(line) and normalize_text(line) in accepted, line or None)
    raise ValueError(f"unknown item kind {item.kind!r}")


def _cut(text: str) -> str:
    """The answer part of a completion that ran past the prompt's stop sequences (servers and
    styles that did not apply them): up to the next few-shot ``Question:``."""
    return re.split(r"\n\s*(?:Question|Problem|Q):", text, maxsplit=1)[0]


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


# ---------------------------------------------------------------------------------------------
# Numbers

# A number: optional sign (not right after a word or digit: "16-3" is 16 and 3), optional "$",
# digits with or without thousands commas, decimals, an optional "/denominator".
_NUM = r"(?<![\w.])(?:-(?=[$.\d]))?(?:\$\s?)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?"
_NUM_RE = re.compile(_NUM)
_ANSWER_IS = re.compile(r"answer\s*(?:is|=|:)\s*:?\s*(?:\\\(\s*)?(" + _NUM + ")", re.IGNORECASE)
_HASHES = re.compile(r"####\s*(" + _NUM + ")")
_LEADING = re.compile(r"^(?:=\s*)?(" + _NUM + ")")


def _clean_number(raw: str) -> str:
    s = raw.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    return s


def extract_number(text: str) -> str | None:
    """The predicted number of a numeric completion (see the module docstring), as written minus
    ``$``, commas and spaces; ``None`` when the completion has no number."""
    text = text.replace("\u2212", "-")  # unicode minus
    for pattern in (_HASHES, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return _clean_number(found[-1])
    boxed = last_boxed(text)
    if boxed is not None:
        m = _NUM_RE.search(boxed)
        if m:
            return _clean_number(m.group(0))
    first = _first_line(text)
    m = _LEADING.match(first)
    if m and "=" not in first[m.end() :]:  # a direct answer, not the start of a worked solution
        return _clean_number(m.group(1))
    found = _NUM_RE.findall(text)
    return _clean_number(found[-1]) if found else None


def _to_fraction(s: str) -> Fraction | None:
    s = _clean_number(s)
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            d = Fraction(Decimal(den))
            return Fraction(Decimal(num)) / d if d else None
        return Fraction(Decimal(s))
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None


def numbers_match(pred: str, gold: str) -> bool:
    """Exactly equal for an integer ``gold``; else within ``REL_TOL`` relative, or ``pred`` is a
    long-expansion ``gold`` rounded to ``pred``'s decimals (>= 2), half up."""
    p, g = _to_fraction(pred), _to_fraction(gold)
    if p is None or g is None:
        return False
    if p == g:
        return True
    if g.denominator == 1:  # an integer answer is exact: 3152164068 is not 3152164067
        return False
    if math.isclose(float(p), float(g), rel_tol=REL_TOL, abs_tol=1e-12):
        return True
    gold_clean, pred_clean = _clean_number(gold), _clean_number(pred)
    gold_decimals = len(gold_clean.split(".")[1]) if "." in gold_clean and "/" not in gold_clean else 0
    pred_decimals = len(pred_clean.split(".")[1]) if "." in pred_clean and "/" not in pred_clean else 0
    if gold_decimals >= 4 and 2 <= pred_decimals < gold_decimals:
        rounded = Decimal(gold_clean).quantize(Decimal(1).scaleb(-pred_decimals), rounding=ROUND_HALF_UP)
        return rounded == Decimal(pred_clean)
    return False


# ---------------------------------------------------------------------------------------------
# LaTeX

_ANSWER_IS_TEXT = re.compile(r"(?:final answer|answer)\s*(?:is|=|:)\s*:?\s*(.+)", re.IGNORECASE)


def _strip_math(s: str) -> str:
    s = s.strip()
    s = re.sub(r"\s*I hope it is correct\.?$", "", s).strip()
    s = s.rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    return s.rstrip(".").strip()


def extract_latex(text: str) -> str | None:
    """The predicted LaTeX answer: last ``\\boxed{}``, else after "answer is", else the first line;
    of such a line, its last ``$...$`` segment when it mixes words and math."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip() or None
    matches = list(_ANSWER_IS_TEXT.finditer(text))
    line = matches[-1].group(1).splitlines()[0] if matches else _first_line(text)
    line = line.replace("\\$", "\x00")  # an escaped dollar is not a math delimiter
    segments = re.findall(r"\$([^$]+)\$", line)
    if len(segments) > 1 or (segments and _strip_math(line) != segments[0].strip()):
        found = segments[-1].strip()  # "The area is $12$." -> 12
    else:
        found = _strip_math(line)
    return found.replace("\x00", "\\$") or None


def normalize_latex(s: str) -> str:
    """A string form for cheap equality: no spaces, ``\\left``/``\\right``, ``\\!``/``\\,``, ``\\$``,
    ``^\\circ``, ``\\text{}`` wrappers; ``\\dfrac``/``\\tfrac`` -> ``\\frac``; no trailing period."""
    s = _strip_math(s)
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left|\\right", "", s)
    s = re.sub(r"\\[!,;:]|\\ |~", "", s)
    s = s.replace("\\$", "").replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".").lower()


@functools.lru_cache(maxsize=8192)
def _mv_parse(expr: str, timeouts: bool) -> tuple:
    from math_verify import parse

    return tuple(parse(f"${expr}$", parsing_timeout=5 if timeouts else None))  # type: ignore[arg-type]


def latex_match(gold: str, pred: str) -> bool:
    """Normalised string equality, else math-verify's symbolic equivalence (gold first)."""
    if normalize_latex(gold) == normalize_latex(pred):
        return True
    # math-verify bounds its work with SIGALRM, which only the main thread may set.
    timeouts = threading.current_thread() is threading.main_thread()
    try:
        from math_verify import verify

        g, p = _mv_parse(gold, timeouts), _mv_parse(pred, timeouts)
        if not g or not p:
            return False
        return bool(verify(list(g), list(p), timeout_seconds=5 if timeouts else None))
    except Exception as exc:
        log.debug("math-verify failed on %r vs %r: %s", gold, pred, exc)
        return False


# ---------------------------------------------------------------------------------------------
# Multiple choice and exact match

_LEAD_LETTER = re.compile(r"^\s*(?:\*\*)?\(?([A-Z])\)?(?:\*\*)?(?=$|[\s.):,;])")
_ANSWER_LETTER = re.compile(r"answer\s*(?:is|:)?\s*:?\s*(?:\*\*)?\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)


def extract_choice(text: str, choices: tuple[str, ...] | list[str] = ()) -> str | None:
    """The chosen letter: leading ``A`` / ``(A)`` / ``A.``, else "answer is A", else the choice whose
    text the completion starts with (longest wins). With ``choices`` given, only their letters count
    (so "I think the answer is B" is B, not I)."""
    valid = LETTERS[: len(choices)] if choices else LETTERS
    m = _LEAD_LETTER.match(text)
    if m and m.group(1) in valid:
        return m.group(1)
    bare = text.strip().rstrip(".").strip("()")
    if len(bare) == 1 and bare.upper() in valid:  # " b" alone
        return bare.upper()
    for m in reversed(list(_ANSWER_LETTER.finditer(text))):
        if m.group(1) in valid:  # upper case only: "the answer is a dog" names no letter
            return m.group(1)
    start = normalize_text(text)
    best: tuple[int, str] | None = None
    for letter, choice in zip(LETTERS, choices, strict=False):  # fewer choices than letters
        c = normalize_text(choice)
        if c and start.startswith(c) and (best is None or len(c) > best[0]):
            best = (len(c), letter)
    return best[1] if best else None


def normalize_text(s: str) -> str:
    """Lower case, single spaces, no surrounding quotes or trailing punctuation."""
    s = re.sub(r"\s+", " ", s.strip().lower())
    s = s.strip("\"'`“”‘’ ")
    return s.rstrip(".!?;:, ").strip()


# ---------------------------------------------------------------------------------------------
# Model-based judge

JUDGE_SYSTEM = (
    "You grade answers to exam questions. You are given a question, the reference answer and a "
    "candidate answer. The candidate is correct when its final answer means the same as the "
    "reference answer (equivalent numbers, expressions or wording count as the same); explanations "
    "do not matter. Reply with exactly one word: CORRECT or INCORRECT."
)
JUDGE_USER = "Question:\n{question}\n\nReference answer: {reference}\n\nCandidate answer: {candidate}"
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


class LLMJudge:
    """Grades with a model behind an OpenAI-compatible ``/v1/chat/completions`` (temperature 0,
    fixed prompt ``JUDGE_SYSTEM`` / ``JUDGE_USER``). ``grade`` is blocking, ``agrade`` async."""

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 2
    ) -> None:
        self.base_url, self.model = base_url, model
        self._kwargs: dict[str, Any] = {
            "base_url": base_url,
            "api_key": api_key or "unused",
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self._client: Any = None
        self._aclient: Any = None

    def messages(self, item: Item, completion: str) -> list[dict[str, str]]:
        reference = item.answer
        if item.kind == "choice" and item.choices:
            idx = LETTERS.find(item.answer.strip().upper())
            question = item.question + "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
            if 0 <= idx < len(item.choices):
                reference = f"{item.answer}. {item.choices[idx]}"
        else:
            question = item.question
        user = JUDGE_USER.format(question=question, reference=reference, candidate=_cut(completion).strip())
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]

    @staticmethod
    def parse_verdict(text: str | None) -> bool:
        """True only for a reply whose first verdict word is CORRECT."""
        m = _VERDICT.search(text or "")
        return bool(m) and m.group(1).upper() == "CORRECT"

    def _request(self, item: Item, completion: str) -> dict[str, Any]:
        return {"model": self.model, "messages": self.messages(item, completion), "temperature": 0, "max_tokens": 8}

    def grade(self, item: Item, completion: str) -> Grade:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(**self._kwargs)
        resp = self._client.chat.completions.create(**self._request(item, completion))
        return Grade(self.parse_verdict(resp.choices[0].message.content), _first_line(_cut(completion)) or None)

    async def agrade(self, item: Item, completion: str) -> Grade:
        if self._aclient is None:
            import openai

            self._aclient = openai.AsyncOpenAI(**self._kwargs)
        resp = await self._aclient.chat.completions.create(**self._request(item, completion))
        return Grade(self.parse_verdict(resp.choices[0].message.content), _first_line(_cut(completion)) or None)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.close()
            self._aclient = None
