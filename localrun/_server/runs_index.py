"""The runs page's data: every run of a root as a typed record, cached by revision.

A run's config, summary, tags and notes live in its newest revision, one JSON file a run:
reading 10,000 of them at every poll of the runs page would cost seconds. So
:class:`RunsIndex` keeps what it read per run with the revision it read and that file's
identity, and at each request proves per run, with the listing index's own check
(``listing.still_newest``: two lookups, no read), that the revision is still the newest; only
runs that fail it are read again (a project's first fill through its listing; in threads
where the disk makes reads wait, as NFS does). A first fill starts from what the last server
saved in the project (``runs_cache``: the same proof per run), and saves what it read; while
a first fill of many runs is under way, the dashboard's requests get the runs read so far
(:class:`Reading`) instead of waiting for all of them. The state is derived again at every
request (a "running" run whose owner died shows as "crashed" without a commit), and a damaged
run is read again only when its files change.

Filters, sorting and paging work on :class:`RunRecord` values, so a typo in a field name is a
type error, not a silently empty column.
"""

from __future__ import annotations

import math
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeAlias

from .. import Api
from .._query import StoredRun, damage_of
from .._store import listing
from .._store.layout import LOG, MANIFEST
from .._store.records import Owner
from ..errors import (
    CorruptRunError,
    FormatVersionError,
    LocalrunError,
    RunNotFoundError,
    UsageError,
)
from . import runs_cache
from .heartbeats import Heartbeats, shown
from .run_records import Details, RunRecord, Scalar

STATES = ("running", "finished", "failed", "crashed", "preempted", "damaged")
SORTS = (
    "created",
    "updated",
    "id",
    "name",
    "project",
    "group",
    "state",
    "last_step",
    "attempts",
    "host",
)
OPS = ("<=", ">=", "!=", "=", "<", ">", "~")  # longest first: "<=" is not "<" then "=value"
_WHERE = re.compile(r"^(config|summary)\.([^<>=!~]+)(<=|>=|!=|=|<|>|~)(.*)$", re.DOTALL)
NOTES_CHARS = 200
BULK = 50  # runs of a project new to the index from which it is read through its listing
CHUNK = 500  # runs a first fill reads between two showings of what it has read so far
PARALLEL = 64  # runs read in this thread first, to see whether threads would help the rest
READERS = 8
WAITING = 1.0  # time those reads waited on the disk per time they computed: threads from here
# A run folder that cannot be read for these reasons is listed as damaged (as Api.runs does).
_UNREADABLE = (RunNotFoundError, CorruptRunError, FormatVersionError)
MAX_LIMIT = 1000
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class Condition:
    """One ``where``: ``config.lr>=0.01``; numbers compare as numbers, ``~`` is a substring."""

    field: str  # "config.lr"
    op: str
    text: str

    @classmethod
    def parse(cls, text: str) -> Condition:
        m = _WHERE.match(text)
        if m is None:
            raise UsageError(
                f"where={text!r} is not like 'config.lr>=0.01' or 'summary.loss<0.5': "
                f"config. or summary., a key, one of {' '.join(OPS)}, a value"
            )
        return cls(f"{m.group(1)}.{m.group(2)}", m.group(3), m.group(4))

    def holds(self, record: RunRecord) -> bool:
        value = record.value(self.field)
        if value is None:
            return False  # a run without the key matches no condition on it
        if self.op == "~":
            return self.text.lower() in _text(value).lower()
        number = _number(self.text)
        if number is not None and _is_number(value):
            return _compare(float(value), number, self.op)
        if self.op in ("=", "!="):
            return (_text(value) == self.text) == (self.op == "=")
        if isinstance(value, str):
            return _compare(value, self.text, self.op)
        return False


@dataclass(frozen=True)
class Query:
    """The runs page's parameters, checked."""

    project: str | None = None
    q: str = ""
    states: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    group: str | None = None
    host: str | None = None
    where: tuple[Condition, ...] = ()
    sort: str = "created"
    descending: bool = True
    offset: int = 0
    limit: int = 100

    def matches(self, r: RunRecord) -> bool:
        if self.project is not None and r.project != self.project:
            return False
        if self.states and r.state not in self.states:
            return False
        if self.tags and not set(self.tags) <= set(r.tags):
            return False
        if self.group is not None and r.group != self.group:
            return False
        if self.host is not None and r.host != self.host:
            return False
        if self.q and not _haystack(r).count(self.q.lower()):
            return False
        return all(c.holds(r) for c in self.where)


