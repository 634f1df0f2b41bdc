"""The readers: runs, history and files as Arrow tables (pandas and polars on request).

A reader takes one manifest snapshot and reads only the segments it lists. Segments are
immutable and appear whole (published by link), and the manifest is replaced atomically, so a
reader never sees a partial file, never takes the writer's lease and never blocks a writer.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from . import _settings
from ._store import atomic, listing
from ._store import manifest as mf
from ._store.layout import (
    FILES,
    HISTORY,
    LOG,
    MANIFEST,
    RESUME_DIR,
    ROOT_MARKER,
    parse_segment_name,
    project_dir,
    run_dir,
    sanitize_id,
)
from ._store.lease import is_valid, provably_dead
from ._store.markers import remove_marker
from ._store.records import Attempt, ConsoleEntry, FileVersion, Owner, Revision, SegmentEntry
from ._store.revisions import read_revision
from ._store.safe_io import check_regular, open_inside
from .errors import (
    CorruptRunError,
    FormatVersionError,
    LocalrunError,
    RunNotFoundError,
    UsageError,
)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

    from ._store import arrays, segments
    from ._store import system as system_store
    from ._store.verify import Report as VerifyReport


class _OnFirstUse:
    """A module imported at its first attribute lookup. Listing runs needs neither pyarrow
    (most of a second to import on a loaded machine) nor the segment reader; history does."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


if not TYPE_CHECKING:
    pa = _OnFirstUse("pyarrow")
    segments = _OnFirstUse("localrun._store.segments")
    system_store = _OnFirstUse("localrun._store.system")
    arrays = _OnFirstUse("localrun._store.arrays")
    pc = _OnFirstUse("pyarrow.compute")


def arrow_schema(kinds: dict[str, str]) -> pa.Schema:
    """``schema.arrow_schema``, imported at the first history read."""
    from ._store.schema import arrow_schema as make

    return make(kinds)


# The step columns and the default kind, as ``_store.schema`` defines them (importing it means
# importing pyarrow; tests/test_listing.py checks that these agree with it).
STEP_COLUMNS = ["_step", "_timestamp", "_runtime"]
NUMBER = "number"
MEDIA, LIST_MEDIA = "media", "list<media>"


class _SegmentGone(Exception):
    """A listed segment was compacted away after this reader's manifest snapshot."""


@dataclass(frozen=True)
class DamagedRun:
    """A run folder whose manifest cannot be read: ``Api.runs`` leaves it out, so that listings
    can still show it (a damaged run hidden from ``ls`` looks like a run that vanished)."""

    project: str
    id: str
    problem: str  # what is wrong and what to do, relative to the run folder
    dir: Path | None  # None for a run on a remote root (Api(root="s3://..."))

    @property
    def path(self) -> str:
        """``"project/run_id"``, as ``StoredRun.path``."""
        return f"{self.project}/{self.id}"


@dataclass(frozen=True)
class ResumeMarker:
    """An auto-resume marker: job ``key`` resumes run ``project/run_id`` (``init(resume=True)``).

    ``run_id`` and ``written`` are None when the marker file cannot be read (clear it).
    """

    project: str
    key: str
    run_id: str | None
    written: float | None
    file: Path


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # scheme://...: a remote root, not a folder
# A run that cannot be read for these reasons is left out of runs() (damaged_runs() lists it).
_UNREADABLE = (RunNotFoundError, CorruptRunError, FormatVersionError)
_NO_ROOT_HINT = "point --root, LOCALRUN_DIR or Api(root) at the folder your runs are in"


