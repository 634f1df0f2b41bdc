"""Object stores for replica remotes: a folder (``file://``) and S3 (``s3://``, pyarrow.fs).

Every object of a run is immutable except ``<project>/<id>/manifest.json`` (a copy of the
newest revision), so a put of any other key is put-if-absent: on a folder, the object is
written under a temp name, fsynced and ``link``ed into place (``link`` never overwrites, so two
syncers racing on one object cannot clobber each other, and a reader never sees half an
object); on S3 an object appears whole when its upload completes. ``manifest.json`` is replaced
(``rename`` on a folder, a plain PUT on S3).

Any failure on the remote side (down, read-only, full, no permission) is
:class:`~localrun.errors.RemoteUnavailableError`; a local source that vanished mid-copy (a
segment a compaction removed) is ``FileNotFoundError`` for the engine to handle.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import secrets
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .._store.atomic import fsync_dir
from .._store.layout import MANIFEST, is_temp
from ..errors import RemoteUnavailableError, SyncError, UsageError
from .remote import Progress

_CHUNK = 1 << 20


def check_key(key: str) -> str:
    """A remote key is a relative POSIX path that stays under the remote root."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in key:
        raise SyncError(f"refusing the remote name {key!r}: it would leave the remote root")
    return key


def is_mutable(key: str) -> bool:
    """Only a run's ``manifest.json`` (a derived copy) is ever replaced."""
    return posixpath.basename(key) == MANIFEST


def _unavailable(url: str, what: str, exc: BaseException) -> RemoteUnavailableError:
    code = getattr(exc, "errno", None)
    hint = {
        errno.ENOSPC: "the remote is full: free space there, then sync again",
        errno.EDQUOT: "the remote's quota is exhausted: free space there, then sync again",
        errno.EROFS: "the remote is read-only: mount it writable, then sync again",
        errno.EACCES: "permission denied on the remote: fix its permissions or credentials",
        errno.EPERM: "permission denied on the remote: fix its permissions or credentials",
    }.get(code or 0, "check that the remote is reachable and writable, then sync again")
    return RemoteUnavailableError(f"{url}: cannot {what}: {exc}; {hint}")


@contextmanager
def _remote(url: str, what: str) -> Iterator[None]:
    """An OSError of the store (down, full, read-only, refused) as the remote being unavailable."""
    try:
        yield
    except SyncError:
        raise
    except OSError as exc:
        raise _unavailable(url, what, exc) from exc


class Hashing:
    """Copies chunks while counting bytes and, when there is a hash to check, hashing them
    (one read of the source)."""

    def __init__(self, src: BinaryIO, progress: Progress, sha256: str | None) -> None:
        self.src, self.progress = src, progress
        self.digest = hashlib.sha256() if sha256 is not None else None
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        while chunk := self.src.read(_CHUNK):
            if self.digest is not None:
                self.digest.update(chunk)
            self.size += len(chunk)
            self.progress.advance(len(chunk))
            yield chunk

    def check(self, key: str, size: int, sha256: str | None) -> None:
        found = self.digest.hexdigest() if self.digest is not None else None
        if self.size != size or found != sha256:
            raise SyncError(
                f"{key}: the local file changed while it was copied ({self.size} bytes, sha256 "
                f"{(found or '-')[:12]}, expected {size} and {(sha256 or '-')[:12]}); an "
                "object of a run must never change: run `localrun verify` on the local run"
            )