@dataclass(frozen=True)
class Page:
    """One page of matching runs, and what the page's controls offer."""

    total: int
    offset: int
    limit: int
    projects: list[str]
    config_columns: list[str]
    summary_columns: list[str]
    runs: list[RunRecord]
    reading: Reading | None = None  # a first fill under way: the page is of the runs read so far

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "projects": self.projects,
            "columns": {"config": self.config_columns, "summary": self.summary_columns},
            "runs": [r.as_json() for r in self.runs],
        }
        if self.reading is not None:
            found["reading"] = {"read": self.reading.read, "of": self.reading.of}
        return found


@dataclass(frozen=True)
class Reading:
    """A first fill under way, as far as it got: ``read`` of ``of`` run folders, the records
    of those (what a runs page shows meanwhile, rather than nothing for seconds)."""

    projects: list[str]
    records: list[RunRecord]
    read: int
    of: int


@dataclass
class _Entry:
    """What the index keeps of one run: the revision it read and that file's identity (to
    prove it is still the newest with two lookups), the listed fields, and the record built."""

    rev: int
    identity: tuple[int, int, int] | None  # None: a run without log/ (format 1), re-read
    stored_state: str
    owner: Owner | None
    record: RunRecord


@dataclass
class RunsIndex:
    """Every run of ``api``'s root, re-reading only runs whose revision changed.

    A request lists the project folders and, per run, checks that the revision it read is
    still the newest (``listing.still_newest``: the listing index's own proof, two lookups and
    no read). Only runs that fail it are read again, through ``StoredRun``. The page of a
    query is kept until a run changes (``generation``), so a poll of an idle root costs the
    checks alone.
    """

    api: Api
    heartbeats: Heartbeats | None = None  # localrun ui: a still heartbeat shows as crashed
    reads: int = 0  # run folders read, damaged ones too (the tests check the cache by it)
    generation: int = 0  # bumped whenever a record changes
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _damaged: dict[str, tuple[Fingerprint, RunRecord | None]] = field(default_factory=dict)
    _pages: dict[Query, tuple[int, Page]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _filled: bool = False  # a fill completed: later ones wait (they read only changed runs)
    _reading: Reading | None = None  # the first fill's progress, while it runs

    def records(self) -> tuple[list[str], list[RunRecord]]:
        """The root's projects and every run (damaged ones included)."""
        with self._lock:
            return self._records()

    def _records(self) -> tuple[list[str], list[RunRecord]]:
        projects = self.api.projects()
        folders = [(p, os.fspath(self.api.root / p)) for p in projects]
        names = {base: listing.run_names(base) for _, base in folders}
        of, done = sum(map(len, names.values())), 0
        # Progress is shown for a first read of many runs, never for a few (a page would
        # show a part of a small root for a moment, then the rest).
        show = not self._filled and of - len(self._cache) >= CHUNK
        fresh: dict[str, _Entry] = {}
        damaged: dict[str, tuple[Fingerprint, RunRecord | None]] = {}
        records: list[RunRecord] = []
        changed = False
        for project, base in folders:
            failed: dict[str, LocalrunError] = {}
            stale: list[str] = []
            for name in names[base]:
                folder = f"{base}{os.sep}{name}"
                entry = self._cache.get(folder)
                if entry is None or not _unchanged(folder, entry):
                    stale.append(folder)
                    continue
                changed = self._keep(folder, entry, fresh, records) or changed
            stale = self._still_damaged(stale, damaged, records)
            if len(stale) >= BULK:  # a first fill: what an earlier server read may still hold
                stale, kept = _from_saved(base, stale)
                for folder, entry in kept:
                    self._keep(folder, entry, fresh, records)
                changed = changed or bool(kept)
            done += len(names[base]) - len(stale)
            bulk = len(stale) >= BULK  # still many to read: through the project's listing
            parts = self._listed_parts(project, stale) if bulk else [(stale, {})]
            for part, listed in parts:
                for folder, read in zip(part, _each(_read, part, listed), strict=True):
                    if read is None:
                        continue
                    self.reads += 1
                    if isinstance(read, LocalrunError):
                        failed[folder] = read
                        continue
                    self._keep(folder, read, fresh, records)
                    changed = True
                done += len(part)
                if show:
                    self._show(projects, records, done, of)
            if bulk:
                _save(base, fresh)
            for folder, exc in failed.items():
                problem = damage_of(folder, exc)
                name = os.path.basename(folder)
                record = RunRecord(project, name, "damaged", problem=problem) if problem else None
                damaged[folder] = (_fingerprint(folder), record)
                records += [record] if record is not None else []
                changed = True
        if changed or fresh.keys() != self._cache.keys() or damaged.keys() != self._damaged.keys():
            self.generation += 1
            self._pages.clear()
        self._cache, self._damaged = fresh, damaged
        self._filled, self._reading = True, None
        return projects, records

    def _show(self, projects: list[str], records: list[RunRecord], done: int, of: int) -> None:
        """Let pages asked for during the first fill show the runs read so far."""
        self._reading = Reading(projects, list(records), done, of)

    def _listed_parts(
        self, project: str, stale: list[str]
    ) -> Iterator[tuple[list[str], dict[str, StoredRun]]]:
        """``stale`` in parts of :data:`CHUNK` folders, each with the runs the project's listing
        made of them (``Api._listed``, one run at a time: the listing's on-disk index knows
        each run's newest revision, so only that one file is read per run, when first asked).
        Both are in name order, so each part takes the listing up to its last folder."""
        walk = self.api._listed(project)
        listed: dict[str, StoredRun] = {}
        for start in range(0, len(stale), CHUNK):
            part = stale[start : start + CHUNK]
            for folder, run in walk:
                if run is not None:
                    listed[folder] = run
                if folder >= part[-1]:
                    break
            yield part, {f: run for f in part if (run := listed.pop(f, None)) is not None}
        for _ in walk:  # to its end: the listing saves its index there
            pass

    def _keep(
        self, folder: str, entry: _Entry, fresh: dict[str, _Entry], out: list[RunRecord]
    ) -> bool:
        """Take ``entry`` into this listing with its state as shown now (a "running" run whose
        owner died shows as crashed without a commit); whether its record changed."""
        state = shown(self.heartbeats, entry.stored_state, entry.owner)
        moved = state != entry.record.state
        if moved:
            entry.record = replace(entry.record, state=state)
        fresh[folder] = entry
        out.append(entry.record)
        return moved

    def _still_damaged(
        self,
        folders: list[str],
        damaged: dict[str, tuple[Fingerprint, RunRecord | None]],
        out: list[RunRecord],
    ) -> list[str]:
        """``folders`` but those found damaged before whose files have not changed since: they
        are taken as they were, not read again (reading a damaged revision waits for a writer
        that might be finishing it, a second or more per run at every poll)."""
        rest = []
        for folder in folders:
            known = self._damaged.get(folder)
            if known is not None and known[0] == _fingerprint(folder):
                damaged[folder] = known
                out += [known[1]] if known[1] is not None else []
            else:
                rest.append(folder)
        return rest

    def page(self, query: Query, partial: bool = False) -> Page:
        """The runs ``query`` selects, sorted and paged. With ``partial``, while the first fill
        reads many runs (10,000 on a cold disk or NFS take seconds), the page of those read so
        far, saying how far it got (the dashboard shows them meanwhile); without, the whole."""
        if not self._lock.acquire(blocking=False):
            reading = self._reading
            if partial and reading is not None:
                return _select(query, reading.projects, reading.records, reading)
            self._lock.acquire()
        try:
            projects, records = self._records()
            kept = self._pages.get(query)
            if kept is not None and kept[0] == self.generation:
                return kept[1]
        finally:
            self._lock.release()
        found = _select(query, projects, records)
        with self._lock:
            if len(self._pages) > 64:
                self._pages.clear()
            self._pages[query] = (self.generation, found)
        return found


def _select(
    query: Query, projects: list[str], records: list[RunRecord], reading: Reading | None = None
) -> Page:
    """The page of ``records`` that ``query`` selects (``reading``: they are a first fill's)."""
    matching = [r for r in records if query.matches(r)]
    ordered = sort_records(matching, query.sort, query.descending)
    config, summary = columns(matching)
    shown = ordered[query.offset : query.offset + query.limit]
    return Page(len(matching), query.offset, query.limit, projects, config, summary, shown, reading)


def _each(
    read: Callable[[str, dict[str, StoredRun]], _Entry | LocalrunError | None],
    folders: list[str],
    listed: dict[str, StoredRun],
) -> list[_Entry | LocalrunError | None]:
    """``read`` of every folder, in order; the rest in threads when the first ones waited on
    the disk.

    Why both: on NFS a read waits milliseconds for the server, and threads waiting release
    the GIL, so eight at once go up to eight times as fast; on a local or cached disk a read
    waits for nothing, and threads only contend for the GIL parsing JSON (measured: 10,000
    runs filled in 1.6 s in one thread, 3.4 s in eight). The first :data:`PARALLEL` reads
    tell which disk this is: the time they waited on it against the time they computed."""
    start, (ran, queued) = time.perf_counter(), _cpu_times()
    found = [read(f, listed) for f in folders[:PARALLEL]]
    rest = folders[PARALLEL:]
    if not rest:
        return found
    ran_now, queued_now = _cpu_times()
    ran, queued = ran_now - ran, queued_now - queued
    waited = time.perf_counter() - start - ran - queued
    if waited <= WAITING * ran:
        return found + [read(f, listed) for f in rest]
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        return found + list(pool.map(lambda f: read(f, listed), rest))


def _from_saved(base: str, folders: list[str]) -> tuple[list[str], list[tuple[str, _Entry]]]:
    """``folders`` split into those the project's saved file (``runs_cache``) does not prove
    current, and the entries it does (two lookups each, no read)."""
    saved = runs_cache.load(base)
    rest: list[str] = []
    kept: list[tuple[str, _Entry]] = []
    for folder in folders:
        s = saved.get(os.path.basename(folder))
        if s is not None and listing.still_newest(folder, s.rev, s.identity):
            kept.append((folder, _Entry(s.rev, s.identity, s.stored_state, s.owner, s.record)))
        else:
            rest.append(folder)
    return rest, kept


def _save(base: str, entries: Mapping[str, _Entry]) -> None:
    """Save the project's runs read whole for the next server (``runs_cache``)."""
    prefix = f"{base}{os.sep}"
    runs_cache.save(
        base,
        {
            folder[len(prefix) :]: runs_cache.Saved(
                e.rev, e.identity, e.stored_state, e.owner, e.record
            )
            for folder, e in entries.items()
            if folder.startswith(prefix) and e.identity is not None and e.record.details
        },
    )


def _cpu_times() -> tuple[float, float]:
    """This thread's seconds on a CPU, and waiting for one (Linux's schedstat: 0 elsewhere).
    Waiting for a CPU is not waiting on the disk: on a busy machine every disk would look
    slow. (schedstat's own CPU time lags for a running thread: thread_time does not.)"""
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            queued = int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        queued = 0.0
    return time.thread_time(), queued


def _read(folder: str, listed: dict[str, StoredRun]) -> _Entry | LocalrunError | None:
    """The entry of the run in ``folder`` (read the normal way, its newest revision; through
    ``listed`` if the project's listing found it), why it cannot be read, or None for a
    symbolic link (it could lead anywhere: the run routes refuse it too)."""
    if os.path.islink(folder):
        return None
    try:
        run = listed.get(folder) or StoredRun(Path(folder))
        found = details(run)  # reads the revision (its config, summary, notes...)
    except _UNREADABLE as exc:
        return exc
    m = run.manifest
    record = RunRecord(
        project=run.project,
        id=run.id,
        state=run.state,
        created=run.created,
        updated=run.updated,
        last_step=run.last_step,
        attempts=len(run.attempts),
        rev=run.rev,
        details=found,
    )
    identity = listing.revision_identity(folder, run.rev)
    return _Entry(run.rev, identity, str(m.get("state", "running")), m.get("owner"), record)


Fingerprint: TypeAlias = tuple[tuple[str, int, int, int], ...]


def _fingerprint(folder: str) -> Fingerprint:
    """The identity of a run folder's state files: ``manifest.json`` and every file in
    ``log/`` (name, inode, size, mtime). A repair, a resume or a hand edit changes it."""
    found = []
    for rel in [MANIFEST, *(f"{LOG}{os.sep}{n}" for n in sorted(_names(f"{folder}{os.sep}{LOG}")))]:
        try:
            st = os.stat(f"{folder}{os.sep}{rel}", follow_symlinks=False)
        except OSError:
            continue
        found.append((rel, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _unchanged(folder: str, entry: _Entry) -> bool:
    return entry.identity is not None and listing.still_newest(folder, entry.rev, entry.identity)


def details(run: StoredRun) -> Details:
    """A run's details from its revision (the one slow step the cache saves)."""
    notes = (run.notes or "").strip().split("\n", 1)[0][:NOTES_CHARS]
    tags = tuple(str(t) for t in run.tags)
    name = str(run.name)
    text = [run.id, name, run.project, run.group, run.job_type, run.host, notes, *tags]
    return Details(
        name=name,
        tags=tags,
        group=run.group,
        job_type=run.job_type,
        notes=notes,
        host=run.host,
        config=flatten(run.config),
        summary=flatten(run.summary),
        haystack="\n".join(str(t) for t in text if t).lower(),
    )


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """Nested keys dotted (``opt.name``), scalars only (lists and objects are not columns);
    floats that JSON cannot carry become the strings ``"NaN"``, ``"Infinity"``."""
    out: dict[str, Scalar] = {}
    for k, v in values.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, float) and not math.isfinite(v):
            out[name] = json_float(v)
        elif v is None or isinstance(v, (str, int, float, bool)):
            out[name] = v
    return out


def json_float(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def columns(records: Iterable[RunRecord]) -> tuple[list[str], list[str]]:
    """The config and summary keys of ``records`` (the columns the page can add)."""
    config: set[str] = set()
    summary: set[str] = set()
    for r in records:
        if r.details is not None:
            config.update(r.details.config)
            summary.update(r.details.summary)
    return sorted(config), sorted(summary)


def sort_records(records: Sequence[RunRecord], sort: str, descending: bool) -> list[RunRecord]:
    """By ``sort``; runs without a value come last whatever the order; ties by path."""
    get = sort_getter(sort)
    present: list[tuple[tuple[int, Any], RunRecord]] = []
    missing: list[RunRecord] = []
    for r in sorted(records, key=lambda r: r.path):
        v = get(r)
        if v is None:
            missing.append(r)
        else:
            present.append((_sort_key(v), r))
    present.sort(key=lambda pair: pair[0], reverse=descending)
    return [r for _, r in present] + missing


def sort_getter(sort: str) -> Callable[[RunRecord], Scalar]:
    if sort.startswith(("config.", "summary.")):
        return lambda r: r.value(sort)
    getters: dict[str, Callable[[RunRecord], Scalar]] = {
        "created": lambda r: r.created,
        "updated": lambda r: r.updated,
        "id": lambda r: r.id,
        "name": lambda r: r.name,
        "project": lambda r: r.project,
        "group": lambda r: r.group,
        "state": lambda r: r.state,
        "last_step": lambda r: r.last_step,
        "attempts": lambda r: r.attempts,
        "host": lambda r: r.host,
    }
    if sort not in getters:
        raise UsageError(f"sort={sort!r}: use one of {', '.join(SORTS)}, config.KEY or summary.KEY")
    return getters[sort]


def _sort_key(v: Scalar) -> tuple[int, Any]:
    """Numbers before text: a column holding both still sorts (never a TypeError)."""
    if _is_number(v):
        return (0, float(v))  # type: ignore[arg-type]
    return (1, _text(v).lower())


def _haystack(r: RunRecord) -> str:
    return r.details.haystack if r.details else f"{r.project}/{r.id}".lower()


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _text(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def _compare(a: Any, b: Any, op: str) -> bool:
    return bool(_OPERATORS[op](a, b))
