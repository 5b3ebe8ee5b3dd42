"""The fixed few-shot prompts benchmark items are sent with (``prompts.yaml`` beside this file).

``build_prompt(item)`` gives what ``collect`` sends: for the completion styles a prompt string
ending in ``Answer:``, for ``chat`` a message list; plus the request fields that go with it
(``stop``, ``max_tokens``). One fixed prompt set per benchmark family keeps labelled traces
comparable across benchmarks and runs: the estimator learns from the entropy of answers to these
exact prompts, so the file carries a ``version``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from entropy_sentinel.benchmarks.loader import Item

STYLES = ("completion", "cot", "chat")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    rationale: str | None = None


@dataclass(frozen=True)
class Family:
    name: str
    instruction: str
    max_tokens: int
    cot_max_tokens: int
    exemplars: tuple[Exemplar, ...]


@dataclass(frozen=True)
class PromptSet:
    version: int
    question_fmt: str
    choice_fmt: str
    answer_fmt: str
    separator: str
    cot_answer_fmt: str
    stop: tuple[str, ...]
    chat_system: str
    chat_fewshot: bool
    benchmarks: dict[str, str]
    kinds: dict[str, str]
    families: dict[str, Family]

    def family_for(self, item: Item) -> Family:
        """The item's family: by benchmark name, else by kind."""
        name = self.benchmarks.get(item.benchmark) or self.kinds.get(item.kind)
        if name is None or name not in self.families:
            raise KeyError(f"no prompt family for benchmark {item.benchmark!r} (kind {item.kind!r})")
        return self.families[name]


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValueError(f"prompts: {where} has no {key!r}")
    return d[key]


def _parse(raw: dict[str, Any]) -> PromptSet:
    fmt = _req(raw, "format", "the file")
    families = {}
    for name, fam in _req(raw, "families", "the file").items():
        exemplars = tuple(
            Exemplar(
                question=str(_req(e, "question", f"an exemplar of {name}")),
                answer=str(_req(e, "answer", f"an exemplar of {name}")),
                choices=tuple(str(c) for c in e.get("choices") or ()),
                rationale=e.get("rationale"),
            )
            for e in _req(fam, "exemplars", f"family {name}")
        )
        families[name] = Family(
            name=name,
            instruction=str(fam.get("instruction", "")),
            max_tokens=int(_req(fam, "max_tokens", f"family {name}")),
            cot_max_tokens=int(fam.get("cot_max_tokens", fam["max_tokens"])),
            exemplars=exemplars,
        )
    ps = PromptSet(
        version=int(raw.get("version", 0)),
        question_fmt=_req(fmt, "question", "format"),
        choice_fmt=_req(fmt, "choice", "format"),
        answer_fmt=_req(fmt, "answer", "format"),
        separator=_req(fmt, "separator", "format"),
        cot_answer_fmt=fmt.get("cot_answer", "{rationale} So the answer is {answer}."),
        stop=tuple(_req(raw, "stop", "the file")),
        chat_system=raw.get("chat", {}).get("system", "{instruction}"),
        chat_fewshot=bool(raw.get("chat", {}).get("fewshot", True)),
        benchmarks=dict(raw.get("benchmarks") or {}),
        kinds=dict(raw.get("kinds") or {}),
        families=families,
    )
    for bench, fam in {**ps.benchmarks, **ps.kinds}.items():
        if fam not in families:
            raise ValueError(f"prompts: {bench!r} maps to unknown family {fam!r}")
    return ps


@functools.lru_cache(maxsize=8)
def load_prompts(path: str | Path | None = None) -> PromptSet:
    """The prompt set in ``path``, or the packaged ``prompts.yaml``."""
    if path is None:
        text = resources.files("entropy_sentinel.benchmarks").joinpath("prompts.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise TypeError(f"prompts: {path or 'prompts.yaml'} is not a mapping")
    return _parse(raw)


def format_question(ps: PromptSet, question: str, choices: tuple[str, ...] | list[str]) -> str:
    """``Question: ...`` plus one ``A. text`` line per choice."""
    lines = [ps.question_fmt.format(question=question)]
    lines += [ps.choice_fmt.format(letter=LETTERS[i], text=c) for i, c in enumerate(choices)]
    return "\n".join(lines)


def _exemplar_answer(ps: PromptSet, ex: Exemplar, cot: bool) -> str:
    if cot and ex.rationale:
        return ps.cot_answer_fmt.format(rationale=ex.rationale.strip(), answer=ex.answer)
    return ex.answer


def build_prompt(
    item: Item, style: str = "completion", path: str | Path | None = None
) -> tuple[str | list[dict], dict]:
    """(prompt, request extras) for ``item``.

    ``style``: ``completion`` (direct answers), ``cot`` (worked-solution exemplars where the family
    has them) or ``chat`` (messages). Extras: ``{"stop": [...], "max_tokens": N}`` for the
    completion styles, ``{"max_tokens": N}`` for chat (an instruction model stops by itself).
    ``path``: another prompts YAML instead of the packaged one.
    """
    if style not in STYLES:
        raise ValueError(f"unknown prompt style {style!r}; one of {', '.join(STYLES)}")
    ps = load_prompts(str(path) if path is not None else None)
    fam = ps.family_for(item)
    if style == "chat":
        messages: list[dict] = [{"role": "system", "content": ps.chat_system.format(instruction=fam.instruction)}]
        if ps.chat_fewshot:
            for ex in fam.exemplars:
                messages.append({"role": "user", "content": format_question(ps, ex.question, ex.choices)})
                messages.append({"role": "assistant", "content": ex.answer})
        messages.append({"role": "user", "content": format_question(ps, item.question, item.choices)})
        return messages, {"max_tokens": fam.max_tokens}
    cot = style == "cot"
    blocks = [
        f"{format_question(ps, ex.question, ex.choices)}\n{ps.answer_fmt} {_exemplar_answer(ps, ex, cot)}"
        for ex in fam.exemplars
    ]
    blocks.append(f"{format_question(ps, item.question, item.choices)}\n{ps.answer_fmt}")
    extras = {"stop": list(ps.stop), "max_tokens": fam.cot_max_tokens if cot else fam.max_tokens}
    return ps.separator.join(blocks), extras
