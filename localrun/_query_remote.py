"""Reading a localrun root that is not a local folder: a replica on S3 (or ``file://``).

``localrun.Api(root="s3://bucket/prefix")`` lands here (``Api.__new__`` dispatches on a URL). A
replica is a localrun root in the same format, filled by ``localrun sync``: objects first, then
the revision that names them (DESIGN §8). So a reader here takes, per run, the newest revision
whose segments and saved file versions are all there (with their recorded sizes): a push still
under way or killed half way shows the run as of its previous complete revision, never a
revision with holes.

Everything goes through a ``pyarrow.fs`` filesystem (S3 credentials and endpoint as the AWS
tools take them: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, or the URL
query, e.g. ``?endpoint_override=host:port&scheme=http``). A run costs one recursive listing of
its folder and one read of a revision; history reads each listed segment in place (Parquet footer
and the columns asked for, by ranged GETs). Read-only: nothing here writes to the remote, and what
only makes sense on the root the jobs write to (verify, resume markers, local paths) is refused
with a clear error.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any, BinaryIO, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from . import _settings
from ._query import _URL, Api, DamagedRun, ResumeMarker, StoredRun, _SegmentGone
from ._store import revisions
from ._store.layout import (
    LOG,
    MANIFEST,
    ROOT_MARKER,
    parse_revision_name,
    revision_name,
    sanitize_id,
)
from ._store.records import Revision
from ._store.verify import Report as VerifyReport
from .errors import (
    CorruptRunError,
    FormatVersionError,
    LocalrunError,
    RemoteUnavailableError,
    RunNotFoundError,
    UsageError,
)

SCHEMES = ("s3", "file")
_READ_ONLY = "a remote root is a read-only replica"


def is_url(root: object) -> bool:
    """Whether ``root`` names a remote root (``scheme://...``) rather than a local folder."""
    return isinstance(root, str) and bool(_URL.match(root))


def redact(url: str) -> str:
    """``url`` without credentials (``s3://key:secret@bucket``) and query: for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def open_url(url: str) -> tuple[Any, str]:
    """The pyarrow filesystem of ``url`` and the root's path in it."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise UsageError(
            f"root {redact(url)!r}: {scheme}:// is not a root localrun can read; use a local "
            f"folder or one of {', '.join(s + '://' for s in SCHEMES)}"
        )
    from pyarrow import fs

    try:
        filesystem, path = fs.FileSystem.from_uri(url)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UsageError(f"root {redact(url)!r} cannot be opened: {exc}") from exc
    path = str(path).rstrip("/")
    if scheme == "s3" and not path:
        raise UsageError(f"root {redact(url)!r} names no bucket: use s3://bucket[/prefix]")
    return filesystem, path


class _Store:
    """One remote root: reads of its objects, each failure of the remote a clear error."""

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        self.fs, self.base = open_url(url)

    def key(self, rel: str) -> str:
        """The filesystem path of ``rel`` ("" is the root itself)."""
        return "/".join(p for p in (self.base, rel) if p)

    def label(self, rel: str) -> str:
        """The URL of ``rel`` under the root, for messages and for engines (DuckDB, Spark)."""
        return f"{self.url}/{rel}"

    def _failed(self, what: str, rel: str, exc: BaseException) -> RemoteUnavailableError:
        return RemoteUnavailableError(
            f"could not {what} {self.label(rel)}: {exc}; check that the server is up and the "
            "endpoint and keys are right (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY)"
        )

    def listing(self, rel: str, recursive: bool = False) -> dict[str, int | None]:
        """Names under folder ``rel`` (relative to it): a file's size, None for a folder.

        Empty when the folder does not exist.
        """
        from pyarrow import fs

        selector = fs.FileSelector(self.key(rel), allow_not_found=True, recursive=recursive)
        try:
            infos = self.fs.get_file_info(selector)
        except (pa.ArrowException, OSError) as exc:
            raise self._failed("list", rel, exc) from exc
        start = len(self.key(rel)) + 1 if self.key(rel) else 0
        return {
            info.path[start:]: (info.size if info.type == fs.FileType.File else None)
            for info in infos
        }

    def read(self, rel: str) -> bytes:
        """The bytes of object ``rel``; ``FileNotFoundError`` when it is absent."""
        try:
            with self.fs.open_input_stream(self.key(rel)) as f:
                return bytes(f.read())
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise self._failed("read", rel, exc) from exc

    def open(self, rel: str) -> Any:
        """Object ``rel`` opened for random access (Parquet reads its footer first)."""
        try:
            return self.fs.open_input_file(self.key(rel))
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError) as exc:
            raise self._failed("open", rel, exc) from exc


