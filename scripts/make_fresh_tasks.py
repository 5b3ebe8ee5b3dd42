#!/usr/bin/env python3
"""Ten user-style task files for a second out-of-sample check of the shipped estimator (issue 9).

The study's traces (``data/traces/gemma-3-270m.jsonl.gz``) chose the estimator; the first
out-of-sample set (``gemma-3-270m-holdout.jsonl.gz``) then compared it with the references. This
script writes tasks neither of them has, as a user brings them: JSONL files of
``{id, question, answer[, kind, meta.aliases]}`` that ``entropy-sentinel collect --benchmark FILE``
takes, each its own family (a benchmark no registry knows). Generated, seeded, from the GeoNames and
lexicon wheels the registry already downloads (``benchmarks.registry``) and from plain Python:

* ``comparative``, ``superlative``: of common adjectives (lemminflect's JJR / JJS, wordfreq Zipf >= 3.5;
  "more X" / "most X" accepted from two syllables on);
* ``ing_form``, ``third_person``: of common verbs (lemminflect's VBG / VBZ, Zipf >= 4);
* ``continent_of_country``, ``country_of_capital``: from GeoNames' country table;
* ``next_number`` (10-999 + 1), ``digits_of_words`` ("three hundred forty-two" -> 342),
  ``words_of_number`` (342 -> "three hundred forty-two", with and without "and" / hyphen),
  ``letters_in_word`` (how many letters a common noun has).

At most 300 items each. Written to ``data/tasks/`` (``--out``); the prompts they are asked with by
default are the packaged ones by item kind (no task-specific exemplars, as a user who writes none),
and with ``data/prompts/fresh-io.yaml`` another wrapper with task-specific exemplars.

    .venv/bin/python scripts/make_fresh_tasks.py [--out data/tasks]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

from entropy_sentinel.benchmarks.cache import default_cache_dir
from entropy_sentinel.benchmarks.loader import package_root
from entropy_sentinel.benchmarks.registry import GEONAMES, LEMMINFLECT, WORDFREQ
from entropy_sentinel.benchmarks.sources_geonames import COUNTRIES, COUNTRY_ALIASES
from entropy_sentinel.benchmarks.sources_lexicon import lexicon_entries

ROOT = Path(__file__).resolve().parents[1]
N = 300
SEED = 20261207
CONTINENTS = {
    "AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America", "OC": "Oceania",
}
#: words in the exemplars of data/prompts/fresh-io.yaml, never asked
EXEMPLAR_WORDS = frozenset({
    "tall", "happy", "run", "watch", "cry", "dance", "apple", "table", "sun", "green", "far", "write",
})
ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def words(n: int, hyphen: bool = True, and_: bool = False) -> str:
    """342 -> "three hundred forty-two" (``and_``: "three hundred and forty-two")."""
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (("-" if hyphen else " ") + ONES[ones] if ones else "")
    hundreds, rest = divmod(n, 100)
    head = f"{ONES[hundreds]} hundred"
    return head if not rest else f"{head} {'and ' if and_ else ''}{words(rest, hyphen)}"


def number_spellings(n: int) -> list[str]:
    forms = [words(n, h, a) for a in (False, True) for h in (True, False)]
    return list(dict.fromkeys(forms))


def sample(rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    rows = list(rows)
    rng.shuffle(rows)
    return rows[:N]


def lexicon(upos: str, min_zipf: float) -> list[tuple[str, list[str], float]]:
    """The registry's lexicon entries (first row of each lemma), fresh-io's exemplar words left out."""
    roots = package_root(LEMMINFLECT, default_cache_dir()), package_root(WORDFREQ, default_cache_dir())
    out, seen = [], set()
    for entry in lexicon_entries(*roots, upos, min_zipf, exclude=EXEMPLAR_WORDS):
        if entry[0] not in seen:
            seen.add(entry[0])
            out.append(entry)
    return out


def syllables(word: str) -> int:
    return len(re.findall(r"[aeiouy]+", word.removesuffix("e")))


def form_rows(task: str, upos: str, column: int, question: str, rng: random.Random) -> list[dict[str, Any]]:
    """``more X`` / ``most X`` is accepted for adjectives of two syllables or more ("pleasanter")."""
    rows = []
    for lemma, columns, zipf in lexicon(upos, 3.5 if upos == "adj" else 4.0):
        forms = [f for f in (columns[column].split("/") if column < len(columns) else []) if f and f != lemma]
        if not forms or not all(f.isascii() and f.isalpha() for f in forms):
            continue
        if upos == "adj" and syllables(lemma) >= 2:
            forms.append(("more " if column == 0 else "most ") + lemma)
        rows.append({"id": f"{task}-{lemma}", "question": question.format(w=lemma), "answer": forms[0],
                     "kind": "exact", "meta": {"word": lemma, "zipf": zipf, "aliases": forms[1:]}})
    return sample(rows, rng)


def geo_rows(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    countries = json.loads((package_root(GEONAMES, default_cache_dir()) / COUNTRIES).read_text())
    continent, capital = [], []
    for c in countries.values():
        name = c["name"]
        if not name.isascii():
            continue
        if c["continentcode"] in CONTINENTS:
            continent.append({"id": f"continent-{c['iso']}", "question": f"On which continent is {name}?",
                              "answer": CONTINENTS[c["continentcode"]], "kind": "exact",
                              "meta": {"population": c["population"]}})
        cap = c.get("capital") or ""
        if cap and cap.isascii() and cap != name and name not in cap:
            capital.append({"id": f"capital-{c['iso']}", "question": f"{cap} is the capital of which country?",
                            "answer": name, "kind": "exact",
                            "meta": {"population": c["population"], "aliases": list(COUNTRY_ALIASES.get(name, ()))}})
    return {"continent_of_country": sample(continent, rng), "country_of_capital": sample(capital, rng)}


def number_rows(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    nexts = [{"id": f"next-{n}", "question": f"What number comes after {n}?", "answer": str(n + 1)}
             for n in rng.sample(range(10, 1000), N)]
    digits = [{"id": f"digits-{n}", "question": f'Write "{words(n)}" in digits.', "answer": str(n)}
              for n in rng.sample(range(21, 1000), N)]
    spelled = []
    for n in rng.sample(range(21, 1000), N):
        first, *rest = number_spellings(n)
        spelled.append({"id": f"words-{n}", "question": f"Write the number {n} in words.", "answer": first,
                        "kind": "exact", "meta": {"aliases": rest}})
    return {"next_number": nexts, "digits_of_words": digits, "words_of_number": spelled}


def letters_rows(rng: random.Random) -> list[dict[str, Any]]:
    nouns = [lemma for lemma, _, zipf in lexicon("noun", 4.0) if len(lemma) <= 10]
    return [{"id": f"letters-{w}", "question": f'How many letters are in the word "{w}"?', "answer": str(len(w))}
            for w in rng.sample(nouns, N)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "tasks")
    args = parser.parse_args()
    rng = random.Random(SEED)
    tasks = {
        "comparative": form_rows("comparative", "adj", 0, 'What is the comparative of "{w}"?', rng),
        "superlative": form_rows("superlative", "adj", 1, 'What is the superlative of "{w}"?', rng),
        "ing_form": form_rows("ing_form", "verb", 2, 'What is the -ing form of "{w}"?', rng),
        "third_person": form_rows("third_person", "verb", 3, 'What is the he/she/it form of the verb "{w}"?', rng),
        **geo_rows(rng),
        **number_rows(rng),
        "letters_in_word": letters_rows(rng),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in tasks.items():
        path = args.out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(rows)} items")


if __name__ == "__main__":
    main()
