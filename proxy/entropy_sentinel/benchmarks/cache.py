"""Where benchmark data lives on disk, the lock that serialises filling it, and the parsed-row files."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def default_cache_dir() -> Path:
    """``$SENTINEL_BENCHMARK_CACHE``, else ``~/.cache/entropy-sentinel/benchmarks``."""
    env = os.environ.get("SENTINEL_BENCHMARK_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/entropy-sentinel/benchmarks").expanduser()


def shared_data_dir() -> Path:
    """Where SVAMP / MAWPS / ASDiv-A live: ``$SENTINEL_SHARED_DATA``, else ``shared/data`` beside the
    repository (``<repo>/../shared/data``, from this file or from the working directory)."""
    env = os.environ.get("SENTINEL_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve()
    candidates = [
        here.parents[3].parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[0]


@contextlib.contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialises fetching and parsing between processes sharing a cache directory."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
