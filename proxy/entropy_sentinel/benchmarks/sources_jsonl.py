"""Benchmark rows from JSONL files: the shared SVAMP / MAWPS / ASDiv-A exports and users' own files."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

from entropy_sentinel.benchmarks.sources_common import strip_commas

_NUMBER = re.compile(r"[-+]?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")


def looks_numeric(answer: str) -> bool:
    return bool(_NUMBER.fullmatch(answer.strip()))


def parse_jsonl(path: Path) -> list[dict[str, Any]]:
    """``{id, question, answer}`` lines (optional ``kind``, ``choices``, ``meta``; other fields go
    to meta). ``kind`` defaults to ``numeric`` when the answer is a number, ``choice`` when choices
    are given (the answer may be the letter or the choice text), else ``exact``."""
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            missing = [k for k in ("question", "answer") if k not in rec]
            if missing:
                raise ValueError(f"{path}:{n}: missing {', '.join(missing)}")
            answer = str(rec["answer"]).strip()
            choices = [str(c).strip() for c in rec.get("choices") or []]
            kind = rec.get("kind") or ("choice" if choices else "numeric" if looks_numeric(answer) else "exact")
            if kind not in ("numeric", "latex", "choice", "exact"):
                raise ValueError(f"{path}:{n}: unknown kind {kind!r}")
            if kind == "choice":
                if not choices:
                    raise ValueError(f"{path}:{n}: kind 'choice' needs a 'choices' list")
                letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
                if answer.upper() not in letters:
                    if answer not in choices:
                        raise ValueError(f"{path}:{n}: answer {answer!r} is neither a letter nor a choice")
                    answer = letters[choices.index(answer)]
                answer = answer.upper()
            if kind == "numeric":
                answer = strip_commas(answer).replace("$", "").replace(" ", "")
            meta = dict(rec.get("meta") or {})
            meta.update(
                {k: v for k, v in rec.items() if k not in ("id", "question", "answer", "kind", "choices", "meta")}
            )
            rows.append(
                {
                    "item_id": str(rec.get("id", n)),
                    "question": str(rec["question"]).strip(),
                    "answer": answer,
                    "kind": kind,
                    "choices": choices,
                    "meta": meta,
                }
            )
    return rows
