"""Opening files of a run without following links out of it or blocking on special files.

Opening a FIFO for reading blocks until a writer appears, forever if none does; opening a
device can have side effects. Another process can put either where localrun expects a segment,
a saved file or a manifest. So every read goes through :func:`open_regular`: an ``lstat``
refuses anything but a regular file before it is opened, and the open itself uses
``O_NONBLOCK`` (a FIFO opens at once) and ``O_NOFOLLOW``, then ``fstat`` checks the opened file,
so a file swapped in between the two checks is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import CorruptRunError, LocalrunError
from .layout import file_kind, inside, run_label

_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_LINK_ERRNOS = {errno.ELOOP, errno.EMLINK}  # O_NOFOLLOW on a link: ELOOP, EMLINK on BSDs


RUN_HINT = (
    "localrun only reads regular files in a run (this one was put there by hand or by another "
    "tool): move it away, then run `localrun verify --repair`"
)
USER_HINT = "localrun only copies and compares regular files"


def _not_regular(
    path: Path, mode: int, error: type[LocalrunError], label: str, hint: str = RUN_HINT
) -> LocalrunError:
    return error(f"{label}{path} is a {file_kind(mode)}, not a regular file; {hint}")


def open_regular(
    path: Path,
    follow: bool = False,
    error: type[LocalrunError] = CorruptRunError,
    label: str = "",
    hint: str = RUN_HINT,
) -> BinaryIO:
    """Open ``path`` for reading in binary, only if it is a regular file.

    ``follow``: follow a symbolic link as the last part (a user's own file); otherwise a link is
    refused like any non-regular file. Raises ``error`` (``label`` first, e.g. ``"run p/r: "``,
    then ``hint``) for anything else; ``FileNotFoundError`` and other ``OSError`` pass through.
    """
    mode = (os.stat if follow else os.lstat)(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, error, label, hint)
    try:
        fd = os.open(path, _FLAGS | (0 if follow else _NOFOLLOW))
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS and not follow:
            raise _not_regular(path, stat.S_IFLNK, error, label, hint) from None
        raise
    return _checked(fd, path, error, label, hint)


def _checked(
    fd: int, path: Path, error: type[LocalrunError], label: str, hint: str = RUN_HINT
) -> BinaryIO:
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode, error, label, hint)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: Path, follow: bool = False) -> bytes:
    """The content of ``path``, a regular file (see :func:`open_regular`).

    For ``atomic.read_json``: a FIFO in place of ``manifest.json``, ``localrun.json`` or a resume
    marker is then a :class:`CorruptRunError` instead of a reader blocked forever.
    """
    with open_regular(path, follow) as f:
        return f.read()


def open_inside(run_dir: Path, rel: object, what: str) -> BinaryIO:
    """Open the run file ``rel`` (a path from the manifest) for reading, staying inside the run.

    :func:`~localrun._store.layout.inside` refuses absolute paths, ``..`` and symbolic links with
    a clear message; the open then walks the parts with ``O_NOFOLLOW`` from the run folder, so a
    link swapped in after that check is refused as well. ``FileNotFoundError`` passes through.
    """
    path = inside(run_dir, rel, what)
    label = f"run {run_label(run_dir)}: "
    parts = path.relative_to(run_dir).parts
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, CorruptRunError, label)
    dir_fd = os.open(run_dir, os.O_RDONLY | _DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[:-1]:
            fd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = fd
        fd = os.open(parts[-1], _FLAGS | _NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS or exc.errno == errno.ENOTDIR:
            raise CorruptRunError(
                f"{label}the {what} path {rel!r} changed into a symbolic link or a non-folder "
                "while it was opened; localrun never follows links out of a run. Run "
                "`localrun verify --repair`"
            ) from None
        raise
    finally:
        os.close(dir_fd)
    return _checked(fd, path, CorruptRunError, label)


def check_regular(run_dir: Path, rel: object, what: str, missing_ok: bool = False) -> Path:
    """``inside(run_dir, rel, what)``, also refused unless it is a regular file now.

    For paths handed to a caller who opens them later (``restore()``'s ``.name``,
    ``StoredRun.file_path``, ``segment_paths``): never a FIFO they would block on.
    ``FileNotFoundError`` passes, unless ``missing_ok`` (the path is then returned as is).
    """
    path = inside(run_dir, rel, what)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        if missing_ok:
            return path
        raise
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, CorruptRunError, f"run {run_label(run_dir)}: ")
    return path