def _walk(folder: str, rel: str, out: dict[str, int]) -> None:
    """Add the regular files under ``folder`` (not through links; no temp files) to ``out``."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in entries:
        if is_temp(e.name):
            continue
        name = f"{rel}{e.name}"
        if e.is_dir(follow_symlinks=False):
            _walk(e.path, name + "/", out)
        elif e.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                out[name] = e.stat(follow_symlinks=False).st_size


class LocalStore:
    """A replica root in a local or mounted folder (``file:///path``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = "file://" + str(root)
        # Folders that got an object whose name is not durable yet: fsynced all at once before
        # the next put_bytes (a revision, a manifest copy, the marker), so a revision never
        # outlives, after a power cut, an object it names, at one folder fsync per run.
        self._unsynced: set[Path] = set()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def stat(self, key: str) -> int | None:
        with _remote(self.url, f"look at {key}"):
            try:
                return os.stat(self._path(key)).st_size
            except (FileNotFoundError, NotADirectoryError):
                return None

    def sizes(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with _remote(self.url, f"list {prefix}"):
            _walk(str(self._path(prefix.rstrip("/"))), "", out)
        return out

    def put_file(
        self, key: str, src: Path, size: int, sha256: str | None, progress: Progress
    ) -> None:
        with open(src, "rb") as f:  # FileNotFoundError: gone locally, the engine re-reads
            hashing = Hashing(f, progress, sha256)
            self._put(key, hashing.chunks(), lambda: hashing.check(key, size, sha256))

    def put_bytes(self, key: str, data: bytes) -> None:
        if is_mutable(key):  # the manifest copy: atomic, but a hint not worth an fsync
            self._put(key, iter([data]), lambda: None, durable=False)
            return
        with _remote(self.url, "make the objects durable"):
            for folder in sorted(self._unsynced):
                fsync_dir(folder)
            self._unsynced.clear()
        self._put(key, iter([data]), lambda: None, now=True)

    def _put(
        self,
        key: str,
        chunks: Iterator[bytes],
        check: Callable[[], None],
        now: bool = False,
        durable: bool = True,
    ) -> None:
        final = self._path(key)
        with _remote(self.url, f"write {key}"):
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(
                f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
            )
            try:
                with open(tmp, "wb") as out:
                    for chunk in chunks:
                        out.write(chunk)
                    out.flush()
                    if durable:
                        os.fsync(out.fileno())
                check()
                if is_mutable(key):
                    os.replace(tmp, final)
                else:
                    # FileExistsError: another syncer put the same immutable object first
                    with contextlib.suppress(FileExistsError):
                        os.link(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            if now:
                fsync_dir(final.parent)
            elif durable:
                self._unsynced.add(final.parent)

    def get_bytes(self, key: str) -> bytes | None:
        with _remote(self.url, f"read {key}"):
            try:
                return self._path(key).read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                return None

    def list(self, prefix: str) -> list[str]:
        with _remote(self.url, f"list {prefix}"):
            try:
                names = os.listdir(self._path(prefix.rstrip("/")))
            except (FileNotFoundError, NotADirectoryError):
                return []
        return sorted(n for n in names if not is_temp(n))

    def close(self) -> None:
        pass


class ArrowStore:
    """A replica root in an object store that pyarrow.fs reaches (``s3://bucket/prefix``).

    Credentials come from the usual AWS variables and files (never the command line); the
    endpoint of an S3-compatible server from ``?endpoint_override=host:port&scheme=http`` in
    the URL or ``AWS_ENDPOINT_URL``.
    """

    def __init__(self, url: str) -> None:
        import pyarrow.fs as pafs

        self._pafs = pafs
        self.url = _without_credentials(url)
        try:
            self.fs, path = pafs.FileSystem.from_uri(_one_request_puts(url))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use the remote {self.url}: {exc}") from exc
        self.base = path.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}" if self.base else check_key(key)

    def stat(self, key: str) -> int | None:
        with _remote(self.url, f"look at {key}"):
            info = self.fs.get_file_info(self._path(key))
        if info.type != self._pafs.FileType.File:
            return None
        return int(info.size)

    def sizes(self, prefix: str) -> dict[str, int]:
        folder = self._path(prefix.rstrip("/"))
        selector = self._pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        with _remote(self.url, f"list {prefix}"):
            infos = self.fs.get_file_info(selector)
        start = len(folder) + 1
        return {
            i.path[start:]: int(i.size)
            for i in infos
            if i.type == self._pafs.FileType.File and not is_temp(i.base_name)
        }

    def put_file(
        self, key: str, src: Path, size: int, sha256: str | None, progress: Progress
    ) -> None:
        with open(src, "rb") as f:
            hashing = Hashing(f, progress, sha256)
            with _remote(self.url, f"write {key}"):
                # A multipart upload that is never completed leaves no object: atomic enough.
                out = self.fs.open_output_stream(self._path(key), metadata={})
                try:
                    for chunk in hashing.chunks():
                        out.write(chunk)
                    hashing.check(key, size, sha256)
                except BaseException:
                    _abort(out)
                    raise
                out.close()

    def put_bytes(self, key: str, data: bytes) -> None:
        with _remote(self.url, f"write {key}"), self.fs.open_output_stream(self._path(key)) as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes | None:
        with _remote(self.url, f"read {key}"):
            try:
                with self.fs.open_input_stream(self._path(key)) as f:
                    return bytes(f.read())
            except FileNotFoundError:
                return None

    def list(self, prefix: str) -> list[str]:
        selector = self._pafs.FileSelector(self._path(prefix.rstrip("/")), allow_not_found=True)
        with _remote(self.url, f"list {prefix}"):
            infos = self.fs.get_file_info(selector)
        return sorted(posixpath.basename(i.path) for i in infos if not is_temp(i.base_name))

    def close(self) -> None:
        pass


def _one_request_puts(url: str) -> str:
    """``url`` with pyarrow's ``allow_delayed_open`` on, unless the URL sets it.

    Without it pyarrow opens every upload as a multipart upload (create, one part, complete:
    three requests, and a multipart object on servers that keep those apart); with it an object
    smaller than a part (10 MB: every segment, revision and manifest of a usual run) is one
    PUT. Measured on Swift on loopback: 30 ms a put instead of 135 ms, which made a push of
    1,000 runs four times faster (docs/performance.md). An upload is still atomic (a single
    PUT or a completed multipart one), and errors still surface, at the latest when the
    stream is closed, inside the store's error handling."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or "allow_delayed_open" in parse_qs(parts.query):
        return url
    query = "&".join(q for q in (parts.query, "allow_delayed_open=true") if q)
    return urlunsplit(parts._replace(query=query))


def _abort(out: object) -> None:
    """Drop an upload half done: pyarrow's S3 stream has ``abort`` (no object appears)."""
    abort = getattr(out, "abort", None)
    try:
        if callable(abort):
            abort()
        else:
            out.close()  # type: ignore[attr-defined]
    except OSError:
        pass


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
