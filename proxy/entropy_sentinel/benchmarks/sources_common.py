"""Text helpers shared by the benchmark source parsers and the graders."""

from __future__ import annotations

import re


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced; also
    the ``\\boxed 5`` form without braces. ``None`` when there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":  # "\boxed 5"
        m = re.match(r"[^\s$.,;]+", text[i:])
        return m.group(0) if m else None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unbalanced: an unfinished completion


def strip_commas(number: str) -> str:
    """``1,450,000`` -> ``1450000`` (only commas between digit groups)."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", number.strip())