def _json(store: _Store, rel: str) -> Any:
    try:
        return json.loads(store.read(rel))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{store.label(rel)} is not JSON ({exc})") from exc


def _inside(run: str, rel: object, what: str) -> str:
    """``rel`` (from a revision, so untrusted) as a name inside the run, or CorruptRunError.

    An object store has no links: staying inside is a matter of the name alone.
    """
    parts = PurePosixPath(rel).parts if isinstance(rel, str) else ()
    if (
        not parts
        or PurePosixPath(str(rel)).is_absolute()
        or "\x00" in str(rel)
        or any(p in ("..", ".", "") for p in parts)
    ):
        raise CorruptRunError(
            f"run {run}: the {what} path {rel!r} is not a name inside the run; localrun never "
            "reads outside a run folder. Push the run again from its local root"
        )
    return "/".join(parts)


@dataclass(frozen=True)
class _Loaded:
    manifest: Revision
    objects: dict[str, int | None]  # the run folder's listing (name -> size)


def _complete(m: Revision, objects: dict[str, int | None]) -> str | None:
    """What of revision ``m`` the remote lacks (the first missing object), or None."""
    for seg in m.get("segments") or []:
        size = objects.get(str(seg.get("file")), -1)
        if size == -1 or ("bytes" in seg and size is not None and size != seg["bytes"]):
            return str(seg.get("file"))
    for versions in (m.get("files") or {}).values():
        for v in versions:
            size = objects.get(str(v.get("path")), -1)
            if size == -1 or ("size" in v and size is not None and size != v["size"]):
                return str(v.get("path"))
    return None


def _load(store: _Store, rel: str) -> _Loaded:
    """The newest revision of run folder ``rel`` whose objects are all on the remote."""
    objects = store.listing(rel, recursive=True)
    names = (name.removeprefix(f"{LOG}/") for name in objects if name.startswith(f"{LOG}/"))
    revs = sorted(r for r in map(parse_revision_name, names) if r is not None)
    candidates = [f"{LOG}/{revision_name(r)}" for r in reversed(revs)]
    if not candidates and MANIFEST in objects:
        candidates = [MANIFEST]  # a run of format 1: its manifest.json is its state
    if not candidates:
        raise RunNotFoundError(f"no run at {store.label(rel)} (no {LOG}/ and no {MANIFEST})")
    problems: list[str] = []
    for name in candidates:
        try:
            m = revisions.parse(_json(store, f"{rel}/{name}"), store.label(f"{rel}/{name}"))
        except FileNotFoundError:
            continue  # removed since the listing (pruned by a push)
        except FormatVersionError:
            raise
        except CorruptRunError as exc:
            problems.append(str(exc))
            continue
        if name != MANIFEST and m.get("rev") != parse_revision_name(name.split("/")[-1]):
            problems.append(f"{store.label(f'{rel}/{name}')} says it is revision {m.get('rev')}")
            continue
        missing = _complete(m, objects)
        if missing is None:
            return _Loaded(m, objects)
        problems.append(f"revision {m.get('rev')} names {missing}, which is not there yet")
    raise CorruptRunError(
        f"run {store.label(rel)} has no revision whose objects are all there "
        f"({'; '.join(problems[:3])}): a push is under way, or was stopped and not rerun; "
        "run `localrun sync` again from the root the run was written to"
    )


