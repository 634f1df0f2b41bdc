"""Atomic files (DESIGN §3.1): a file is either immutable once in place or replaced whole.

Both go through a temp file named ``<name>.tmp-<host>-<pid>-<rand>`` in the same directory, so
the rename never crosses a filesystem and ``verify`` can tell whose leftover a temp file is.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import CorruptRunError, StorageError
from .identity import HOST
from .layout import TMP_TAG
from .safe_io import read_regular_bytes

# Errors a reader on NFS sees while a writer replaces a file: retry them, they pass.
_TRANSIENT = {errno.ESTALE, errno.ENOENT}


def temp_path(final: Path) -> Path:
    return final.with_name(f"{final.name}{TMP_TAG}{HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (some filesystems refuse a directory fsync: fine)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def storage_error(exc: OSError, what: str, path: Path) -> StorageError:
    """Wrap an OSError in a message that says what was being written and what to do."""
    hint = {
        errno.ENOSPC: "the disk is full: free space, then the next flush retries",
        errno.EDQUOT: "the disk quota is exhausted: free space, then the next flush retries",
        errno.EROFS: "the filesystem is read-only: point LOCALRUN_DIR (or dir=) at a writable one",
        errno.EACCES: "permission denied: point LOCALRUN_DIR (or dir=) at a folder you can write",
        errno.EPERM: "permission denied: point LOCALRUN_DIR (or dir=) at a folder you can write",
        errno.EFBIG: "the file size limit was hit: raise it (ulimit -f) or log less per flush",
    }.get(exc.errno or 0, "check the filesystem")
    err = StorageError(exc.errno or 0, f"cannot {what} {path}: {exc.strerror or exc}; {hint}")
    err.filename = str(path)
    return err


def _write_temp(final: Path, write: Callable[[Path], None]) -> Path:
    tmp = temp_path(final)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace_file(final: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp_path)``, then atomically replace ``final``: readers see old or new."""
    try:
        tmp = _write_temp(final, write)
        try:
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise storage_error(exc, "write", final) from exc
    fsync_dir(final.parent)


def publish_file(final: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp_path)`` then put it in place only if ``final`` does not exist.

    ``os.link`` fails with EEXIST instead of overwriting, so an immutable file (a segment, a saved
    file version) can never be replaced, even by a stale writer that woke up late.
    """
    try:
        tmp = _write_temp(final, write)
        try:
            os.link(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise storage_error(exc, "write", final) from exc
    fsync_dir(final.parent)


def replace_cache(final: Path, payload: bytes) -> None:
    """Replace a derived file (an index that any reader can rebuild): temp file, then rename,
    no fsync. Any failure leaves the old file, or none, which only makes readers slower, so it
    is not reported (a read-only root is a normal place to list or browse)."""
    tmp = temp_path(final)
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, final)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_json(final: Path, data: Any) -> None:
    payload = json.dumps(data, indent=1, sort_keys=True, allow_nan=False).encode()
    replace_file(final, lambda p: _write_bytes(p, payload))


def _write_bytes(path: Path, payload: bytes) -> None:
    path.write_bytes(payload)


def read_json(path: Path, attempts: int = 8) -> Any:
    """Read a JSON file that another host may be replacing right now.

    Retries ESTALE/ENOENT and half-visible content a few times (NFS close-to-open can show either
    for a moment), then raises ``FileNotFoundError`` or :class:`CorruptRunError`.
    """
    delay = 0.005
    for i in range(attempts):
        last = i == attempts - 1
        try:
            return json.loads(read_regular_bytes(path))  # a FIFO or a link there never hangs
        except FileNotFoundError:
            if last:
                raise
        except OSError as exc:
            if exc.errno not in _TRANSIENT or last:
                raise storage_error(exc, "read", path) from exc
        except ValueError as exc:
            if last:
                raise CorruptRunError(
                    f"{path} is not valid JSON ({exc}); run `localrun verify --repair` to "
                    "rebuild it from the run's segments"
                ) from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise AssertionError("unreachable")
