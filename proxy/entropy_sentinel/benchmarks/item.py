"""A benchmark question (``Item``) and the error raised when a benchmark's data is unavailable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("numeric", "latex", "choice", "exact")


@dataclass(frozen=True)
class Item:
    """One benchmark question. ``answer`` is the gold answer as text: a number for ``numeric``, LaTeX
    for ``latex``, the letter (``A``..) for ``choice``, a string for ``exact``."""

    benchmark: str
    item_id: str
    question: str
    answer: str
    kind: str  # "numeric" | "latex" | "choice" | "exact"
    choices: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "item_id": self.item_id,
            "question": self.question,
            "answer": self.answer,
            "kind": self.kind,
            "choices": list(self.choices),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(
            benchmark=d["benchmark"],
            item_id=d["item_id"],
            question=d["question"],
            answer=d["answer"],
            kind=d["kind"],
            choices=tuple(d.get("choices") or ()),
            meta=dict(d.get("meta") or {}),
        )


class BenchmarkUnavailable(RuntimeError):
    """The benchmark's data could not be fetched or found; the message says what to do."""