class RemoteRun(StoredRun):
    """A run on a remote root, as of its newest complete revision (see the module docstring).

    Reads like :class:`~localrun.StoredRun`; it has no local folder, so :meth:`file_path` and
    :meth:`segment_paths` are refused in favour of :meth:`open_file` and :meth:`segment_urls`.
    """

    def __init__(self, store: _Store, rel: str) -> None:  # no super().__init__: no local dir
        self._store = store
        self._rel = rel
        self.url: str = store.label(rel)
        loaded = _load(store, rel)
        self._m = loaded.manifest
        self._objects = loaded.objects

    def __getattr__(self, name: str) -> NoReturn:
        if name == "dir":
            raise AttributeError(
                f"run {self.url} is on a remote root and has no local folder; use its url"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def refresh(self) -> RemoteRun:
        """Take the newest complete revision again (a sync may have pushed a newer one)."""
        loaded = _load(self._store, self._rel)
        self._m, self._objects = loaded.manifest, loaded.objects
        return self

    @property
    def state(self) -> str:
        """The state as pushed: liveness of the writer is judged on the root it writes to."""
        return str(self._m.get("state", "running"))

    def file_path(self, name: str, version: str | None = None) -> NoReturn:
        raise UsageError(
            f"run {self.url} is on a remote root: its files have no local path; read them with "
            "open_file(name)"
        )

    def open_file(self, name: str, version: str | None = None) -> IO[bytes]:
        """Open a saved file for reading (binary, a pyarrow stream over the remote object)."""
        rel = _inside(self.url, self.file_version(name, version)["path"], "saved file version")
        try:
            stream: IO[bytes] = self._store.fs.open_input_stream(
                self._store.key(f"{self._rel}/{rel}")
            )
        except FileNotFoundError:
            raise self._version_missing(name, rel) from None
        except (pa.ArrowException, OSError) as exc:
            raise self._store._failed("read", f"{self._rel}/{rel}", exc) from exc
        return stream

    def segment_paths(self, all_attempts: bool = False) -> NoReturn:
        raise UsageError(
            f"run {self.url} is on a remote root: its segments have no local path; "
            "segment_urls() gives their URLs for DuckDB or Spark"
        )

    def segment_urls(self, all_attempts: bool = False) -> list[str]:
        """The URLs of the committed segments (as :meth:`StoredRun.segment_paths` lists them)."""
        return [
            self._store.label(f"{self._rel}/{_inside(self.url, seg['file'], 'segment')}")
            for seg, _ in self._segments(all_attempts)
        ]

    def _open_segment(self, rel: str) -> BinaryIO:
        rel = _inside(self.url, rel, "segment")
        try:
            f: BinaryIO = self._store.open(f"{self._rel}/{rel}")
        except FileNotFoundError:
            fresh = _load(self._store, self._rel)
            if rel not in {s["file"] for s in fresh.manifest["segments"]}:
                raise _SegmentGone(rel) from None  # compacted away by a newer push: read again
            raise CorruptRunError(
                f"run {self.url}: segment {rel} is listed on the remote but cannot be read; "
                "push the run again from the root it was written to"
            ) from None
        return f

    def _damaged_segment(self, rel: str, exc: Exception) -> CorruptRunError:
        return CorruptRunError(
            f"run {self.url}: segment {rel} is damaged ({exc}); push the run again "
            "from the root it was written to"
        )

    def __repr__(self) -> str:
        return f"<localrun.RemoteRun {self.url} state={self.state} last_step={self.last_step}>"


class RemoteApi(Api):
    """Read runs on a remote root (``Api(root="s3://bucket/prefix")`` makes one)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        # No super().__init__: there is no local root. None: LOCALRUN_DIR, as for Api.
        url = root if root is not None else _settings.env_text("LOCALRUN_DIR")
        if not isinstance(url, str) or not is_url(url):
            raise UsageError(f"RemoteApi needs a URL root like s3://bucket/prefix, not {url!r}")
        self._store = _Store(url)
        self.url: str = self._store.url
        self._check_format()

    def __getattr__(self, name: str) -> NoReturn:
        if name == "root":
            raise AttributeError(f"{self.url} is a remote root and has no local path; use url")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def location(self) -> str:
        return self.url

    def _check_format(self) -> None:
        """Refuse a root written by a newer localrun (as a local root is refused)."""
        try:
            info = _json(self._store, ROOT_MARKER)
        except (FileNotFoundError, CorruptRunError):
            return
        if isinstance(info, dict):
            revisions.check_format(info, self._store.label(ROOT_MARKER))

    def _folders(self, rel: str) -> list[str]:
        return sorted(
            name
            for name, size in self._store.listing(rel).items()
            if size is None and not name.startswith(".")
        )

    def projects(self) -> list[str]:
        return self._folders("")  # "" is the root itself: listing("") lists self.base

    def _run_rels(self, project: str | None) -> list[str]:
        projects = [sanitize_id(project, "project name")] if project else self.projects()
        return [f"{p}/{r}" for p in projects for r in self._folders(p)]

    def runs(self, project: str | None = None) -> list[StoredRun]:
        """Every readable run of ``project`` (or of all projects), oldest first."""
        out: list[StoredRun] = []
        for rel in self._run_rels(project):
            try:
                out.append(RemoteRun(self._store, rel))
            except (RunNotFoundError, CorruptRunError, FormatVersionError):
                continue  # listed by damaged_runs()
        return sorted(out, key=lambda r: r.created)

    def run(self, path: str) -> RemoteRun:
        """One run, by ``"project/run_id"``."""
        project, sep, run_id = path.partition("/")
        if not sep or not project or not run_id:
            raise UsageError(f"run path {path!r} must look like 'project/run_id'")
        rel = f"{sanitize_id(project, 'project name')}/{sanitize_id(run_id)}"
        try:
            return RemoteRun(self._store, rel)
        except RunNotFoundError:
            raise RunNotFoundError(f"no run {path!r} under {self.url}") from None

    def check(self, target: str | None = None) -> None:
        """Raise a clear error unless the remote root holds ``target`` (a project, or
        ``"project/run_id"``); an empty or mistyped root is an error, not an empty list."""
        if not self.projects():
            raise RunNotFoundError(
                f"{self.url} holds no localrun runs; check the URL (push with `localrun sync`)"
            )
        if not target:
            return
        project, sep, run_id = target.partition("/")
        if sep and (not project or not run_id):
            raise UsageError(f"run path {target!r} must look like 'project/run_id'")
        if project not in self.projects():
            raise RunNotFoundError(
                f"no project {project!r} under {self.url}; its projects: "
                f"{', '.join(self.projects())}"
            )
        if sep:
            self.run(target)

    def runs_and_damaged(
        self, project: str | None = None
    ) -> tuple[list[StoredRun], list[DamagedRun]]:
        """Both lists: a replica has no listing index, so this is the two calls."""
        return self.runs(project), self.damaged_runs(project)

    def damaged_runs(self, project: str | None = None) -> list[DamagedRun]:
        """Run folders of ``project`` (or of all projects) that hold objects but no complete
        readable revision: exactly those ``runs`` leaves out (``dir`` is None: no local folder)."""
        found = []
        for rel in self._run_rels(project):
            try:
                RemoteRun(self._store, rel)
                continue
            except RunNotFoundError:
                if not any(size is not None for size in self._store.listing(rel, True).values()):
                    continue  # an empty folder is not a run
                problem = f"it holds objects but no revision in {LOG}/; push it again"
            except LocalrunError as exc:
                problem = str(exc)
            project_name, run_id = rel.split("/")
            found.append(DamagedRun(project_name, run_id, problem, None))
        return found

    def verify(self, path: str | None = None, repair: bool = False) -> list[VerifyReport]:
        raise UsageError(
            f"{_READ_ONLY} ({self.url}): verify the root the runs are written to; a push "
            "copies only what verifies there"
        )

    def resume_markers(self, project: str | None = None) -> list[ResumeMarker]:
        raise UsageError(
            f"{_READ_ONLY} ({self.url}) and holds no resume markers: they live on the root "
            "the jobs write to"
        )

    def clear_resume_marker(self, project: str, key: str) -> ResumeMarker:
        self.resume_markers(project)
        raise AssertionError("unreachable")  # resume_markers always raises

    def __repr__(self) -> str:
        return f"<localrun.RemoteApi {self.url}>"


Api._url_reader = RemoteApi