class Api:
    """Read runs under a root (``root`` argument, else ``LOCALRUN_DIR``, else ./localruns)."""

    # The reader of URL roots (``localrun._query_remote.RemoteApi``, which registers itself when
    # imported): imported by name at the first URL root, so that listing a local root never
    # loads pyarrow's filesystems and this module never imports it.
    _url_reader: type[Api] | None = None

    def __new__(cls, root: str | os.PathLike[str] | None = None) -> Api:
        """A URL root (``s3://bucket/prefix``, ``file:///...``) is a replica made by sync: it is
        read by ``_url_reader``, a read-only ``Api`` over pyarrow's filesystems."""
        target = root if root is not None else _settings.env_text("LOCALRUN_DIR")
        if cls is Api and isinstance(target, str) and _URL.match(target):
            if Api._url_reader is None:
                importlib.import_module("localrun._query_remote")
            if Api._url_reader is None:
                raise UsageError(f"root {target!r} is a URL, and no reader of URL roots is loaded")
            return super().__new__(Api._url_reader)  # its __init__ runs next
        return super().__new__(cls)

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root: Path = _settings.root(root)
        mf.check_root(self.root)  # a root of a newer format: FormatVersionError, here

    @property
    def location(self) -> str:
        """Where the runs are, for messages: the root folder (the URL of a remote root)."""
        return str(self.root)

    def projects(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def runs(self, project: str | None = None) -> list[StoredRun]:
        """Every readable run of ``project`` (or of all projects), oldest first.

        A run whose manifest cannot be read is skipped here; ``localrun verify`` reports it.
        Each run is a snapshot of its newest revision, found through the project's listing
        index where that is provably current (``_store/listing.py``); the revision's other
        fields (config, summary, segments) are read when first asked for.
        """
        return self.runs_and_damaged(project)[0]

    def runs_and_damaged(
        self, project: str | None = None
    ) -> tuple[list[StoredRun], list[DamagedRun]]:
        """``runs(project)`` and ``damaged_runs(project)`` from one walk of the run folders:
        half the work of calling both (what ``localrun ls`` shows)."""
        runs, damaged = [], []
        for found in self._scan(project):
            if found.error is None:
                runs.append(StoredRun._listed(found))
            elif not isinstance(found.error, _UNREADABLE):
                raise found.error  # not the run's damage (the storage refused): say so
            elif (problem := _problem(found)) is not None:
                rdir = found.dir
                damaged.append(DamagedRun(rdir.parent.name, rdir.name, problem, rdir))
        return sorted(runs, key=lambda r: r.created), damaged

    def _listed(self, project: str) -> Iterator[tuple[str, StoredRun | None]]:
        """Each run folder of ``project`` in name order, with the run as its listing found it
        (None when it cannot be read), one at a time: the dashboard shows the runs read so far
        while it reads the rest. The listing saves its index once the walk is complete."""
        for found in listing.scan(project_dir(self.root, sanitize_id(project, "project name"))):
            yield found.folder, (StoredRun._listed(found) if found.error is None else None)

    def _scan(self, project: str | None) -> Iterator[listing.Listed]:
        """Every run folder of ``project`` (or of all projects), as the listing found it."""
        for p in [sanitize_id(project, "project name")] if project else self.projects():
            yield from listing.scan(project_dir(self.root, p))

    def _run_dirs(self, project: str | None) -> list[Path]:
        """Every run folder of ``project`` (or of all projects); dot-folders are skipped."""
        projects = [sanitize_id(project, "project name")] if project else self.projects()
        dirs = [project_dir(self.root, p) for p in projects]
        return [pd / name for pd in dirs for name in listing.run_names(pd)]

    def verify(self, path: str | None = None, repair: bool = False) -> list[VerifyReport]:
        """Check runs against their manifests (all runs, a project, or ``"project/run_id"``).

        With ``repair``: rebuild unreadable manifests from segments, adopt or quarantine orphan
        segments, remove dead writers' temp files, record dead owners as crashed.
        """
        if path and "/" in path:
            project, _, run_id = path.partition("/")
            dirs = [run_dir(self.root, project, run_id)]
            if not dirs[0].is_dir():
                raise RunNotFoundError(f"no run {path!r} under {self.root}")
        else:
            dirs = self._run_dirs(path)
        from ._store.verify import Report as VerifyReport
        from ._store.verify import verify_run

        ttl, opts = _settings.lease_ttl(), _settings.store_options()
        if path and "/" in path:
            return [verify_run(dirs[0], repair, ttl, opts)]  # one run: its error is the answer
        reports = []
        for d in dirs:  # many runs: one run's damage is its report, never the end of the walk
            try:
                reports.append(verify_run(d, repair, ttl, opts))
            except LocalrunError as exc:
                reports.append(VerifyReport(f"{d.parent.name}/{d.name}", problems=[str(exc)]))
        return reports

    def run(self, path: str) -> StoredRun:
        """One run, by ``"project/run_id"``."""
        project, sep, run_id = path.partition("/")
        if not sep or not project or not run_id:
            raise UsageError(f"run path {path!r} must look like 'project/run_id'")
        rdir = run_dir(self.root, project, run_id)
        if not rdir.is_dir():
            raise RunNotFoundError(
                f"no run {path!r} under {self.root}; `localrun ls` lists the runs there"
            )
        return StoredRun(rdir)

    def check(self, target: str | None = None) -> None:
        """Raise a clear error unless the root is a localrun root holding ``target`` (a project,
        or ``"project/run_id"``).

        The listings return nothing for a folder that holds no runs; on a cluster a typo in the
        root then looks like "my runs vanished". The command line calls this first.
        """
        root = self.root
        if not root.exists():
            raise RunNotFoundError(
                f"no localrun root at {root}: it does not exist; {_NO_ROOT_HINT}"
            )
        if not root.is_dir():
            raise UsageError(f"{root} is a file, not a localrun root; {_NO_ROOT_HINT}")
        if not (root / ROOT_MARKER).is_file() and not self._holds_runs():
            raise RunNotFoundError(
                f"{root} is not a localrun root (no {ROOT_MARKER} and no runs in it); "
                f"{_NO_ROOT_HINT}"
            )
        if not target:
            return
        project, sep, run_id = target.partition("/")
        if sep and (not project or not run_id):
            raise UsageError(f"run path {target!r} must look like 'project/run_id'")
        if not project_dir(root, project).is_dir():
            known = self.projects()
            raise RunNotFoundError(
                f"no project {project!r} under {root}; "
                + (f"its projects: {', '.join(known)}" if known else "it has no projects yet")
            )
        if sep and not run_dir(root, project, run_id).is_dir():
            raise RunNotFoundError(
                f"no run {target!r} under {root}; `localrun ls {project}` lists its runs"
            )

    def _holds_runs(self) -> bool:
        """Whether some project folder holds a run (a root made before the marker existed)."""
        try:
            return any(_remains(d) for d in self._run_dirs(None))
        except OSError:  # a folder we may not list is no evidence of runs
            return False

    def damaged_runs(self, project: str | None = None) -> list[DamagedRun]:
        """The run folders of ``project`` (or of all projects) whose manifest cannot be read:
        exactly those ``runs`` leaves out, except folders with nothing of a run in them (an
        empty or foreign folder is not a run)."""
        damaged = []
        for found in self._scan(project):
            if found.error is not None and (problem := _problem(found)) is not None:
                rdir = found.dir
                damaged.append(DamagedRun(rdir.parent.name, rdir.name, problem, rdir))
        return damaged

    def resume_markers(self, project: str | None = None) -> list[ResumeMarker]:
        """The auto-resume markers of ``project`` (or of all projects), by project and key."""
        projects = [sanitize_id(project, "project name")] if project else self.projects()
        found = []
        for p in projects:
            folder = project_dir(self.root, p) / RESUME_DIR
            for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                try:
                    data = atomic.read_json(f, attempts=3)
                except (FileNotFoundError, CorruptRunError):
                    data = None  # gone meanwhile, or unreadable: listed so it can be cleared
                data = data if isinstance(data, dict) else {}
                run_id, written = data.get("run_id"), data.get("written")
                found.append(
                    ResumeMarker(
                        project=p,
                        key=f.stem,
                        run_id=run_id if isinstance(run_id, str) else None,
                        written=float(written) if isinstance(written, (int, float)) else None,
                        file=f,
                    )
                )
        return found

    def clear_resume_marker(self, project: str, key: str) -> ResumeMarker:
        """Remove job ``key``'s marker in ``project``: its next ``init(resume=True)`` starts a
        new run. Returns what the marker held; :class:`RunNotFoundError` if there is none."""
        for marker in self.resume_markers(project):
            if marker.key == key:
                remove_marker(marker.file)
                return marker
        keys = [m.key for m in self.resume_markers(project)]
        raise RunNotFoundError(
            f"no resume marker {key!r} in project {project!r} under {self.root}; "
            + (f"its markers: {', '.join(keys)}" if keys else "it has none")
        )

    @staticmethod
    def current_job_key() -> str | None:
        """The auto-resume key of this shell's job (from the scheduler's job id or
        ``LOCALRUN_RESUME_KEY``), or None when there is none: the key is then made from the
        training script's folder and path, which only the training process knows."""
        key = _settings.job_key(_settings.env_text("LOCALRUN_RESUME_KEY"))
        return None if key.startswith("dir-") else key


def damage_of(folder: str | os.PathLike[str], error: LocalrunError) -> str | None:
    """What is wrong with a run folder that ``error`` says cannot be read: the problem
    ``damaged_runs`` gives it, or None when nothing of a run is in the folder. For a reader
    that met the error itself (the dashboard, one run), without walking the project."""
    return _problem(listing.Listed(os.fspath(folder), error=error))


def _problem(found: listing.Listed) -> str | None:
    """What is wrong with a run folder that cannot be read, relative to it (None: nothing of
    a run is in it: an empty or foreign folder is not a damaged run)."""
    rdir = found.dir
    if isinstance(found.error, RunNotFoundError):
        remains = _remains(rdir)
        if not remains:
            return None
        return (
            f"its state ({LOG}/ and {MANIFEST}) is missing but {remains}; run "
            f"`localrun verify --repair {rdir.parent.name}/{rdir.name}` to rebuild it"
        )
    return str(found.error).replace(f"{rdir}{os.sep}", "").replace(str(rdir), "the run")


def _remains(rdir: Path) -> str | None:
    """What of a run a folder holds (committed segments, saved files), or None."""
    history, files = rdir / HISTORY, rdir / FILES
    if (rdir / MANIFEST).is_file():
        return MANIFEST
    segments = (
        [p for p in history.iterdir() if parse_segment_name(p.name)] if history.is_dir() else []
    )
    if segments:
        return f"{HISTORY}/ holds {len(segments)} segment(s)"
    if files.is_dir() and any(files.iterdir()):
        return f"{FILES}/ holds saved files"
    return None


class StoredRun:
    """A run as stored: the manifest fields, its history and files (a snapshot; see refresh)."""

    _dir: Path | str

    def __init__(self, path: Path) -> None:
        self.dir = path
        self._rev: int | None = None
        self._full: mf.Manifest | None = None
        self._fields: dict[str, Any] = {}
        self._m = mf.load(path)

    @classmethod
    def _listed(cls, found: listing.Listed) -> StoredRun:
        """A run as a listing found it: the listed fields of revision ``found.rev`` now, the
        rest of that revision when first asked for (``_m``)."""
        run = cls.__new__(cls)
        run._dir = found.folder
        run._rev = found.rev
        run._full = found.manifest
        run._fields = found.fields or {}
        return run

    @property
    def dir(self) -> Path:
        """The run folder."""
        if isinstance(self._dir, str):  # from a listing: made at first use
            self._dir = Path(self._dir)
        return self._dir

    @dir.setter
    def dir(self, path: Path) -> None:
        self._dir = path

    @property
    def _m(self) -> mf.Manifest:
        """The snapshot's whole revision, read at first use when the run came from a listing:
        the listed revision itself (immutable), or the newest if it was pruned meanwhile (as
        after a refresh: a reader of a live run sees a newer state, never a mixed one)."""
        if self._full is None:
            try:
                self._m = read_revision(self.dir, self._rev or 0)
            except (FileNotFoundError, CorruptRunError):
                self._m = mf.load(self.dir)
        assert self._full is not None
        return self._full

    @_m.setter
    def _m(self, m: mf.Manifest) -> None:
        self._full = m
        self._fields = dict(m)

    def refresh(self) -> StoredRun:
        """Take a new snapshot of the manifest (a running writer commits every few seconds)."""
        self._m = mf.load(self.dir)
        return self

    @property
    def manifest(self) -> Revision:
        """The raw manifest (docs/format.md), as of the last snapshot."""
        return self._m

    # The listed fields (``_store/listing.FIELDS``) are read from the listing, the rest from _m.
    id = property(lambda self: self._fields["id"])
    project = property(lambda self: self._fields["project"])
    name = property(lambda self: self._fields.get("name") or self._fields["id"])
    notes = property(lambda self: self._m.get("notes"))
    tags = property(lambda self: list(self._m.get("tags") or []))
    group = property(lambda self: self._m.get("group"))
    job_type = property(lambda self: self._m.get("job_type"))
    config = property(lambda self: dict(self._m.get("config") or {}))
    created = property(lambda self: float(self._fields["created"]))
    updated = property(lambda self: float(self._fields["updated"]))
    last_step = property(lambda self: int(self._fields["last_step"]))
    attempts = property(lambda self: list(self._fields.get("attempts") or []))
    dropped_steps = property(lambda self: int(self._m.get("dropped_steps", 0)))

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    @property
    def rev(self) -> int:
        """The revision this snapshot is of (0 for a run of format 1, which keeps none): what
        changes at every commit, so a cache of what was read from a run is keyed by it."""
        rev = self._fields.get("rev")
        if isinstance(rev, int):
            return rev
        return self._rev or 0

    @property
    def summary(self) -> dict[str, Any]:
        return {k: mf.decode_value(v) for k, v in (self._m.get("summary") or {}).items()}

    @property
    def state(self) -> str:
        """The stored state, except that a "running" run whose owner is provably dead on this
        host shows as "crashed" (it is recorded so at the next resume or repair)."""
        return shown_state(str(self._fields.get("state", "running")), self._fields.get("owner"))

    @property
    def host(self) -> str | None:
        attempts = self.attempts
        return attempts[-1].get("host") if attempts else None

    @property
    def heartbeat_age(self) -> float | None:
        """Seconds since the owner's last heartbeat by this host's clock (approximate across
        hosts), or None when nobody owns the run."""
        owner = self._fields.get("owner")
        if not isinstance(owner, dict) or "hb_time" not in owner:
            return None
        return max(0.0, time.time() - float(owner["hb_time"]))

    @property
    def keys(self) -> list[str]:
        """Every logged key, with its kind in ``manifest['schema']``."""
        return sorted(self._m.get("schema") or {})

    def files(self) -> dict[str, dict[str, Any]]:
        """Saved files: name -> its latest version (``version``, ``path``, ``sha256``, ``size``,
        ``saved``, ``attempt``) plus ``versions``, how many are stored."""
        return {
            name: {**versions[-1], "versions": len(versions)}
            for name, versions in sorted((self._m.get("files") or {}).items())
            if versions
        }

    def file_versions(self, name: str) -> list[FileVersion]:
        """Every stored version of ``name``, oldest first."""
        versions = (self._m.get("files") or {}).get(name)
        if not versions:
            raise RunNotFoundError(
                f"run {self.path} has no saved file {name!r}; its files: "
                f"{', '.join(self.files()) or 'none'}"
            )
        return list(versions)

    def file_path(self, name: str, version: str | None = None) -> Path:
        """The local path of a saved file (the latest version unless ``version`` is given).

        :class:`CorruptRunError` when the manifest's path leaves the run, goes through a
        symbolic link, is missing, or names something other than a regular file (a FIFO
        would block whoever opens it).
        """
        rel = self.file_version(name, version)["path"]
        try:
            return check_regular(self.dir, rel, "saved file version")
        except FileNotFoundError:
            raise self._version_missing(name, rel) from None

    def file_version(self, name: str, version: str | None = None) -> FileVersion:
        """The stored record of one version of ``name`` (``version``, ``path``, ``sha256``,
        ``size``, ``saved``, ``attempt``): the latest unless ``version`` is given."""
        versions = self.file_versions(name)
        if version is None:
            return versions[-1]
        for v in versions:
            if v["version"] == version:
                return v
        raise RunNotFoundError(
            f"{self.path}:{name} has no version {version!r}; it has "
            f"{', '.join(v['version'] for v in versions)}"
        )

    def _version_missing(self, name: str, rel: object) -> CorruptRunError:
        return CorruptRunError(
            f"run {self.path}: the stored version {rel} of {name!r} is missing; run "
            "`localrun verify` to see what else is"
        )

    def open_file(self, name: str, version: str | None = None) -> IO[bytes]:
        """Open a saved file for reading (binary); refused like :meth:`file_path`."""
        rel = self.file_version(name, version)["path"]
        try:
            return open_inside(self.dir, rel, "saved file version")
        except FileNotFoundError:
            raise self._version_missing(name, rel) from None

    def segment_paths(self, all_attempts: bool = False) -> list[Path]:
        """The committed segment files, for engines that read Parquet themselves.

        Without ``all_attempts`` only segments with rows a reader sees are listed (a rewind can
        hide rows inside one: apply ``_step <=`` the bound, see docs/format.md).
        """
        return [
            check_regular(self.dir, seg["file"], "segment", missing_ok=True)
            for seg, _ in self._segments(all_attempts)
        ]

    def _segments(self, all_attempts: bool) -> Iterator[tuple[SegmentEntry, int | None]]:
        """The listed segments in position order, each with its visible bound (None: all of
        it); segments of which readers see nothing (hidden by rewinds) only ``all_attempts``."""
        bound_of = mf.visible_bounds(self._m)
        for seg in sorted(self._m["segments"], key=lambda s: (s["attempt"], s["seq"])):
            bound = None if all_attempts else bound_of(seg["attempt"], seg["seq"])
            if bound is not None and seg["min_step"] > bound:
                continue
            yield seg, bound

    def history(
        self,
        keys: Sequence[str] | None = None,
        all_attempts: bool = False,
        format: str = "arrow",
        stream: str = "history",
    ) -> Any:
        """The logged rows: ``_step``, ``_timestamp``, ``_runtime`` and the keys (all by default).

        Rows hidden by a rewind are left out unless ``all_attempts``, which also adds an
        ``_attempt`` column. A key the run never logged is an error once the run has ended;
        while it runs, such a key reads as a column of nulls (it may not be committed yet).
        ``format``: "arrow" (a ``pyarrow.Table``), "pandas" or "polars".
        """
        if stream == "system":
            return _convert(self._system_history(keys), format)
        if stream != "history":
            raise UsageError(f"stream={stream!r}: use 'history' (the logged rows) or 'system'")
        schema = arrow_schema(self._kinds_of(keys))
        if all_attempts:
            # _seq (where each row was logged) only orders rows: merged segments hold rows of
            # many flushes, and a step an attempt logged twice (run.rewind) keeps its order.
            schema = schema.insert(1, pa.field("_attempt", pa.int64()))
            schema = schema.append(pa.field("_seq", pa.int64()))
        try:
            table = self._read(schema, all_attempts)
        except _SegmentGone:
            # The writer compacted segments after this snapshot: take a new one, read again.
            self.refresh()
            return self.history(keys, all_attempts, format)
        if all_attempts:
            order = [("_attempt", "ascending"), ("_step", "ascending"), ("_seq", "ascending")]
            table = table.sort_by(order).drop_columns(["_seq"])
        return _convert(table, format)

    def _history_of(self, keys: Sequence[str], steps: Sequence[str]) -> pa.Table:
        """``history(keys)`` with only ``steps`` of the three step columns (``_step`` always):
        what a chart reads. A chart against steps needs neither clock column, and decoding
        them was a quarter of reading a run of five metrics."""
        schema = arrow_schema(self._kinds_of(keys))
        drop = [n for n in STEP_COLUMNS if n != "_step" and n not in steps]
        for name in drop:
            schema = schema.remove(schema.get_field_index(name))
        try:
            return self._read(schema, False)
        except _SegmentGone:
            self.refresh()
            return self._history_of(keys, steps)

    def _kinds_of(self, keys: Sequence[str] | str | None) -> dict[str, str]:
        """The kinds of ``keys`` (every key by default): a key the run never logged is an error
        once it has ended, and reads as numbers (nulls) while it runs."""
        kinds: dict[str, str] = self._m.get("schema") or {}
        if keys is None:
            return kinds
        if isinstance(keys, str):
            keys = [keys]
        missing = [k for k in keys if k not in kinds and k not in STEP_COLUMNS]
        if missing and self._m.get("state") != "running":
            raise UsageError(
                f"run {self.path} has no key {missing[0]!r}; its keys are: "
                f"{', '.join(sorted(kinds)) or 'none'}"
            )
        # A running run may not have committed a key yet: it reads as nulls until it has.
        return {k: kinds.get(k, NUMBER) for k in keys if k not in STEP_COLUMNS}

    def _read(self, schema: pa.Schema, all_attempts: bool) -> pa.Table:
        """Every listed segment's rows in ``schema``, rows hidden by rewinds left out unless
        ``all_attempts``. :class:`_SegmentGone` when the writer compacted segments after this
        snapshot (the caller refreshes and reads again)."""
        tables = [
            self._read_segment(seg, bound, schema, all_attempts)
            for seg, bound in self._segments(all_attempts)
        ]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def attempt_starts(self) -> dict[int, int]:
        """The first visible step of each attempt that logged a visible row: where a chart
        draws its resume markers. Rows hidden by rewinds do not count, and an attempt whose rows
        are all hidden is left out. Reads only the step and origin columns."""
        schema = arrow_schema({}).insert(1, pa.field("_attempt", pa.int64()))
        try:
            tables = [
                self._read_segment(seg, bound, schema, False)
                for seg, bound in self._segments(False)
            ]
        except _SegmentGone:
            self.refresh()
            return self.attempt_starts()
        if not tables:
            return {}
        table = pa.concat_tables(tables)
        return minimum_by(table["_attempt"], table["_step"])

    @property
    def system_keys(self) -> list[str]:
        """The keys of the system samples (docs/system.md), read from the segments' footers:
        cheap enough for a page that asks at every change of a live run."""
        found: set[str] = set()
        for entry in self._m.get("system") or []:
            try:
                found.update(system_store.keys(self.dir, entry))
            except FileNotFoundError:  # merged away after this snapshot: read again
                self.refresh()
                return self.system_keys
        return sorted(found)

    def _system_history(self, keys: Sequence[str] | None) -> pa.Table:
        """The system samples (docs/system.md): ``_timestamp``, ``_runtime``, ``_attempt`` and
        the sampled keys, in time order."""
        tables = []
        for entry in self._m.get("system") or []:
            try:
                t = system_store.read(self.dir, entry)
            except FileNotFoundError:  # merged away after this snapshot: read again
                self.refresh()
                return self._system_history(keys)
            tables.append(
                t.append_column("_attempt", arrays.repeat_int64(entry["attempt"], t.num_rows))
            )
        if not tables:
            return pa.table({"_timestamp": arrays.float64s([])})
        table = pa.concat_tables(tables, promote_options="default").sort_by("_timestamp")
        if keys is not None:
            keys = [keys] if isinstance(keys, str) else list(keys)
            missing = [k for k in keys if k not in table.column_names]
            if missing:
                raise UsageError(
                    f"run {self.path} has no system key {missing[0]!r}; it has: "
                    f"{', '.join(c for c in table.column_names if not c.startswith('_'))}"
                )
            table = table.select(["_timestamp", "_runtime", "_attempt", *keys])
        return table

    def _read_segment(
        self, seg: SegmentEntry, bound: int | None, schema: pa.Schema, all_attempts: bool
    ) -> pa.Table:
        """One listed segment's rows in the run's schema, read without leaving the run.

        A damaged file (truncated, not Parquet, no ``_step``, a column of the wrong kind, other
        rows than listed) is a :class:`CorruptRunError` naming it and the repair.
        """
        rel = seg["file"]
        with self._open_segment(rel) as f:
            try:
                return segments.read_rows(f, seg, bound, schema)
            except segments.DAMAGE_ERRORS as exc:
                raise self._damaged_segment(rel, exc) from exc

    def _open_segment(self, rel: str) -> BinaryIO:
        """A listed segment, open; :class:`_SegmentGone` when a newer revision no longer lists
        it (compacted after this snapshot), else a missing one is :class:`CorruptRunError`."""
        try:
            return open_inside(self.dir, rel, "segment")
        except FileNotFoundError:
            if rel not in {s["file"] for s in mf.load(self.dir)["segments"]}:
                raise _SegmentGone(rel) from None
            raise CorruptRunError(
                f"run {self.path} lists {rel}, which is missing; run `localrun verify` "
                "to see what else is"
            ) from None

    def _damaged_segment(self, rel: str, exc: Exception) -> CorruptRunError:
        return segments.damaged(self.dir, rel, exc)

    def console_chunks(self, attempt: int | None = None) -> list[ConsoleEntry]:
        """The listed chunks of captured output, oldest first (of one attempt, if given)."""
        chunks = list(self._m.get("console") or [])
        return [c for c in chunks if attempt is None or c["attempt"] == attempt]

    def read_console_chunk(self, chunk: ConsoleEntry) -> str:
        """One chunk's text; a chunk rotated away since this snapshot reads as empty."""
        try:
            f = open_inside(self.dir, chunk["file"], "console chunk")
        except FileNotFoundError:
            return ""
        with f:
            return f.read().decode("utf-8", "replace")

    def console_header(self, attempt: int) -> str:
        """The line that starts an attempt's output (its host and start time)."""
        found: Attempt = {"attempt": attempt}
        for a in self.attempts:
            if a["attempt"] == attempt:
                found = a
        return console_header(found)

    def console(self, attempt: int | None = None) -> str:
        """The captured stdout and stderr (of one attempt, if given), each attempt's output
        after a header line naming it (docs/logging.md)."""
        return "".join(self.console_texts(attempt))

    def console_texts(
        self, attempt: int | None = None, shown: set[str] | None = None
    ) -> Iterator[str]:
        """:meth:`console` in pieces: each chunk's text, after its attempt's header line.

        A follower (``localrun logs -f``, the dashboard) passes the same ``shown`` set on every
        call after a :meth:`refresh`: chunks already in it are skipped and new ones added, and a
        header is repeated only when an attempt's output starts (at the first call, or when the
        run was resumed meanwhile).
        """
        shown = set() if shown is None else shown
        current = None
        for chunk in self.console_chunks(attempt):
            if chunk["file"] in shown:
                current = chunk["attempt"]
                continue
            shown.add(chunk["file"])
            if chunk["attempt"] != current:
                current = chunk["attempt"]
                yield self.console_header(current)
            yield self.read_console_chunk(chunk)

    def media(self, key: str, step: int) -> Any:
        """The media value(s) logged as ``key`` at ``step``, opened: a PIL image for an Image,
        ``(counts, edges)`` numpy arrays for a Histogram, a ``pyarrow.Table`` for a Table; a list
        of them for a list. ``history()`` holds the references (JSON) for engines of your own.
        """
        opened = [self._decode_media(ref) for ref in self.media_refs(key, step)]
        return opened if self._media_kind(key) == LIST_MEDIA else opened[0]

    def media_refs(self, key: str, step: int) -> list[dict[str, Any]]:
        """The checked references of the media value(s) logged as ``key`` at ``step`` (one, or
        a list's), for a reader that opens the blobs its own way (:meth:`media_bytes`)."""
        from .media import parse_reference

        kind = self._media_kind(key)
        table = self.history([key])
        # One lookup, not the column as Python.
        at = pc.index(table["_step"], arrays.int64_scalar(step)).as_py()
        value = table[key][at].as_py() if at >= 0 else None
        if value is None:
            raise RunNotFoundError(f"run {self.path} has no {key!r} at step {step}")
        return [parse_reference(ref) for ref in (value if kind == LIST_MEDIA else [value])]

    def media_bytes(self, ref: dict[str, Any]) -> bytes:
        """A media blob's bytes, read inside the run and checked against its sha256."""
        try:
            with open_inside(self.dir, ref["path"], "media") as f:
                data = f.read()
        except FileNotFoundError:
            raise CorruptRunError(
                f"run {self.path}: media {ref['path']} is missing; run `localrun verify` to see "
                "what else is"
            ) from None
        if hashlib.sha256(data).hexdigest() != ref.get("sha256"):
            raise CorruptRunError(f"run {self.path}: media {ref['path']} does not match its sha256")
        return data

    def _media_kind(self, key: str) -> str:
        kind = (self._m.get("schema") or {}).get(key)
        if kind not in (MEDIA, LIST_MEDIA):
            raise UsageError(
                f"run {self.path}: key {key!r} holds no media (its kind is {kind or 'unknown'})"
            )
        return str(kind)

    def _decode_media(self, ref: dict[str, Any]) -> Any:
        data = self.media_bytes(ref)
        if ref["_type"] == "image":
            from PIL import Image

            return Image.open(io.BytesIO(data))
        if ref["_type"] == "histogram":
            import numpy as np

            hist = json.loads(data)
            return np.asarray(hist["counts"]), np.asarray(hist["edges"])
        return segments.read_parquet(pa.BufferReader(data))

    def __repr__(self) -> str:
        return f"<localrun.StoredRun {self.path} state={self.state} last_step={self.last_step}>"


def shown_state(state: str, owner: Owner | None) -> str:
    """A run's state as readers show it: the stored one, except that "running" with an owner
    provably dead on this host is "crashed" (it is recorded so at the next resume or repair).
    Apart from :attr:`StoredRun.state` for caches that keep the fields, not the run."""
    if state == "running" and is_valid(owner) and isinstance(owner, dict) and provably_dead(owner):
        return "crashed"
    return state


def console_header(a: Attempt) -> str:
    """The line that starts an attempt's output in ``console()`` and ``localrun logs``."""
    started = a.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (
        f"=== localrun: attempt {a.get('attempt')} on {a.get('host') or '?'}, started {when} ===\n"
    )


def _convert(table: pa.Table, format: str) -> Any:
    if format == "arrow":
        return table
    if format == "pandas":
        try:
            return table.to_pandas()
        except ImportError:
            raise UsageError("format='pandas' needs pandas: pip install 'pandas>=2'") from None
    if format == "polars":
        try:
            import polars
        except ImportError:
            raise UsageError("format='polars' needs polars: pip install 'polars>=1'") from None
        return polars.from_arrow(table)
    raise UsageError(f"format={format!r} is not one of 'arrow', 'pandas', 'polars'")


def minimum_by(groups: pa.ChunkedArray, values: pa.ChunkedArray) -> dict[Any, Any]:
    """The smallest of ``values`` for each value of ``groups`` (a few: attempts).

    Compute kernels given Arrow scalars, not ``group_by``: pyarrow's grouping (as its
    ``to_numpy`` and any conversion of a Python value) imports pandas at its first use, 0.35 s
    holding the GIL, which the dashboard paid at a first chart beside its first runs page."""
    out: dict[Any, Any] = {}
    for group in pc.unique(groups):
        if group.is_valid:
            out[group.as_py()] = pc.min(pc.filter(values, pc.equal(groups, group))).as_py()
    return out
