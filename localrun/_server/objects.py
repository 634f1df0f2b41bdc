"""The storage side of ``localrun server``: named objects in a localrun root, each put once.

A replica is a localrun root in the same format (DESIGN §8): everything a push sends is
immutable (segments, saved file versions, media, revisions), so the server offers
put-if-absent of named objects and no delete. The one exception is a run's ``manifest.json``,
a derived copy of its newest revision: it is replaced, never by an older revision's copy (a
slow syncer cannot roll it back) nor by another run's (409). A put streams the
body into a temp file next to its final name (``<name>.tmp-<host>-<pid>-<rand>``, the store's
own convention, so ``localrun verify --repair`` knows a dead server's leftovers), hashing it
as it is written, and only a body of the declared size and sha256 is fsynced and hard-linked
into place: a reader sees the whole object or none, and a link never replaces a file another
put won the race for. A key is the one string a client chooses that becomes a path here: it
is checked like a run's own file names (relative, no ``..``, no NUL, no temp tag, bounded
length) and walked without following symbolic links, so nothing is read or written outside
the root.

Everything here is blocking file I/O on purpose: the app calls it in worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from .._store.atomic import fsync_dir, temp_path
from .._store.layout import (
    FORMAT_VERSION,
    MANIFEST,
    ROOT_MARKER,
    check_file_name,
    inside,
    is_temp,
    safe_dir,
    sanitize_id,
)
from .._store.safe_io import open_regular
from ..errors import CorruptRunError, InvalidIdError

MAX_KEY = 1024  # characters of a whole key: far above any key a push makes
MAX_PART = 255  # bytes of one part of it (NAME_MAX of Linux filesystems)
MAX_MARKER = 64 * 1024  # a root marker is a few dozen bytes of JSON
CHUNK = 1 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_GONE = (FileNotFoundError, NotADirectoryError)


def chunks(f: IO[bytes]) -> Iterator[bytes]:
    """A file's bytes in chunks of :data:`CHUNK`, closed at the end: the body of a streamed
    answer (starlette iterates a plain iterator in a worker thread), never held whole."""
    with f:
        while block := f.read(CHUNK):
            yield block


class ObjectError(Exception):
    """A request the store refuses, with the HTTP status that says why.

    400 a bad key or a body that is not what its headers declare, 403 a key that goes through
    a symbolic link, 409 an object that exists with other content, 507 no space left.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_key(key: str, write: bool = False) -> str:
    """``key`` if it is a canonical relative POSIX path that may name something in the root.

    Canonical (no ``//``, ``./`` or trailing ``/``) so that one object has one key. Names
    starting with ``.`` at the top are the server's own. With ``write``, a key must also be
    the root marker or lie inside a run (``<project>/<run_id>/...`` with both parts valid ids
    as written): a push has nothing else to put.
    """
    if not key or len(key) > MAX_KEY:
        raise ObjectError(400, f"key of {len(key)} characters: a key has 1 to {MAX_KEY}")
    if "\x00" in key or "\\" in key:
        raise ObjectError(400, f"key {key!r} contains a NUL byte or a backslash")
    if key.startswith("/"):
        raise ObjectError(400, f"key {key!r} is absolute: keys are relative to the server's root")
    try:
        normal = check_file_name(key)
    except InvalidIdError as exc:
        raise ObjectError(400, f"key {key!r} refused: {exc}") from None
    if normal != key:
        raise ObjectError(400, f"key {key!r} is not canonical; send it as {normal!r}")
    parts = key.split("/")
    if any(len(p.encode()) > MAX_PART for p in parts):
        raise ObjectError(400, f"key {key[:60]!r}... has a part longer than {MAX_PART} bytes")
    if parts[0].startswith("."):
        raise ObjectError(400, f"key {key!r} names the server's own bookkeeping")
    if write and key != ROOT_MARKER and not _in_a_run(parts):
        raise ObjectError(
            400,
            f"key {key!r} is not inside a run: a push only puts {ROOT_MARKER} and "
            "<project>/<run_id>/<file> (project and run id made of [A-Za-z0-9_-])",
        )
    return key


def _in_a_run(parts: list[str]) -> bool:
    if len(parts) < 3:
        return False
    try:
        return sanitize_id(parts[0], "project") == parts[0] and sanitize_id(parts[1]) == parts[1]
    except InvalidIdError:
        return False


