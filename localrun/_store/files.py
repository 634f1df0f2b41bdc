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
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import CorruptRunError, InvalidIdError, UsageError
from . import atomic
from .layout import FILES, check_file_name, inside, safe_dir
from .records import FileVersion, Revision
from .safe_io import USER_HINT, open_regular

VERSIONS = ".versions"
log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def version_path(run_dir: Path, name: str, attempt: int, seq: int) -> Path:
    return run_dir / FILES / VERSIONS / f"{attempt:04d}-{seq:06d}" / name


def _open_user_file(path: Path) -> BinaryIO:
    """A user's file (links followed): a FIFO matched by a glob must not block ``save``."""
    return open_regular(path, follow=True, error=UsageError, hint=USER_HINT)


def _copy_hashing(src: Path, dst: Path) -> str:
    digest = hashlib.sha256()
    with _open_user_file(src) as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    """The SHA-256 of a user's file (to skip storing an unchanged version, or to compare)."""
    digest = hashlib.sha256()
    with _open_user_file(path) as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def publish_version(run_dir: Path, src: Path, name: str, attempt: int, seq: int) -> FileVersion:
    """Copy ``src`` in as a new immutable version of ``name``; return its manifest entry."""
    name = check_file_name(name)
    final = version_path(run_dir, name, attempt, seq)
    try:
        safe_dir(run_dir, FILES)
        _check_no_clash(run_dir, name)
        safe_dir(run_dir, final.parent.relative_to(run_dir).as_posix())
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
    """``a`` and ``a/b`` cannot both be files: say so before anything is written.

    Never follows a link out of the run (:func:`inside` refuses one on the way).
    """
    parts = name.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if _mode(inside(run_dir, f"{FILES}/{prefix}", "saved file"), stat.S_ISREG):
            raise InvalidIdError(
                f"cannot save {name!r}: the run already has a file named {prefix!r}"
            )
    if _mode(inside(run_dir, f"{FILES}/{name}", "saved file"), stat.S_ISDIR):
        raise InvalidIdError(f"cannot save {name!r}: the run has a folder of files by that name")


def _mode(path: Path, test: Callable[[int], bool]) -> bool:
    try:
        return test(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def point_latest(run_dir: Path, name: str, entry: FileVersion) -> None:
    """Make ``files/<name>`` the given version (a hard link, replaced atomically).

    Every folder on the way is checked (:func:`safe_dir`): the link is never made outside.
    """
    latest = inside(run_dir, f"{FILES}/{check_file_name(name)}", "saved file")
    safe_dir(run_dir, latest.parent.relative_to(run_dir).as_posix())
    source = inside(run_dir, entry["path"], "saved file version")
    tmp = atomic.temp_path(latest)
    try:
        os.link(source, tmp, follow_symlinks=False)
        os.replace(tmp, latest)
    except OSError:
        tmp.unlink(missing_ok=True)
        # a filesystem without hard links: the manifest still names every version
        return
    atomic.fsync_dir(latest.parent)


def latest_entry(m: Revision, name: str) -> FileVersion | None:
    versions = (m.get("files") or {}).get(name)
    return versions[-1] if versions else None


def copy_out(src: Path, dest: Path) -> None:
    """Copy a stored version out of the run (atomically, so ``dest`` is never half written).

    ``src`` is opened as a regular file only, never through a link: see ``safe_io``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open_regular(src) as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)

    atomic.replace_file(dest, write)


def remove_version(run_dir: Path, entry: FileVersion) -> None:
    """Delete a saved version that the newest revision no longer lists (the retention bound).

    Called only after that revision is committed, so no reader of the newest state can miss it;
    a reader holding an older snapshot gets a clear "missing version" error and re-reads.
    """
    try:
        path = inside(run_dir, entry["path"], "saved version")
        path.unlink(missing_ok=True)
        folder = path.parent
        while folder != run_dir / FILES / VERSIONS and folder.is_relative_to(run_dir):
            folder.rmdir()  # an empty version folder; stops at the first that is not empty
            folder = folder.parent
    except (OSError, CorruptRunError) as exc:
        log.debug("could not remove the retired version %s: %s", entry.get("path"), exc)
