"""Saved files: immutable versions, and a "latest" name that is replaced atomically.

Layout (docs/format.md)::

    files/<name>                                      the latest version (a hard link to it)
    files/.versions/<attempt:04d>-<seq:06d>/<name>    every version, immutable, read-only

A version keeps its file name (tools such as Keras choose a loader by the extension).

A version is copied to a temp file, hashed while copying, fsynced and linked into place, so no
reader ever sees half a file; its name carries the attempt, so a stale writer can never
overwrite a newer owner's version. The manifest's ``files`` map lists the versions of every
name; it, not the ``files/<name>`` link, is what ``restore`` trusts.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidIdError
from . import atomic
from .layout import FILES, check_file_name

VERSIONS = ".versions"
_CHUNK = 1 << 20


def version_path(run_dir: Path, name: str, attempt: int, seq: int) -> Path:
    return run_dir / FILES / VERSIONS / f"{attempt:04d}-{seq:06d}" / name


def _copy_hashing(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish_version(run_dir: Path, src: Path, name: str, attempt: int, seq: int) -> dict[str, Any]:
    """Copy ``src`` in as a new immutable version of ``name``; return its manifest entry."""
    name = check_file_name(name)
    final = version_path(run_dir, name, attempt, seq)
    _check_no_clash(run_dir, name)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise atomic.storage_error(exc, "create the folder for", final) from exc
    digest: list[str] = []
    atomic.publish_file(final, lambda tmp: digest.append(_copy_hashing(src, tmp)))
    os.chmod(final, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # versions are read-only
    return {
        "version": f"{attempt:04d}-{seq:06d}",
        "path": final.relative_to(run_dir).as_posix(),
        "sha256": digest[0],
        "size": final.stat().st_size,
        "saved": time.time(),
        "attempt": attempt,
    }


def _check_no_clash(run_dir: Path, name: str) -> None:
    """``a`` and ``a/b`` cannot both be files: say so before anything is written."""
    parts = name.split("/")
    base = run_dir / FILES
    for i in range(1, len(parts)):
        if (base / "/".join(parts[:i])).is_file():
            raise InvalidIdError(
                f"cannot save {name!r}: the run already has a file named {'/'.join(parts[:i])!r}"
            )
    if (base / name).is_dir():
        raise InvalidIdError(f"cannot save {name!r}: the run has a folder of files by that name")


def point_latest(run_dir: Path, name: str, entry: dict[str, Any]) -> None:
    """Make ``files/<name>`` the given version (a hard link, replaced atomically)."""
    latest = run_dir / FILES / name
    latest.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_path(latest)
    try:
        os.link(run_dir / entry["path"], tmp)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)
        # a filesystem without hard links: the manifest still names every version
        return
    atomic.fsync_dir(latest.parent)


def latest_entry(m: dict[str, Any], name: str) -> dict[str, Any] | None:
    versions = (m.get("files") or {}).get(name)
    return versions[-1] if versions else None


def copy_out(src: Path, dest: Path) -> None:
    """Copy a stored version out of the run (atomically, so ``dest`` is never half written)."""
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        shutil.copyfile(src, tmp)

    atomic.replace_file(dest, write)