def _full(key: str, exc: OSError) -> ObjectError:
    what = "the file size limit" if exc.errno == errno.EFBIG else "no space"
    return ObjectError(
        507,
        f"the server has {what} left for {key} ({exc.strerror}); nothing of it was stored. "
        "Free space on the server's disk, then sync again",
    )


@contextlib.contextmanager
def _writing(key: str) -> Iterator[None]:
    """A full disk becomes a 507, any other failed write a 500 saying why (the client retries
    both later); the path on the server is not told, the key is."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise _full(key, exc) from None
        raise ObjectError(
            500,
            f"the server cannot write {key} ({exc.strerror or exc}); nothing of it was stored. "
            "Check the permissions and the filesystem of the server's root",
        ) from exc


class RootStore:
    """Put-if-absent objects under ``root``, which must be a localrun root already."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._copy_lock = threading.Lock()  # one manifest.json replace at a time (see Upload)

    def path(self, key: str) -> Path:
        """Where ``key`` lives, refused (403) if an existing part of it is a symbolic link."""
        try:
            return inside(self.root, key, "object")
        except CorruptRunError:
            raise ObjectError(
                403,
                f"key {key!r} goes through a symbolic link on the server; it never reads or "
                "writes outside its root",
            ) from None

    def stat(self, key: str) -> int | None:
        """The size of object ``key``, or None when there is no regular file by that name."""
        try:
            mode = os.lstat(self.path(check_key(key)))
        except _GONE:
            return None
        return mode.st_size if stat.S_ISREG(mode.st_mode) else None

    def open(self, key: str) -> tuple[BinaryIO, int] | None:
        """Object ``key`` opened for reading (never through a link) and its size, or None."""
        path = self.path(check_key(key))
        try:
            f = open_regular(path)
        except _GONE:
            return None
        except CorruptRunError:  # a folder, a FIFO, a link: not an object
            return None
        return f, os.fstat(f.fileno()).st_size

    def list(self, prefix: str) -> list[str]:
        """The names directly under folder ``prefix`` ("" is the root), without temp files."""
        folder = self.root if prefix == "" else self.path(check_key(prefix))
        try:
            names = os.listdir(folder)
        except _GONE:
            return []
        top = prefix == ""
        return sorted(n for n in names if not is_temp(n) and not (top and n.startswith(".")))

    def begin(self, key: str, size: int, sha256: str) -> Upload:
        """Start receiving object ``key`` of ``size`` bytes and hash ``sha256``."""
        check_key(key, write=True)
        if size < 0 or not SHA256.match(sha256):
            raise ObjectError(400, f"{key}: size {size} or sha256 {sha256!r} is not valid")
        if key == ROOT_MARKER and size > MAX_MARKER:
            raise ObjectError(400, f"{ROOT_MARKER} of {size} bytes: a root marker is small JSON")
        final = self.path(key)
        parent = final.parent.relative_to(self.root).as_posix()
        with _writing(key):
            try:
                if parent != ".":
                    safe_dir(self.root, parent)
            except CorruptRunError:  # an existing part is a link or a file
                raise ObjectError(
                    403, f"key {key!r} goes through something that is not a folder on the server"
                ) from None
            return Upload(key, final, size, sha256, self._copy_lock)


def is_copy(key: str) -> bool:
    """Whether ``key`` is a run's ``manifest.json``: a derived copy of its newest revision,
    the one object a push replaces (readers use ``log/``; the copy serves older readers)."""
    parts = key.split("/")
    return len(parts) == 3 and parts[2] == MANIFEST


