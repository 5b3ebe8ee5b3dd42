"""Word-form tasks generated from two lexicons on PyPI: plurals and past tenses, in difficulty ladders.

* the inflections: ``lemminflect``'s lookup table (``lemminflect/resources/infl_lu.csv.gz``, from the
  SPECIALIST lexicon): ``lemma,noun,PLURAL[/ALT]`` and ``lemma,verb,VBD,VBN,VBG,VBZ``;
* how common a word is: ``wordfreq``'s English list (``wordfreq/data/small_en.msgpack.gz``, its
  "cBpack": a header, then buckets of words, bucket i holding the words at -i centibels), read as
  the Zipf frequency ``(900 - i) / 100`` (6: "the"-like, 3: about once per million words).

Both are read from the downloaded wheels (never imported). A word is kept when it is a lower-case
ASCII lemma of at least three letters that ``wordfreq`` lists at Zipf >= 3 and whose inflection
differs from it; the gold answer is the lexicon's first form, any other one an alias. ``meta``
carries the word's ``zipf`` and whether the form follows the spelling rules (``regular``: +s / +es /
y->ies for nouns, +ed / +d / y->ied / doubled consonant + ed for verbs), which the benchmarks of
``benchmarks.registry`` slice into ladders (common / rare / irregular).

The exemplar words of the ``inflect_plural`` and ``inflect_past`` prompt families are left out.

:func:`parse_spelling` asks for the first or last letter of the same lexicon's common nouns (Zipf >=
4): a task family (``spelling``) none of the study's slices has.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

INFLECTIONS = "lemminflect/resources/infl_lu.csv.gz"
WORD_FREQUENCIES = "wordfreq/data/small_en.msgpack.gz"
MIN_ZIPF = 3.0
#: words used in the prompt exemplars (prompts.yaml), never asked
EXEMPLARS = frozenset({"tomato", "key", "goose", "lamp", "bake", "swim", "carry", "stop"})
#: the ``spelling`` prompt family's exemplar words
SPELLING_EXEMPLARS = frozenset({"garden", "river", "window", "pencil"})
SPELLING_MIN_ZIPF = 4.0


def zipf_frequencies(root: Path) -> dict[str, float]:
    """word -> Zipf frequency, from wordfreq's cBpack (the first bucket a word is in wins)."""
    data = msgspec.msgpack.decode(gzip.decompress((root / WORD_FREQUENCIES).read_bytes()))
    header, buckets = data[0], data[1:]
    if not isinstance(header, dict) or header.get("format") != "cB":
        raise ValueError(f"{WORD_FREQUENCIES}: not a cBpack (header {header!r})")
    out: dict[str, float] = {}
    for index, bucket in enumerate(buckets):
        for word in bucket:
            out.setdefault(word, (900 - index) / 100)
    return out


def _regular_plural(lemma: str, plural: str) -> bool:
    return plural in (lemma + "s", lemma + "es") or (lemma.endswith("y") and plural == lemma[:-1] + "ies")


def _regular_past(lemma: str, past: str) -> bool:
    return past in (lemma + "ed", lemma + "d", lemma + lemma[-1] + "ed") or (
        lemma.endswith("y") and past == lemma[:-1] + "ied"
    )


def _keep(lemma: str, exclude: frozenset[str] = EXEMPLARS) -> bool:
    return len(lemma) >= 3 and lemma.isascii() and lemma.isalpha() and lemma.islower() and lemma not in exclude


def lexicon_entries(
    lexicon_root: Path, frequency_root: Path, upos: str, min_zipf: float, exclude: frozenset[str] = EXEMPLARS
) -> Iterator[tuple[str, list[str], float]]:
    """(lemma, its inflection columns, its Zipf frequency) of every ``upos`` row of the lexicon whose
    lemma passes :func:`_keep` (lower-case ASCII letters, at least three, not in ``exclude``: by default
    the packaged prompts' exemplar words) and is at least ``min_zipf`` common, in the lexicon's order."""
    zipf = zipf_frequencies(frequency_root)
    text = gzip.decompress((lexicon_root / INFLECTIONS).read_bytes()).decode("utf-8")
    for record in csv.reader(io.StringIO(text)):
        if len(record) < 3 or record[1] != upos:
            continue
        lemma = record[0]
        if _keep(lemma, exclude) and zipf.get(lemma, 0.0) >= min_zipf:
            yield lemma, record[2:], zipf[lemma]


def parse_word_forms(lexicon_root: Path, frequency_root: Path, task: str) -> list[dict[str, Any]]:
    """Rows of ``task`` ("plural" or "past"): one per lemma, in the lexicon's (alphabetical) order."""
    if task not in ("plural", "past"):
        raise ValueError(f"unknown word-form task {task!r}")
    upos, regular = ("noun", _regular_plural) if task == "plural" else ("verb", _regular_past)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lemma, columns, zipf in lexicon_entries(lexicon_root, frequency_root, upos, MIN_ZIPF):
        if lemma in seen:
            continue
        forms = [f for f in columns[0].split("/") if f and f != lemma]
        if not forms or not all(f.isascii() and f.isalpha() for f in forms):
            continue
        seen.add(lemma)
        question = (
            f'Give the plural of the noun "{lemma}".' if task == "plural"
            else f'Give the simple past tense of the verb "{lemma}".'
        )
        meta: dict[str, Any] = {"word": lemma, "zipf": zipf, "regular": regular(lemma, forms[0])}
        if len(forms) > 1:
            meta["aliases"] = forms[1:]
        rows.append({
            "item_id": f"{task}-{lemma}", "question": question, "answer": forms[0], "kind": "exact",
            "choices": [], "meta": meta,
        })
    return rows


def parse_spelling(lexicon_root: Path, frequency_root: Path, task: str) -> list[dict[str, Any]]:
    """Rows of ``task`` ("first_letter" or "last_letter") for the lexicon's common nouns (at least
    four letters, Zipf >= :data:`SPELLING_MIN_ZIPF`), in the lexicon's order."""
    if task not in ("first_letter", "last_letter"):
        raise ValueError(f"unknown spelling task {task!r}")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    which = "first" if task == "first_letter" else "last"
    for word, _, zipf in lexicon_entries(lexicon_root, frequency_root, "noun", SPELLING_MIN_ZIPF):
        if word in seen or len(word) < 4 or word in SPELLING_EXEMPLARS:
            continue
        seen.add(word)
        rows.append({
            "item_id": f"{task}-{word}", "question": f'What is the {which} letter of the word "{word}"?',
            "answer": word[0] if which == "first" else word[-1], "kind": "exact", "choices": [],
            "meta": {"word": word, "zipf": zipf},
        })
    return rows
