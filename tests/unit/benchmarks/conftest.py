"""The benchmarks these tests read, loaded on first use.

BIG-bench may be missing on a clean machine: PyPI no longer serves bigbench 1.0.0, and
``SENTINEL_BIGBENCH_DIR`` (a BIG-bench checkout) supplies it only where someone set it. A test that
reads a BIG-bench benchmark then skips with the loader's reason; every other benchmark must load,
as before (its failure is the test's error).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from entropy_sentinel.benchmarks import loader as bm
from entropy_sentinel.benchmarks.loader import BenchmarkUnavailable, Item, list_benchmarks, load_benchmark


class LazyBenchmarks(Mapping[str, list[Item]]):
    """Every benchmark's full item list, loaded on first access. BIG-bench being unavailable skips
    the test asking for one of its benchmarks (tried once: the others would fail the same way)."""

    def __init__(self) -> None:
        self._items: dict[str, list[Item]] = {}
        self._bigbench_missing: str | None = None

    @staticmethod
    def is_bigbench(name: str) -> bool:
        return name in bm.BENCHMARKS and bm.SOURCES[bm.BENCHMARKS[name][0]].package == bm.BIGBENCH

    def unavailable(self, name: str) -> str | None:
        """Why BIG-bench benchmark ``name`` cannot be loaded (the error's first line), else ``None``
        (and it is loaded). Any other benchmark's failure raises."""
        try:
            self.load(name)
        except pytest.skip.Exception as skipped:
            return skipped.msg
        return None

    def load(self, name: str, **kwargs: Any) -> list[Item]:
        """``load_benchmark(name, **kwargs)`` (cached without kwargs); skips the test for BIG-bench."""
        if not kwargs and name in self._items:
            return self._items[name]
        if self._bigbench_missing is not None and self.is_bigbench(name):
            pytest.skip(self._bigbench_missing)
        try:
            items = load_benchmark(name, **kwargs)
        except BenchmarkUnavailable as exc:
            if not self.is_bigbench(name):
                raise
            self._bigbench_missing = str(exc).splitlines()[0]
            pytest.skip(self._bigbench_missing)
        if not kwargs:
            self._items[name] = items
        return items

    def __getitem__(self, name: str) -> list[Item]:
        return self.load(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list_benchmarks())

    def __len__(self) -> int:
        return len(list_benchmarks())


@pytest.fixture(scope="session")
def loaded() -> LazyBenchmarks:
    return LazyBenchmarks()