class Upload:
    """One object being received: a temp file beside its final name, hashed as it grows."""

    def __init__(
        self, key: str, final: Path, size: int, sha256: str, copy_lock: threading.Lock
    ) -> None:
        self.key = key
        self._copy_lock = copy_lock
        self.final = final
        self.size = size
        self.sha256 = sha256
        self.received = 0
        self._hash = hashlib.sha256()
        self.tmp = temp_path(final)
        self._fd: int | None = os.open(self.tmp, _OPEN_NEW, 0o644)

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; a body longer than declared is refused at once (400)."""
        self.received += len(chunk)
        if self.received > self.size:
            raise ObjectError(
                400,
                f"the body of {self.key} is longer than the {self.size} bytes declared; "
                "nothing was stored",
            )
        self._hash.update(chunk)
        assert self._fd is not None
        view = memoryview(chunk)
        with _writing(self.key):
            while view:
                view = view[os.write(self._fd, view) :]

    def finish(self) -> bool:
        """Check the body, make it durable and put it in place: True if it is new, False if
        the same object was there already. Raises :class:`ObjectError` (nothing stored)."""
        if self.received != self.size:
            raise ObjectError(
                400,
                f"the body of {self.key} has {self.received} bytes, {self.size} were declared "
                "(the upload was cut short); nothing was stored",
            )
        digest = self._hash.hexdigest()
        if digest != self.sha256:
            raise ObjectError(
                400,
                f"the body of {self.key} has sha256 {digest}, {self.sha256} was declared (the "
                "file changed while it was sent, or the transfer damaged it); nothing was stored",
            )
        assert self._fd is not None
        with _writing(self.key):
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if self.key == ROOT_MARKER:
                return self._finish_marker()
            if is_copy(self.key):
                with self._copy_lock:
                    return self._finish_copy()
            try:
                os.link(self.tmp, self.final)
            except FileExistsError:
                self._check_same()
                return False
            finally:
                self.tmp.unlink(missing_ok=True)
            fsync_dir(self.final.parent)
        return True

    def abort(self) -> None:
        """Drop what was received (the temp file): after any failure, and on disconnect."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self.tmp.unlink(missing_ok=True)

    def _check_same(self) -> None:
        """The object exists: a no-op if it holds these very bytes, else a conflict (409)."""
        try:
            with open_regular(self.final) as f:
                h = hashlib.sha256()
                while block := f.read(CHUNK):
                    h.update(block)
        except CorruptRunError:
            raise ObjectError(409, f"{self.key} exists on the server and is not a file") from None
        if h.hexdigest() != self.sha256:
            raise ObjectError(
                409,
                f"{self.key} already exists on the server with other content (sha256 "
                f"{h.hexdigest()[:16]}..., this one {self.sha256[:16]}...); objects of a run are "
                "written once and never replaced: is another run using this project/id?",
            )

    def _finish_copy(self) -> bool:
        """Replace a run's manifest.json, unless the one there is of a newer revision (a slower
        syncer must not roll it back) or of another run (409). True if it was replaced."""
        try:
            new = _revision_of(self.tmp.read_bytes())
            with open_regular(self.final) as f:
                old = _revision_of(f.read())
        except _GONE:
            old = None
        except CorruptRunError:
            raise ObjectError(409, f"{self.key} exists on the server and is not a file") from None
        try:
            if old is not None and new is not None:
                if old[0] and new[0] and old[0] != new[0]:
                    raise ObjectError(
                        409,
                        f"{self.key} on the server is of another run (uid {old[0]}, this one "
                        f"{new[0]}): runs are never merged",
                    )
                if old[1] > new[1]:
                    return False
            os.replace(self.tmp, self.final)
        finally:
            self.tmp.unlink(missing_ok=True)
        fsync_dir(self.final.parent)
        return True

    def _finish_marker(self) -> bool:
        """The root marker is the server's own: a pushed one is checked, never replaces it."""
        try:
            info = json.loads(self.tmp.read_bytes())
            found = info.get("format", 1) if isinstance(info, dict) else None
        except ValueError:
            found = None
        if found != FORMAT_VERSION:
            self.tmp.unlink(missing_ok=True)
            raise ObjectError(
                409,
                f"the pushed {ROOT_MARKER} says format {found!r}, this server stores format "
                f"{FORMAT_VERSION}: run the same localrun version on both sides",
            )
        try:
            os.link(self.tmp, self.final)
        except FileExistsError:
            return False
        finally:
            self.tmp.unlink(missing_ok=True)
        fsync_dir(self.final.parent)
        return True


def _revision_of(data: bytes) -> tuple[str, int] | None:
    """``(uid, rev)`` of a revision's bytes, or None if they are not a revision."""
    try:
        info = json.loads(data)
    except ValueError:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("rev"), int):
        return None
    return str(info.get("uid", "")), int(info["rev"])
