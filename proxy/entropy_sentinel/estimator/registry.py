"""The one list of estimators: classes register themselves where they are defined.

``@register("name")`` on a class makes it known to :func:`make_estimator` (the CLI's ``--method`` /
``--estimators``, the study's list) and trusted by the artifact loader (its dotted path joins the
skops allow-list), so a new estimator is one class plus its decorator line. The listing order (the
order the study and ``evaluate`` report them in) is the built-in modules' order, then definition
order, whichever module happens to be imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["estimator_classes", "estimator_names", "make_estimator", "qualified_name", "register"]

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}
#: modules whose classes register on import (the built-in estimators, in report order)
_BUILTIN_MODULES = ("entropy_sentinel.estimator.estimators", "entropy_sentinel.estimator.transfer")


def register(name: str) -> Callable[[T], T]:
    """Class decorator: ``@register("atc")`` makes the class available as ``make_estimator("atc")``."""

    def decorate(cls: T) -> T:
        known = _REGISTRY.get(name)
        if known is not None and qualified_name(known) != qualified_name(cls):
            raise ValueError(f"estimator name {name!r} is already registered to {qualified_name(known)}")
        _REGISTRY[name] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def _ordered() -> list[tuple[str, type]]:
    _load_builtins()
    rank = {module: i for i, module in enumerate(_BUILTIN_MODULES)}
    seq = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY.items(), key=lambda kv: (rank.get(kv[1].__module__, len(rank)), seq[kv[0]]))


def estimator_names() -> tuple[str, ...]:
    """Every registered name: the built-in modules in order, each in definition order, then others."""
    return tuple(name for name, _ in _ordered())


def estimator_classes() -> tuple[type, ...]:
    """Every registered class (what an artifact may hold), in :func:`estimator_names` order."""
    return tuple(cls for _, cls in _ordered())


def qualified_name(cls: type) -> str:
    """``module.QualName``: how skops names a class in a file."""
    return f"{cls.__module__}.{cls.__qualname__}"


def make_estimator(name: str, **params: Any) -> Any:
    """A new, unfitted estimator by registered name, e.g. ``make_estimator("atc", features=("mean",))``."""
    _load_builtins()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown estimator {name!r}; known: {', '.join(estimator_names())}") from None
    return cls(**params)
