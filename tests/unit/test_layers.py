"""docs/architecture.md's layer rules, checked on the source: every import (module level or inside a
function) of every module under ``proxy/entropy_sentinel`` is parsed with ``ast``; none may leave
the table below, and no modules may import each other in a cycle.

A new package or top-level module needs a row here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "proxy" / "entropy_sentinel"

#: importable by every layer; they import nothing of ours outside themselves
BOTTOM = frozenset({"types", "signal", "stats", "optional", "__init__"})

#: layer -> the layers above the bottom it may import (docs/architecture.md, "Layers, bottom up")
ALLOWED: dict[str, frozenset[str]] = {
    "config": frozenset(),
    "estimator": frozenset(),
    "benchmarks": frozenset(),
    "monitor": frozenset(),
    "traces": frozenset({"benchmarks", "monitor"}),
    "evaluation": frozenset({"benchmarks", "traces", "estimator"}),
    "report": frozenset({"monitor", "estimator"}),
    "gateway": frozenset({"config", "monitor"}),
    "embedded": frozenset({"config"}),
    "cli": frozenset({"config", "estimator", "benchmarks", "monitor", "traces", "evaluation", "report", "gateway",
                      "embedded"}),
    "__main__": frozenset({"cli"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """``entropy_sentinel.signal.entropy`` -> ``signal``; the package itself is ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(module: str) -> list[tuple[str, int]]:
    """(our module it imports, line) for every import statement in ``module``, nested ones included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b` imports module a.b when there is one, else a name of a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import a.b.c` names a.b.c, but be lenient
                target = target.rpartition(".")[0]
            if target and target != module and (target, node.lineno) not in out:
                out.append((target, node.lineno))
    return out


def test_every_package_has_a_row():
    assert {layer(m) for m in MODULES} == BOTTOM | set(ALLOWED)


def test_the_parser_sees_imports_inside_functions():
    # cli imports the gateway only inside serve(): a check blind to that would pass vacuously
    assert "entropy_sentinel.gateway.app" in {t for t, _ in imports("entropy_sentinel.cli")}
    assert "entropy_sentinel.monitor.hub" in {t for t, _ in imports("entropy_sentinel.gateway.app")}


def test_no_import_leaves_the_layer_table():
    bad = []
    for module in MODULES:
        src = layer(module)
        allowed = {src} if src in BOTTOM else {src} | BOTTOM | ALLOWED[src]
        for target, line in imports(module):
            if layer(target) not in allowed:
                bad.append(f"{MODULES[module].relative_to(ROOT)}:{line} {src} -> {layer(target)} ({target})")
    assert not bad, "imports outside docs/architecture.md's layers:\n" + "\n".join(bad)


def test_the_layer_table_has_no_cycle():
    graph = {name: set(deps) for name, deps in ALLOWED.items()} | {name: set() for name in BOTTOM}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    assert order.index("monitor") < order.index("gateway") < order.index("cli")


def test_no_modules_import_each_other_in_a_cycle():
    graph = {module: {target for target, _ in imports(module)} for module in MODULES}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
