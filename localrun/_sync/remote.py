"""What the sync engine and every kind of remote agree on (DESIGN §8).

Sync is copying immutable things, then a revision: every segment, saved file version and media
blob of a run is written once and never changed, and a revision names the ones it uses. So a
push sends the objects the remote lacks (a re-push of one it has is a no-op), then the newest
revision. A remote reader uses the newest revision whose objects are all there, which makes a
push idempotent, resumable after a kill at any instant, and safe when many nodes push at once.

Two shapes of remote:

- a **replica** (``file://``, ``s3://``, a ``localrun server``) is a localrun root in this same
  format; it only needs an :class:`ObjectStore` (put-if-absent of named objects), and one engine
  (``replica.py``) pushes to all of them;
- a **projection** (MLflow) maps a run onto another model; it implements :class:`Remote` itself
  and keeps what it needs to stay idempotent in :attr:`Cursor.extra`.

Nothing here changes local data: a push only reads the run (it never takes the manifest mutex,
so the writer is never slowed, locked or fenced by sync).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .._store.records import Revision


@dataclass(frozen=True)
class Obj:
    """An immutable object of a run, named relative to the run's folder."""

    rel: str  # "history/0001-000003.parquet", "files/ckpt/model.pt.v1-0001-000002", "media/..."
    size: int
    sha256: str | None  # recorded for saved files; computed while pushing for segments


@dataclass(frozen=True)
class LocalRun:
    """One run as a push sees it: its newest readable revision, read without any lock."""

    project: str
    run_id: str
    dir: Path
    rev: int
    manifest: Revision
    revision_bytes: bytes  # the exact bytes of log/<rev>.json, pushed as they are

    @property
    def uid(self) -> str:
        return str(self.manifest.get("uid", ""))


@dataclass
class Cursor:
    """How far one remote holds one run: kept under ``<root>/.sync/`` (``cursor.py``).

    Only ever an optimisation for replicas (a cursor that lags means objects are checked
    again, never sent twice); a projection may keep more in ``extra`` (MLflow's run id).
    """

    remote: str  # the remote's URL, without credentials
    project: str
    run_id: str
    uid: str
    rev: int  # the newest revision the remote holds with every object it names
    extra: dict[str, str | int | float] = field(default_factory=dict)


class Progress(Protocol):
    """Told of bytes as they are sent (the command's rich progress bar, or nothing)."""

    def advance(self, nbytes: int) -> None: ...


class Remote(Protocol):
    """A place runs are pushed to."""

    url: str  # without credentials: it names the remote in cursors and messages

    def push(self, run: LocalRun, cursor: Cursor | None, progress: Progress) -> Cursor:
        """Make the remote hold ``run`` as of ``run.rev``, and return the new cursor.

        Raises :class:`~localrun.errors.RemoteConflictError` when the remote holds a different
        run (another uid) under the same project/id, and
        :class:`~localrun.errors.RemoteUnavailableError` when the remote is down, slow, full or
        refuses the token (the daemon retries those with backoff).
        """
        ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """What a replica remote offers: named objects under the remote root.

    Keys are POSIX paths relative to the remote root (``<project>/<id>/history/...``). Each
    put is atomic (readers see the whole object or none) and idempotent (putting an object
    that is there with the same size is a no-op).

    Every key is immutable (put-if-absent: a put never changes an object that is there)
    **except** ``<project>/<id>/manifest.json``, the copy of the newest revision, which a put
    replaces whatever its size (``fsstore.is_mutable`` says which). The engine looks (``stat``,
    or one ``sizes`` listing of the run) before it puts, so a store may also simply overwrite
    immutable keys with the same bytes.
    A store refuses a key that would leave its root (``fsstore.check_key``) with SyncError.
    """

    url: str

    def stat(self, key: str) -> int | None:
        """The size of object ``key``, or None when it is absent."""
        ...

    def sizes(self, prefix: str) -> dict[str, int] | None:
        """Every object under the folder key ``prefix``, at any depth, by its key relative to
        ``prefix``, with its size ({} when there is none); None when the store cannot list a
        tree at once (the engine then looks at each object with :meth:`stat`).

        What a first push of a run asks instead of one ``stat`` per object and a listing of
        ``log/``: on S3 that is one request where a HEAD of a missing key costs two.
        """
        ...

    def put_file(
        self, key: str, src: Path, size: int, sha256: str | None, progress: Progress
    ) -> None:
        """Store the file ``src`` as ``key``, streaming (never the whole file in memory).

        ``sha256`` is the hash the run records for the object (saved files, media, diffs),
        checked against the bytes sent; None for a segment, whose hash no revision records:
        a store that must declare one (a ``localrun server``) computes it, the others check
        the size only (hashing a segment twice, once to know and once to check, doubled the
        CPU cost of a push to a folder and only caught a segment rewritten in place at the same
        size between the two reads, which the writer never does).
        """
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes | None:
        """The content of ``key``, or None when it is absent."""
        ...

    def list(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (a folder key), or [] when there is none."""
        ...

    def close(self) -> None: ...
