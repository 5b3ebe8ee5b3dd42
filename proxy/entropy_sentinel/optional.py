"""Optional dependencies: ``serve`` needs only the core install; other commands name their extra.

``require("report", "matplotlib")`` returns quietly when the modules are importable and otherwise
raises :class:`MissingExtra`, whose message says which ``pip install`` fixes it. Commands check
their extra before importing anything heavy (see :data:`COMMAND_EXTRAS`); so does a configuration
that needs one (``store.url: postgresql://...`` needs ``postgres``, ``otel.endpoint`` needs ``otel``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["COMMAND_EXTRAS", "EXTRAS", "MissingExtra", "require", "require_for_command"]

#: extra -> the top-level modules it brings (pyproject.toml's optional-dependencies)
EXTRAS: dict[str, tuple[str, ...]] = {
    "benchmarks": ("openai", "tqdm", "math_verify"),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "postgres": ("psycopg", "psycopg_pool"),
    "report": ("matplotlib",),
    "study": ("matplotlib", "tqdm"),
}

#: command -> the extra it needs (commands not listed run on the core install)
COMMAND_EXTRAS: dict[str, str] = {
    "collect": "benchmarks",
    "calibrate": "benchmarks",
    "evaluate": "study",
    "check": "study",
    "study": "study",
    "report": "report",
}


class MissingExtra(ImportError):
    """A command or function needs an optional dependency that is not installed."""

    def __init__(self, extra: str, missing: list[str], what: str | None = None) -> None:
        self.extra = extra
        self.missing = missing
        needs = f"{what} needs" if what else "this needs"
        super().__init__(
            f"{needs} {', '.join(missing)}, which the core install leaves out: "
            f"pip install 'entropy-sentinel[{extra}]'"
        )


def _missing(modules: tuple[str, ...]) -> list[str]:
    out = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(module)
    return out


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise :class:`MissingExtra` unless every module (default: the extra's own) is importable."""
    missing = _missing(modules or EXTRAS[extra])
    if missing:
        raise MissingExtra(extra, missing, what)


def require_for_command(command: str) -> None:
    """The check a CLI command runs first (nothing for commands on the core install)."""
    extra = COMMAND_EXTRAS.get(command)
    if extra is not None:
        require(extra, what=f"`entropy-sentinel {command}`")
