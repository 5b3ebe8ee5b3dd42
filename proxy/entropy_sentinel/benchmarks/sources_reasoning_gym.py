"""GSM-Symbolic rows from ``reasoning-gym``'s generator functions.

The generators are pure Python on ``random.Random``; they are executed from the downloaded wheel
with the same seeding as ``reasoning_gym``'s own dataset class, without installing the package.
"""

from __future__ import annotations

import ast
import random
import re
import sys
import types
from pathlib import Path
from typing import Any

RG_GSM = "reasoning_gym/arithmetic/gsm_symbolic"
#: reasoning-gym appends this to every question; it is an instruction for chat models, not part of
#: the problem, and a few-shot prompt states the format itself.
RG_SUFFIX = " Give the result as your final answer. Do not include units."


def _rg_namespace(root: Path) -> dict[str, Any]:
    """``format_number``/``is_integer`` from the wheel's ``reasoning_gym/utils.py`` (stdlib only)."""
    ns: dict[str, Any] = {"__name__": "reasoning_gym_utils_snapshot"}
    # Running the package's own code, from its downloaded wheel, is the point here.
    exec(compile((root / "reasoning_gym/utils.py").read_text(), "reasoning_gym/utils.py", "exec"), ns)
    return {"format_number": ns["format_number"], "is_integer": ns["is_integer"]}


def _rg_generators(root: Path) -> dict[int, Any]:
    helpers = _rg_namespace(root)
    gens: dict[int, Any] = {}
    for part in ("generators_00_49", "generators_50_99"):
        source = (root / RG_GSM / f"{part}.py").read_text()
        source = source.replace("from reasoning_gym.utils import format_number, is_integer\n", "")
        ns: dict[str, Any] = {"__name__": f"reasoning_gym_{part}", **helpers}
        exec(compile(source, f"{RG_GSM}/{part}.py", "exec"), ns)
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
# Procedural datasets (``ProceduralDataset`` subclasses), run from the wheel with a minimal base


class _ProceduralDataset:
    """What ``reasoning_gym.dataset.ProceduralDataset.__init__`` sets up, and nothing else."""

    def __init__(self, config: Any, seed: int | None = None, size: int = 500) -> None:
        if hasattr(config, "validate"):
            config.validate()
        self.config, self.size = config, size
        self.seed = seed if seed is not None else random.Random().randint(0, 2**32)


class _Anything:
    """Stands in for the curriculum classes a dataset module defines but generation never uses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def _rg_module(root: Path, module: str) -> dict[str, Any]:
    """Execute ``reasoning_gym/<module>.py`` with its package imports bound to minimal stand-ins."""
    path = root / "reasoning_gym" / f"{module}.py"
    source = path.read_text()
    source = re.sub(r"^from \.\.coaching import .*$", "", source, flags=re.MULTILINE)
    source = re.sub(r"^from \.\.factory import .*$", "", source, flags=re.MULTILINE)
    source = re.sub(r"^from reasoning_gym import utils$", "", source, flags=re.MULTILINE)
    name = f"reasoning_gym_snapshot_{module.replace('/', '_')}"
    mod = types.ModuleType(name)
    ns: dict[str, Any] = mod.__dict__
    ns.update({
        "ProceduralDataset": _ProceduralDataset,
        "register_dataset": lambda *a, **k: None,
        "BaseCurriculum": _Anything,
        "RangeAttributeDefinition": _Anything,
        "ScalarAttributeDefinition": _Anything,
        "utils": None,
    })
    sys.modules[name] = mod  # dataclasses look their module up while the class body runs
    try:
        exec(compile(source, str(path.relative_to(root)), "exec"), ns)
    finally:
        sys.modules.pop(name, None)
    return ns


#: chain_sum's settings per difficulty: (min_terms, max_terms, min_digits, max_digits)
CHAIN_SUM_LEVELS: dict[str, tuple[int, int, int, int]] = {
    "chain_sum_1d": (2, 2, 1, 1),
    "chain_sum_2d": (2, 2, 2, 2),
    "chain_sum_3t": (3, 3, 1, 1),
}
CHAIN_SUM_SIZE = 1000


def parse_chain_sum(root: Path, level: str, size: int = CHAIN_SUM_SIZE, seed: int = 0) -> list[dict[str, Any]]:
    """``reasoning_gym.create_dataset("chain_sum", seed=seed, size=size, ...)`` at one difficulty of
    :data:`CHAIN_SUM_LEVELS`: sums and differences of 2-3 terms of 1-2 digits."""
    ns = _rg_module(root, "arithmetic/chain_sum")
    lo_t, hi_t, lo_d, hi_d = CHAIN_SUM_LEVELS[level]
    config = ns["ChainSumConfig"](
        min_terms=lo_t, max_terms=hi_t, min_digits=lo_d, max_digits=hi_d, seed=seed, size=size
    )
    dataset = ns["ChainSumDataset"](config)
    rows = []
    for i in range(size):
        ex = dataset[i]
        rows.append(
            {
                "item_id": f"{level}-{seed}-{i}",
                "question": ex["question"].strip(),
                "answer": str(ex["answer"]).strip(),
                "kind": "numeric",
                "meta": {"terms": ex["metadata"]["num_terms"], "digits": ex["metadata"]["num_digits"]},
            }
        )
    return rows
