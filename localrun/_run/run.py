"""The run handle: ``log()``, flushes into segments, saved files, rewinds, ``finish``.

``log()`` only validates and appends a row to an in-memory buffer (the hot path takes one lock,
so rows from many threads get every step exactly once and in order). The flush thread
(``flusher.py``) turns the buffer into one immutable segment every ``flush_interval`` seconds (or
``flush_rows`` rows) and commits it as the run's next revision; the heartbeat thread
(``heartbeat.py``) keeps the lease. Every change to the run's state goes through
``Run._update``, the fence: a writer that is no longer the owner commits nothing more.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import pyarrow as pa

from .. import _settings
from .._store import manifest as mf
from .._store import segments
from .._store import system as system_store
from .._store.console import add_chunks, write_chunk
from .._store.files import point_latest, remove_version
from .._store.layout import inside
from .._store.markers import remove_marker
from .._store.media import write_blob
from .._store.ownership import Claim, release
from .._store.records import ConsoleEntry, FileVersion, Rewind, SegmentEntry, SystemEntry
from .._store.schema import LIST_MEDIA, MEDIA, NUMBER
from ..errors import (
    LocalrunError,
    LocalrunWarning,
    LockTimeout,
    RunSupersededError,
    StorageError,
    UsageError,
)
from ..media import Media
from . import flusher, heartbeat, hooks
from .buffer import (
    CELL_BYTES,
    STEP,
    TIME,
    Batch,
    Pending,
    batch_table,
    cells,
    extra_cells,
    last_values,
)
from .console import Capture
from .console import install as install_console
from .console import uninstall as uninstall_console
from .context import GIT_TIMEOUT, Context
from .context import collect as collect_context
from .files import FileSaver
from .heartbeat import beat_owner
from .state import Config, Summary
from .system import Sampler as SystemSampler
from .system import available as system_available
from .values import check_step, flatten, kind_conflict, normalize

MEDIA_KINDS = (MEDIA, LIST_MEDIA)
SYSTEM_WRITE_EVERY = 60.0  # seconds a system sample may wait for its segment (or 6 samples)
SYSTEM_MERGE_AT = system_store.MERGE_AT

log = logging.getLogger("localrun")


_now = time.time
_FLOATS = frozenset({float})
_NUMBERS = frozenset({float, int})
_INT64 = 2**63
_MAX_WAIT = 10.0  # seconds log() waits for room before it buffers past the bound (a hung disk)
_HARD_CAP = 4  # past this many times the bound, log() refuses rows (the writer is failing)
_SLICE = 2048  # rows converted per call into Arrow (which holds the GIL): about a millisecond
_CHECK_EVERY = 1024  # rows appended between two looks at the buffer's size, at most


def _daemon(loop: Callable[[Run], None], run: Run, what: str) -> threading.Thread:
    """A background thread of the run that never keeps the process alive on its own."""
    thread = threading.Thread(target=loop, args=(run,), name=f"localrun-{what}-{run.id}")
    thread.daemon = True
    thread.start()
    return thread


def _collect_context(run: Run) -> None:
    """The attempt's context (git, command line, packages: ``context.py``), for the next flush."""
    try:
        ctx = collect_context()
        git = ctx.get("git")
        if git and "diff" in git:
            # The diff goes to a content-addressed blob, not into the revision: a revision is
            # rewritten by every commit and read by every listing, a diff can be large.
            payload = git.pop("diff").encode("utf-8", "backslashreplace")
            sha = hashlib.sha256(payload).hexdigest()
            rel = f"context/{sha}.diff"
            write_blob(run.dir, rel, payload, sha)
            git["diff_file"] = rel
            git["diff_bytes"] = len(payload)
        run._context = ctx
    except Exception as exc:  # never let a context problem touch the run
        log.warning("localrun: could not collect the context of %s: %s", run.path, exc)
        return
    run._dirty = True


_E = TypeVar("_E", ConsoleEntry, SystemEntry)


def _publish_next(write: Callable[[int], _E], seq: int) -> _E:
    """Publish a console chunk or system segment at the first free ``seq`` from ``seq`` on.

    Unlike a history segment, a taken name here is not another writer's: it is one left by an
    earlier life of this attempt number (a run rebuilt from its segments numbers attempts from
    them, and an attempt that wrote no segment is forgotten), so the next name is as good.
    """
    for candidate in range(seq, seq + 10_000):
        try:
            return write(candidate)
        except FileExistsError:
            continue
    raise StorageError(f"no free name after {seq} for a console chunk or system segment")


def _sample_system(run: Run) -> None:
    """Every ``system_interval`` seconds one sample into ``run._system_rows``, and one more as
    the run stops, so even a short run has a sample covering its life."""
    sampler = SystemSampler()
    while True:
        stopping = run._stop.wait(run._settings.system_interval)
        if os.getpid() != run._pid:
            return
        try:
            now = time.time()
            runtime = run._runtime_base + (now - run._t0)
            run._system_rows.append((now, runtime, sampler.sample()))
        except Exception as exc:  # a sample must never touch the run
            log.warning("localrun: system sample of %s failed: %s", run.path, exc)
        if stopping:
            return


def _first_step(batch: Batch) -> int | None:
    """The step of a batch's first row; None for a converted batch whose rows were all
    refused (nothing to write, dropped whenever it comes)."""
    if batch.table is None:
        return batch.steps[0]
    if not batch.table.num_rows:
        return None
    return int(batch.table.column(STEP)[0].as_py())


def _ints_fit(data: dict[str, Any]) -> bool:
    """Ints that float64 columns take as Python's float() would (|v| < 2**63)."""
    return all(-_INT64 < v < _INT64 for v in data.values() if type(v) is int)


class Run:
    """One process's handle on a run. Made by :func:`localrun.init`, not directly."""

    def __init__(
        self, s: _settings.Settings, run_dir: Path, claim: Claim, marker: Path | None
    ) -> None:
        m = claim.manifest
        self.project: str = m["project"]
        self.id: str = m["id"]
        self.dir: Path = run_dir
        self.resumed: bool = claim.resumed
        self.attempt: int = claim.attempt
        self.starting_step: int = m["last_step"] + 1
        self._settings = s
        self._name: str = m.get("name") or self.id
        self._token: str = claim.owner["token"]
        self._marker = marker
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards the buffer, step, pending row and summary
        # True while log()'s hot path may run: open, no error, no pending (commit=False) row.
        self._fast = True
        self._flush_lock = threading.Lock()  # one flush at a time (thread, finish, signal)
        self._rows: list[Pending] = []  # logged since the last flush; log() appends, flush takes
        self._backlog: list[Batch] = []  # taken but not yet written (a failed write keeps them)
        self._convert_lock = threading.Lock()  # one conversion at a time; backlog places stay
        self._pending: list[SegmentEntry] = []  # written but not yet committed segments
        self._seq = 0  # the next name in this attempt's namespace (flushes and merges)
        # Steps are positional: a row of log()'s hot path is appended without one, and gets
        # "the previous row's step + 1" when a flush resolves it; only a jump (log(step=N) past
        # the current step) is appended with its step. So one list.append, atomic under the GIL
        # and under signals, is all a row needs, from any number of threads, with no lock.
        self._resolved = self.starting_step - 1  # the step of the last row a flush took
        self._taken = 0  # rows flushes have taken from _rows, in all
        self._anchor = (self.starting_step, 0)  # (step, rows appended in all) at the last jump
        self._jump: int | None = None  # the explicit step the pending row commits at
        self._row: dict[str, Any] = {}  # the uncommitted row (commit=False)
        # Interned, so the hot path can compare kinds with `is`.
        self._kinds: dict[str, str] = {k: sys.intern(v) for k, v in (m.get("schema") or {}).items()}
        self._stored_summary: dict[str, Any] = {
            k: mf.decode_value(v) for k, v in m["summary"].items()
        }
        self._explicit: dict[str, Any] = {
            k: self._stored_summary[k]
            for k in m.get("summary_explicit", [])
            if k in self._stored_summary
        }
        self._number_keys = {k for k, v in self._kinds.items() if v is NUMBER}
        self._flush_rows = s.flush_rows
        # Backpressure (docs/logging.md#memory). log() looks at the buffer only when len(_rows)
        # reaches _check_at, so the hot path pays one comparison; _pressure then measures the
        # new rows (C-level), wakes the writer, and waits while the buffer is full. _room
        # guards the accounting (taken before _lock, never after it).
        self._room = threading.Condition()
        self._max_rows = s.buffer_rows
        self._max_cells = max(1, int(s.buffer_mb * 2**20) // CELL_BYTES)
        self._chunk = max(1, min(s.flush_rows, s.buffer_rows // 4))  # rows per segment written
        self._check_at = 1
        self._measured = 0  # rows (counted in all, like _taken) whose cells are in _row_cells
        self._row_cells = 0  # cells of the measured rows still in _rows
        self._extra = 0  # cells of long strings and lists logged since the last measure
        self._backlog_cells = 0
        self._backlog_rows = 0  # rows of taken batches not yet converted
        self._converted_rows = 0  # rows of converted tables not yet written (counted by bytes)
        self._jumps = 0  # rows in _rows with an explicit step ("_step")
        self._waits = 0  # log() calls that waited for the writer (the benchmark prints it)
        self._rewinding = False  # a rewind's flush is under way: log() takes no rows meanwhile
        self._degraded = False  # the writer fails or hangs: buffer past the bound, no waits
        self._capped = False  # past the hard cap: log() refuses rows until a write succeeds
        self._write_error: Exception | None = None  # the last failed flush, until one succeeds
        self._dropped = int(m.get("dropped_steps", 0))
        self._warned_drop = False
        self._dirty = True
        self._config = Config(dict(m.get("config") or {}), self._mark_dirty)
        self.summary = Summary(self)
        self._files = FileSaver(
            self._commit_files, lambda: mf.load(self.dir), run_dir, self.attempt, s.watch
        )
        self._runtime_base = float(m.get("runtime") or 0.0)
        self._t0 = time.time()
        self._error: LocalrunError | None = None
        self._finished = False  # no more logging: finish() began
        self._ended = False  # the end state is committed
        self._preempted = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._context: Context | None = None  # collected off the init path, then committed
        self._context_committed = False
        self._system_rows: list[tuple[float, float, dict[str, float]]] = []
        self._system_seq = 0
        self._system_pending: list[SystemEntry] = []
        self._system_mine: list[SystemEntry] = []  # this attempt's committed system segments
        self._system_replaced: list[SystemEntry] = []  # merged away, until a commit says so
        self._console_seq = 0
        self._console_pending: list[ConsoleEntry] = []
        self._capture: Capture | None = None
        self._streams = None
        # The threads once every field they read exists: each may run at once (a flush every
        # millisecond flushed, and died, before the console's fields were set).
        self._compactor = flusher.Compactor(self)
        self._thread = _daemon(flusher.loop, self, "flush")
        self._heartbeat = _daemon(heartbeat.loop, self, "heartbeat")
        self._context_thread = _daemon(_collect_context, self, "context")
        self._system_thread = (
            _daemon(_sample_system, self, "system")
            if s.system_interval > 0 and system_available()
            else None
        )
        # Console capture last: nothing above may fail with the process's streams wrapped.
        if s.console:
            self._capture = Capture()
            self._streams = install_console(self._capture)
        hooks.register(self)

    # -- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def path(self) -> str:
        """``project/run_id``, the name the reading API and ``restore(run_path=)`` take."""
        return f"{self.project}/{self.id}"

    @property
    def step(self) -> int:
        """The step the next committed row gets: after a resume, the last step + 1.

        So ``model.fit(initial_epoch=run.step)`` continues where the dead process stopped.
        """
        with self._lock:
            return self._next_step()

    def _next_step(self) -> int:
        """The step of the next row appended (the caller holds ``_lock``)."""
        step, appended = self._anchor
        return step + (self._taken + len(self._rows) - appended)

    @property
    def config(self) -> Config:
        return self._config

    @property
    def files(self) -> list[str]:
        """The names of the files this run holds (committed with ``save``), sorted: what
        ``localrun.restore(name)`` can bring back."""
        return sorted(name for name, v in (mf.load(self.dir).get("files") or {}).items() if v)

    @property
    def settings(self) -> _settings.Settings:
        return self._settings

    def _mark_dirty(self) -> None:
        self._dirty = True

    # -- logging --------------------------------------------------------------------------
    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        """Record ``data`` at a step (wandb's semantics, docs/logging.md).

        ``step=None`` uses the current step; ``commit`` defaults to True without ``step`` and to
        False with it, so several calls can fill one step. A step lower than the current one is
        dropped with one warning (the count is kept in the manifest).
        """
        if (
            self._fast
            and type(data) is dict
            and step is None
            and commit is None
            and self._number_keys.issuperset(data)  # twice as fast as data.keys() <= ...
            and (
                _FLOATS.issuperset(map(type, data.values()))
                or (_NUMBERS.issuperset(map(type, data.values())) and _ints_fit(data))
            )
        ):
            # The hot path: known number keys, plain floats/ints, no pending row, run open.
            # One append, no step: its place in the list is its step (see __init__), so
            # threads logging at once get every step exactly once, in order, with no lock.
            row = data.copy()  # a copy (the caller may reuse its dict), then its time:
            row[TIME] = _now()  # faster than {**data, TIME: t}, which builds key by key
            rows = self._rows
            rows.append(row)
            if len(rows) >= self._check_at:
                self._pressure()  # every ~1,000 rows: measure, wake the writer, wait if full
            return
        if self._error is not None:
            raise self._error
        if self._finished:
            raise UsageError(f"run {self.path} is finished; call localrun.init() for a new one")
        self._check_process()
        if not isinstance(data, Mapping):
            raise UsageError(f"log() takes a dict of key -> value, got {type(data).__name__}")
        if self._capped:
            self._refuse_if_full()
        if step is None and commit is not False and not self._row:
            row = self._validate(data)
            with self._lock:
                self._commit_row(row)
        else:
            self._log_slow(data, step, commit)
        if len(self._rows) >= self._check_at:
            self._pressure()

    def _validate(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Flat, normalized values with their kinds checked; raises before anything is stored."""
        kinds = self._kinds
        row: dict[str, Any] = {}
        for k, v in data.items():
            t = type(v)
            if t is float and kinds.get(k) is NUMBER:
                row[k] = v
                continue
            if isinstance(v, Mapping) or not isinstance(k, str) or k not in kinds:
                break
            value, kind = normalize(k, v)
            if kind is not None and kind != kinds[k]:
                raise kind_conflict(k, kinds[k], kind)
            row[k] = value if kind not in MEDIA_KINDS else self._store_media(value)
        else:
            return row
        return self._validate_slow(data)

    def _validate_slow(self, data: Mapping[str, Any]) -> dict[str, Any]:
        flat = flatten(data)
        row: dict[str, Any] = {}
        new_kinds: dict[str, str] = {}
        for k, v in flat.items():
            value, kind = normalize(k, v)
            old = self._kinds.get(k)
            if kind is not None and old is not None and kind != old:
                raise kind_conflict(k, old, kind)
            if kind is None and old is None:
                continue  # None for a key never logged records nothing: it has no kind yet
            if kind is not None and old is None:
                new_kinds[k] = kind
            row[k] = value if kind not in MEDIA_KINDS else self._store_media(value)
        if new_kinds:
            with self._lock:
                for k, kind in new_kinds.items():
                    self._kinds.setdefault(k, kind)
                    if kind is NUMBER:
                        self._number_keys.add(k)
        return row

    def _take_console(self) -> None:
        """Write what the console capture holds as the next chunk (the caller holds
        ``_flush_lock``); it is listed by the next commit that gets through."""
        if self._capture is None or not self._capture:
            return
        text = self._capture.take()
        entry = _publish_next(
            lambda seq: write_chunk(self.dir, self.attempt, seq, text), self._console_seq
        )
        self._console_seq = entry["seq"] + 1
        self._console_pending.append(entry)

    def _system_due(self) -> bool:
        """Whether buffered system samples wait for a segment (the oldest is a minute old)."""
        rows = self._system_rows
        wait = min(SYSTEM_WRITE_EVERY, 6 * self._settings.system_interval)
        return bool(rows) and time.time() - rows[0][0] >= wait

    def _take_system(self, final: bool) -> None:
        """Write the buffered system samples as a segment when the oldest is a minute old (or
        at the end), merging this attempt's segments into one when there are MERGE_AT of them
        (the ones merged away are listed until a commit has replaced them)."""
        rows = self._system_rows
        if not rows or not (final or self._system_due()):
            return
        batch = rows[: len(rows)]
        del rows[: len(batch)]
        table = system_store.to_table(batch)
        merged = list(self._system_mine)  # committed ones only: a pending one is not yet listed
        if self._system_pending or len(merged) + 1 < SYSTEM_MERGE_AT:
            merged = []
        entry = _publish_next(
            lambda seq: (
                system_store.merge(self.dir, merged, table, self.attempt, seq)
                if merged
                else system_store.write(self.dir, self.attempt, seq, table)
            ),
            self._system_seq,
        )
        self._system_seq = entry["seq"] + 1
        self._system_pending.append(entry)
        if merged:
            self._system_mine = []
            self._system_replaced.extend(merged)

    def _release_console(self) -> None:
        if self._streams is not None:
            uninstall_console(self._streams)
            self._streams = None

    def _store_media(self, value: Media | list[Media]) -> str | list[str]:
        """Write a media value's bytes now (the caller learns of a full disk at ``log()``) and
        return the reference the row holds instead (localrun/media.py)."""
        values = value if isinstance(value, list) else [value]
        for v in values:
            write_blob(self.dir, v.path, v.payload, v.sha256)
        refs = [v.reference() for v in values]
        return refs if isinstance(value, list) else refs[0]

    def _commit_row(self, row: dict[str, Any]) -> None:
        """Append a row (the caller holds ``_lock``): at its jump's step, else the next one.

        The caller then calls ``_pressure`` if the buffer reached its check point (not here:
        ``_pressure`` takes ``_room``, which is never taken while holding ``_lock``)."""
        rows = self._rows
        step, self._jump = self._jump, None
        row[TIME] = time.time()
        if step is not None:
            row[STEP] = step
            self._jumps += 1
        self._extra += extra_cells(row)
        rows.append(row)
        if step is not None:
            self._anchor = (step + 1, self._taken + len(rows))

    def _take_rows(self) -> list[Batch]:
        """Take the rows logged so far, give each its step, and cut them into batches of at
        most one segment each (the caller holds ``_room`` and ``_lock``).

        ``log()`` only appends to the list, so copying a prefix and deleting that prefix (each
        atomic) never loses a row appended meanwhile. A row's step is the previous row's + 1,
        or its jump's step; a jump that threads logging at once overtook goes one past them,
        so steps stay strictly increasing whatever the interleaving. Without a jump (only
        ``_commit_row`` appends one, under ``_lock``) the steps are a range: no per-row work.
        """
        rows = self._rows
        n = len(rows)
        taken = rows[:n]
        del rows[:n]
        self._taken += n
        prev = self._resolved
        steps: Sequence[int]
        if self._jumps:
            self._jumps = 0
            resolved: list[int] = []
            for row in taken:
                step = row.get(STEP)
                prev = prev + 1 if step is None or step <= prev else step
                resolved.append(prev)
            steps = resolved
        else:
            steps = range(prev + 1, prev + n + 1)
            prev += n
        self._resolved = prev
        # Every measured row is taken now; the cells of the rest are counted exactly.
        self._measured = self._taken
        self._row_cells = 0
        extra, self._extra = self._extra, 0
        batches = []
        size = self._chunk
        for i in range(0, n, size):
            part = taken[i : i + size]
            batches.append(Batch(steps[i : i + size], part, cells(part) + extra))
            extra = 0
        return batches

    def _log_slow(self, data: Mapping[str, Any], step: int | None, commit: bool | None) -> None:
        row = self._validate(data)
        with self._lock:
            if step is not None:
                step = check_step(step)
                current = self._next_step()
                if step < current:
                    self._dropped += 1
                    self._dirty = True
                    if not self._warned_drop:
                        self._warned_drop = True
                        warnings.warn(
                            f"localrun: step {step} is lower than the run's current step "
                            f"{current}; the data is dropped (and later ones like it, counted "
                            "in the manifest's dropped_steps). To log from an older checkpoint, "
                            "rewind the run (init(..., rewind_to=N) or run.rewind(N))",
                            LocalrunWarning,
                            stacklevel=3,
                        )
                    return
                if step > current:
                    if self._row:
                        self._commit_row(self._row)
                        self._row = {}
                    self._jump = step  # the pending row commits at this step
                    self._anchor = (step, self._taken + len(self._rows))
            if commit is None:
                commit = step is None
            self._row.update(row)
            if commit:
                self._commit_row(self._row)
                self._row = {}
            self._refresh_fast()

    # -- backpressure -----------------------------------------------------------------------
    def _pressure(self) -> None:
        """The buffer reached a check point: measure it, wake the writer, and wait while it is
        full (docs/logging.md#memory).

        The wait ends when the writer has made room, the run ends or is superseded, or after
        ``_MAX_WAIT`` seconds (a hung disk). A writer that fails (a full disk) or hangs is not
        waited for: rows are buffered past the bound, with one warning, up to ``_HARD_CAP``
        times it; past that log() raises StorageError (``_refuse_if_full``).
        """
        with self._room:
            self._measure()
            if len(self._rows) >= _SLICE and self._write_error is None:
                # A loop logging this fast converts its own rows, a slice at a time, while
                # they are still in the cache: the rows of a full buffer are cold by the time
                # the writer (or a waiting log()) gets to them, and converting and freeing
                # cold rows cost a tight loop 6 % of its time (interleaved runs, 1e6 steps:
                # 2.47 to 2.55 s against 2.61 to 2.87 s; docs/performance.md). A converted
                # row also holds an eighth of its memory. A loop that logs slower never gets
                # here: the writer takes its rows first, every flush_interval.
                self._help()
                self._measure()
            if self._flush_due() and self._write_error is None:
                self._wake.set()  # a failing writer retries on its own interval, not per row
            if self._over(1) and not self._degraded:
                self._wait_for_room()
            if self._over(_HARD_CAP):
                with self._lock:
                    self._capped = True
                    self._fast = False
            self._next_check()

    def _measure(self) -> None:
        """Count the cells of the rows appended since the last look (the caller holds _room)."""
        with self._lock:
            rows = self._rows
            new = rows[self._measured - self._taken :]
            self._measured = self._taken + len(rows)
            extra, self._extra = self._extra, 0
        self._row_cells += cells(new) + extra

    def _over(self, bound: float) -> bool:
        """Do the rows not yet written fill ``bound`` times the buffer's bound, by rows or by
        their estimated bytes? (The caller holds ``_room``.)"""
        return (
            self._held_rows() >= bound * self._max_rows
            or self._row_cells + self._backlog_cells >= bound * self._max_cells
        )

    def _held_rows(self) -> int:
        """The rows that count against the rows bound (the caller holds ``_room``). A converted
        table counts by its bytes only (it is compact) while the writer works; while it fails,
        every row not on disk counts, so the hard cap means rows at risk, whoever converted
        them."""
        if self._write_error is not None or self._degraded:
            return self._unwritten_rows()
        return len(self._rows) + self._backlog_rows

    def _unwritten_rows(self) -> int:
        """Every row logged and not yet on disk, converted or not (the caller holds ``_room``)."""
        return len(self._rows) + self._backlog_rows + self._converted_rows

    def _flush_due(self) -> bool:
        """``flush_rows`` rows, or a quarter of the bound: time for the writer to take them."""
        return len(self._rows) >= self._flush_rows or self._over(0.25)

    def _wait_for_room(self) -> None:
        """Wait (the caller holds ``_room``) until the writer took the buffer under its bound."""
        if threading.current_thread() is self._thread:
            return  # the writer never waits for itself
        self._waits += 1
        deadline = time.monotonic() + _MAX_WAIT
        while self._over(1):
            if self._finished or self._error is not None or self._stop.is_set():
                return
            left = deadline - time.monotonic()
            if self._write_error is not None or left <= 0:
                self._degrade()
                return
            self._wake.set()
            if not self._help():
                self._room.wait(min(left, 0.1))
            self._measure()

    def _help(self) -> bool:
        """Make room from log()'s own thread: turn the oldest rows not yet converted into an
        Arrow table (taking them from the buffer first when no taken batch waits), one chunk.
        ``_pressure`` also calls it every :data:`_SLICE` rows of a fast loop, before the
        buffer is full, to convert the rows while they are warm (see there).

        Why: the writer thread makes room only between its I/O (a segment's fsync, a commit,
        the compactor's commit under the flush lock, a busy manifest lock), which takes from
        milliseconds to seconds on a loaded or remote disk; the rows bound would make log()
        wait all that time. A converted table counts only by its bytes (an eighth of the
        rows' memory), so the bytes bound still holds and binds when the writer's I/O truly
        falls behind. The caller holds ``_room``; it is released while converting (the writer
        takes it to report a written segment). False: nothing to convert, or the conversion
        failed (the writer then reports the error); the caller waits for the writer instead.
        """
        if self._write_error is not None:
            return False
        if self._unwritten_rows() >= _HARD_CAP * self._max_rows:
            # Converted rows count by their bytes only while the writer works, but not
            # without end: a write that fails slowly (ENOSPC on a loaded machine) would
            # otherwise find more rows at risk than the hard cap allows once it reports.
            return False
        with self._lock:
            if (
                self._rows
                and not self._rewinding
                and all(b.table is not None for b in self._backlog)
            ):
                # A segment's rows at most (LOCALRUN_FLUSH_ROWS: about 7 ms of CPU for 10,000
                # rows of 10 floats), converted a slice at a time. Taking an eighth of a
                # segment while the writer also converted cost twice the loop's CPU (a
                # conversion per thousand rows, racing the writer); the early takes of
                # _pressure, every 2,048 rows before the buffer fills, while the rows are
                # warm, measured faster (docs/performance.md).
                self._take_into_backlog()
                self._summary_locked()  # the summary keeps their values (they lose their rows)
        self._next_check()
        self._room.release()
        try:
            return self._convert_next()
        except Exception:  # the writer meets the same error and reports it (_write_error)
            return False
        finally:
            self._room.acquire()

    def _degrade(self) -> None:
        """The writer fails or hangs: stop waiting for it, say so once per episode (the caller
        holds ``_room``)."""
        self._degraded = True
        why = self._write_error or f"no flush made room in {_MAX_WAIT:g} s"
        warnings.warn(
            f"localrun: run {self.path}: the writer cannot keep up ({why}); logged rows are "
            "kept in memory past LOCALRUN_BUFFER_MB / LOCALRUN_BUFFER_ROWS, up to "
            f"{_HARD_CAP} times that bound, and written as soon as the storage works again",
            LocalrunWarning,
            stacklevel=5,
        )

    def _next_check(self) -> None:
        """Where log() looks at the buffer next (the caller holds ``_room``): before the next
        threshold (flush due, full, hard cap), even for rows as wide as every number key."""
        per_row = len(self._number_keys) + 3  # the cells of the widest row the hot path takes
        rows = self._held_rows()
        unmeasured = max(0, self._taken + len(self._rows) - self._measured)
        held = self._row_cells + self._backlog_cells + unmeasured * per_row
        if not self._flush_due():
            room_rows = min(self._flush_rows - len(self._rows), self._max_rows // 4 - rows)
            room_cells = self._max_cells // 4 - held
        else:
            # Over the bound, every row looks (and waits) until the writer is given up on
            # (degraded): a check placed at the hard cap while log() may still wait let the
            # other threads' hot path buffer up to four times the bound past a waiting one.
            bound = _HARD_CAP if self._degraded and self._over(1) else 1
            room_rows = bound * self._max_rows - rows
            room_cells = bound * self._max_cells - held
        step = min(_CHECK_EVERY, room_rows, room_cells // per_row)
        self._check_at = len(self._rows) + max(1, step)

    def _made_room(self, gone: Batch, now: Batch | None = None, written: bool = False) -> None:
        """``gone`` left the backlog (replaced by ``now``, its converted table): let waiting
        log() calls go on. ``written``: it is on disk, so the writer works again, which ends
        the degraded mode and the hard cap."""
        with self._room:
            self._backlog_cells -= gone.cells - (now.cells if now is not None else 0)
            self._backlog_rows -= len(gone.rows)
            if gone.table is not None:
                self._converted_rows -= gone.table.num_rows
            if now is not None and now.table is not None:
                self._converted_rows += now.table.num_rows
            if written:
                self._write_error = None
                self._degraded = False
                if self._capped:
                    with self._lock:
                        self._capped = False
                        self._refresh_fast()
            self._next_check()
            self._room.notify_all()

    def _refuse_if_full(self) -> None:
        """Past the hard cap: a row is refused with StorageError, not buffered without end."""
        with self._room:
            self._measure()
            if self._over(_HARD_CAP):
                held = (self._row_cells + self._backlog_cells) * CELL_BYTES / 2**20
                raise StorageError(
                    f"run {self.path}: {self._held_rows():,} logged rows "
                    f"(about {held:,.1f} MB) wait for a writer that fails "
                    f"({self._write_error or 'it makes no progress'}); this row is refused. "
                    "The rows already logged are kept and written once the storage works "
                    "again: free space or fix the mount, then log again"
                )
            with self._lock:
                self._capped = False
                self._refresh_fast()

    def _refresh_fast(self) -> None:
        """``_fast``: may the hot path run? Open, no error, no pending row, not past the hard
        cap (the caller holds ``_lock``)."""
        self._fast = (
            not self._row and self._error is None and not self._finished and not self._capped
        )

    # -- flushing -------------------------------------------------------------------------
    def flush(self) -> None:
        """Write and commit everything logged so far (normally the background thread does it)."""
        if self._error is not None:
            raise self._error
        self._flush()

    def _flush(
        self,
        end: tuple[str, int | None] | None = None,
        files: list[tuple[str, FileVersion]] | None = None,
        rewind: int | None = None,
    ) -> None:
        """Write the buffered rows as segments and commit them in one revision, together with
        ``files`` (saved-file versions), a ``rewind`` to that step and, at the end, the
        attempt's end state.

        Rows and files in one commit: a checkpoint saved after step N is never visible without
        the rows up to N, so a restored checkpoint is never newer than ``run.step``. A rewind
        in the same flush: see :meth:`rewind`.
        """
        self._check_process()
        with self._flush_lock:
            with self._room, self._lock:
                if self._rows:
                    self._take_into_backlog()
                upto = self._resolved  # this flush's rows: the ones logged until now
                self._rewinding = rewind is not None  # no row is taken until it is committed
                summary = self._summary_locked()
                explicit = sorted(self._explicit)
                config = self._config.as_dict()
                dropped = self._dropped
                self._dirty = False
                self._next_check()  # before a log() call can look at the emptied list
                self._room.notify_all()
            meta = {
                "project": self.project,
                "id": self.id,
                "attempt": self.attempt,
                "config": config,
            }
            try:
                try:
                    self._write_backlog(meta, upto)
                except Exception as exc:  # log() stops waiting for a writer that fails
                    with self._room:
                        self._write_error = exc
                        self._room.notify_all()
                    raise
                with self._lock:  # every row written was logged by now, with its key's kind
                    kinds = dict(self._kinds)
                back: Rewind | None = None
                if rewind is not None:  # the rows before it are the segments written so far
                    back = {"attempt": self.attempt, "seq": self._seq, "step": rewind}
                self._commit(end, files, kinds, summary, explicit, config, dropped, meta, back)
                if rewind is not None:
                    with self._lock:  # the rows logged since the take continue from the rewind
                        self._row, self._jump = {}, None
                        self._resolved = rewind
                        self._anchor = (rewind + 1, self._taken)
            finally:
                if self._rewinding:
                    with self._room:
                        self._rewinding = False
                        self._room.notify_all()  # a log() waiting for room may take rows again

    def _take_into_backlog(self) -> None:
        """Move the buffered rows to the backlog, in order, in batches of a segment each (the
        caller holds ``_room`` and ``_lock``: the writer's flush and a waiting log() (``_help``)
        both take this way)."""
        batches = self._take_rows()
        self._backlog.extend(batches)
        self._backlog_rows += sum(len(b.rows) for b in batches)
        self._backlog_cells += sum(b.cells for b in batches)

    def _convert_next(self) -> bool:
        """Convert the oldest rows taken but not yet converted, :data:`_SLICE` of them, into a
        table; False when there are none.

        Any thread (the writer, a waiting log()); ``_convert_lock`` makes one convert at a time
        and keeps each batch's place in the backlog (only the writer pops, under the same lock;
        a longer batch is split in place: the converted slice, then the rest). One slice at a
        time because Arrow holds the GIL while it reads Python objects: a whole segment's rows
        (10,000) in one call would stall every other thread, log()'s hot path included. The
        writer joins the slices into one segment again (``_segment_group``). The rows are in
        the table then, in about an eighth of their memory: log() may go on while the segment
        is written and fsynced. A failed write keeps the table.
        """
        with self._convert_lock:
            backlog = self._backlog
            i = next((i for i, b in enumerate(backlog) if b.table is None), None)
            if i is None:
                return False
            batch = backlog[i]
            with self._lock:
                kinds = dict(self._kinds)
            head, rest = batch, None
            if len(batch.rows) > _SLICE:
                rows = batch.rows[_SLICE:]
                rest = Batch(batch.steps[_SLICE:], rows, cells(rows))
                head = Batch(batch.steps[:_SLICE], batch.rows[:_SLICE], batch.cells - rest.cells)
            table = batch_table(head, kinds, self._runtime_base, self._t0, where=self.path)
            converted = Batch(range(0), [], table.nbytes // CELL_BYTES + 1, table)
            backlog[i : i + 1] = [converted] if rest is None else [converted, rest]
        self._made_room(head, converted)
        return True

    def _write_backlog(self, meta: dict[str, Any], upto: int) -> None:
        """Each taken batch up to step ``upto`` becomes a segment, making room for log() as
        soon as it is on disk (the caller holds ``_flush_lock``).

        Why the bound: a log() waiting for room keeps taking rows into the backlog
        (``_help``). Written until the backlog was empty, a loop logging as fast as the
        disk takes segments kept the writer writing and never committing: seconds, minutes,
        with nothing a crash or a resume would find. The rows logged after the flush began
        are the next flush's, which the wake of a full buffer starts at once.
        """
        while self._backlog:
            batch = self._backlog[0]
            first = _first_step(batch)
            if first is not None and first > upto:
                return  # logged after this flush began
            table = batch.table
            if table is None:
                self._convert_next()  # this one, unless a waiting log() converted it first
                continue
            if table.num_rows == 0:  # every row of the batch was refused (logged)
                with self._convert_lock:
                    self._backlog.pop(0)
                self._made_room(batch)
                continue
            group = self._segment_group()
            ahead = self._backlog[len(group) : len(group) + 1]
            full = sum(len(b.table) for b in group if b.table is not None) >= self._chunk
            if ahead and ahead[0].table is None and not full and ahead[0].steps[0] <= upto:
                self._convert_next()  # the segment is not full yet: convert its next slice
                continue
            if len(group) > 1:
                table = pa.concat_tables([b.table for b in group], promote_options="default")
            try:
                entry = segments.write(self.dir, self.attempt, self._seq, table, meta)
            except FileExistsError:
                # Another process wrote this name: only a newer owner can have, so stop.
                self._seq += 1
                raise self._superseded(
                    "a segment of this attempt was written by another process"
                ) from None
            except StorageError:
                self._dirty = True
                raise
            self._seq += 1
            self._pending.append(entry)
            with self._convert_lock:
                del self._backlog[: len(group)]
            for done in group:
                self._made_room(done, written=True)

    def _segment_group(self) -> list[Batch]:
        """The converted batches at the head of the backlog that make one segment: as many
        as fit in a segment's rows (log()'s small steps, ``_help``, joined again)."""
        group: list[Batch] = []
        rows = 0
        for b in list(self._backlog):
            if b.table is None or not b.table.num_rows:
                break
            if group and rows + b.table.num_rows > self._chunk:
                break
            group.append(b)
            rows += b.table.num_rows
        return group

    def _commit(
        self,
        end: tuple[str, int | None] | None,
        files: list[tuple[str, FileVersion]] | None,
        kinds: dict[str, str],
        summary: dict[str, Any],
        explicit: list[str],
        config: dict[str, Any],
        dropped: int,
        meta: dict[str, Any],
        rewind: Rewind | None = None,
    ) -> None:
        """Commit the written segments, ``files``, a rewind record and the end state in one
        revision (the caller holds ``_flush_lock``), then compact."""
        runtime = self._runtime_base + (time.time() - self._t0)
        pending = list(self._pending)
        context = None if self._context_committed else self._context
        self._take_console()
        chunks = list(self._console_pending)
        rotated: list[ConsoleEntry] = []
        self._take_system(final=end is not None)
        samples = list(self._system_pending)
        merged_away = list(self._system_replaced)
        keep = self._settings.keep_versions
        retired: list[FileVersion] = []  # versions past the bound, removed once committed

        def commit(m: mf.Manifest) -> None:
            listed = {s["file"] for s in m["segments"]}
            for e in pending:
                if e["file"] not in listed:
                    m["segments"].append(e)
                m["last_step"] = max(m["last_step"], e["max_step"])
            if rewind is not None:
                m["rewinds"].append(Rewind(**rewind))
                m["last_step"] = rewind["step"]
            m["schema"].update(kinds)
            m["summary"] = {k: mf.encode_value(v) for k, v in summary.items()}
            m["summary_explicit"] = explicit
            m["config"] = config
            m["runtime"] = runtime
            m["dropped_steps"] = dropped
            beat_owner(m)
            retired.clear()  # a commit that lost the race runs again on the newer state
            if files:
                stored = m.setdefault("files", {})
                for name, entry in files:
                    versions = stored.setdefault(name, [])
                    if entry not in versions:
                        versions.append(entry)
                    if keep and len(versions) > keep:
                        retired.extend(versions[:-keep])
                        stored[name] = versions[-keep:]
            if chunks:
                rotated[:] = add_chunks(m, chunks, self._settings.console_max_bytes)
            if samples:
                gone = {e["file"] for e in merged_away}
                listed_system = [e for e in m.get("system", []) if e["file"] not in gone]
                known = {e["file"] for e in listed_system}
                m["system"] = listed_system + [e for e in samples if e["file"] not in known]
            if context is not None:
                for a in m["attempts"]:
                    if a["attempt"] == self.attempt:
                        a["context"] = dict(context)
            if end is not None:
                release(m, self._token, end[0], end[1], self.attempt)

        try:
            self._update(commit)
        except (StorageError, LockTimeout):
            self._dirty = True
            raise
        del self._pending[: len(pending)]
        if context is not None:
            self._context_committed = True
        del self._console_pending[: len(chunks)]
        del self._system_pending[: len(samples)]
        self._system_mine.extend(samples)
        del self._system_replaced[: len(merged_away)]
        for replaced in merged_away:
            inside(self.dir, replaced["file"], "system segment").unlink(missing_ok=True)
        for chunk in rotated:
            inside(self.dir, chunk["file"], "console chunk").unlink(missing_ok=True)
        for name, version in files or ():
            point_latest(self.dir, name, version)
        for old in retired:
            remove_version(self.dir, old)
        if end is None:
            flusher.compact(self, meta)  # wakes the compactor thread: never waits

    def _update(self, change: Callable[[mf.Manifest], None], copy: bool = True) -> None:
        """Commit a change to the run's state as this attempt's owner: the fence (DESIGN §5).

        If the lease is no longer this process's (it hung, and another took the run over), it
        commits nothing and this writer is superseded for good. ``copy``: see ``mf.update``.
        """

        self._check_process()

        def fenced(m: mf.Manifest) -> None:
            owner = m.get("owner")
            if not isinstance(owner, dict) or owner.get("token") != self._token:
                newest = max((a["attempt"] for a in m["attempts"]), default=self.attempt)
                raise self._superseded(f"another process took the run over as attempt {newest}")
            change(m)

        mf.update(self.dir, fenced, opts=self._settings.store, copy=copy)

    def _check_process(self) -> None:
        """A forked child (a DataLoader worker) never writes its parent's run: the parent owns
        the lease, and a child's segment of the same name would fence the parent out."""
        if os.getpid() != self._pid:
            raise UsageError(
                f"run {self.path} belongs to process {self._pid}; this forked process "
                f"({os.getpid()}) cannot write it. Log from the parent, or start a run of its "
                "own in the child with localrun.init(..., id=<another id>)"
            )

    def _superseded(self, why: str) -> RunSupersededError:
        err = RunSupersededError(
            f"run {self.path}: attempt {self.attempt} of this process is superseded ({why}); "
            "nothing more is committed from this process. Stop it: the newer attempt owns the run"
        )
        self._error = err
        self._fast = False
        self._stop.set()
        return err

    def _summary_locked(self) -> dict[str, Any]:
        out = dict(self._stored_summary)
        want = len(self._kinds)
        out.update(last_values([*(b.rows for b in self._backlog), self._rows], want))
        out.update({k: v for k, v in self._row.items() if v is not None})
        out.update(self._explicit)
        self._stored_summary = {k: v for k, v in out.items() if k not in self._explicit}
        return out

    def _summary_now(self) -> dict[str, Any]:
        with self._lock:
            return self._summary_locked()

    # -- files ----------------------------------------------------------------------------
    def save(
        self,
        glob_str: str | os.PathLike[str],
        base_path: str | os.PathLike[str] | None = None,
        policy: str = "now",
    ) -> list[str]:
        """Copy files into the run (docs/files.md); returns the names saved (or to be saved).

        ``glob_str``: a path or glob (``**`` recurses). Each file is stored under its path
        relative to ``base_path`` (default: the folder part of ``glob_str``). ``policy``:
        ``"now"`` copies and commits before returning; ``"end"`` copies at finish; ``"live"``
        copies now and again whenever the file changes, until finish. Saving a name again
        keeps every earlier version reachable; identical content is not stored twice.
        """
        if self._error is not None:
            raise self._error
        if self._finished:
            raise UsageError(f"run {self.path} is finished; files can no longer be saved")
        return self._files.save(glob_str, base_path, policy)

    def _commit_files(self, entries: list[tuple[str, FileVersion]]) -> None:
        self._flush(files=entries)

    # -- rewind ---------------------------------------------------------------------------
    def rewind(self, step: int) -> None:
        """Continue from ``step`` + 1: readers hide rows logged earlier with a higher step.

        For resuming from a checkpoint older than the last logged step. Nothing is deleted;
        ``history(all_attempts=True)`` still shows the hidden rows.

        One flush does it, under the flush lock: the rows logged until then are written (the
        rows before the rewind), the rewind is committed with them, and only then do rows that
        other threads logged meanwhile take their steps from ``step + 1``: each row lands on
        one side, with steps that agree. (Done in two flushes, the writer thread could write
        such rows in between with their old steps, visible beside the new ones, and stall on
        a backlog whose steps went down.)
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < -1:
            raise UsageError(f"rewind step must be an int >= -1, got {step!r}")
        self._flush(rewind=check_step(step))

    # -- ending ---------------------------------------------------------------------------
    def finish(self, exit_code: int = 0) -> None:
        """Flush everything and end this attempt: finished for exit code 0, else failed.

        A clean finish removes the auto-resume marker, so the next ``resume=True`` starts anew.
        """
        state = "finished" if exit_code == 0 else "failed"
        if self._preempted:
            state = "preempted"
        self._end(state, exit_code)

    def _end(self, state: str, exit_code: int | None) -> None:
        """Stop the threads, then commit everything with the end state. Retryable: if the final
        commit fails (a full disk), the rows stay buffered and the next call (or the exit hook)
        tries again; once it succeeded, later calls do nothing."""
        if self._ended or os.getpid() != self._pid:
            return
        with hooks.signals_deferred():
            self._end_deferred(state, exit_code)

    def _end_deferred(self, state: str, exit_code: int | None) -> None:
        try:
            self._stop_and_commit(state, exit_code)
        finally:
            self._compactor.join()  # after the final commit: an end never waits on a merge

    def _stop_and_commit(self, state: str, exit_code: int | None) -> None:
        if not self._finished:
            self._finished = True
            self._fast = False
            self._stop_compactor(state)
            self._stop.set()
            self._wake.set()
            for thread in (self._thread, self._heartbeat):
                if threading.current_thread() is not thread:
                    thread.join(timeout=30)
            self._context_thread.join(timeout=GIT_TIMEOUT + 1)
            if self._system_thread is not None:
                self._system_thread.join(timeout=30)  # it takes a last sample as it stops
            if self._error is None:
                try:
                    self._files.close()
                except LocalrunError as exc:
                    log.warning(
                        "localrun: saving files at the end of %s failed: %s", self.path, exc
                    )
            with self._lock:
                if self._row:  # a step logged with step= and never committed: it ends here
                    self._commit_row(self._row)
                    self._row = {}
        if self._error is not None:
            self._release_console()
            hooks.release(self)
            raise self._error
        try:
            self._flush(end=(state, exit_code))
        finally:
            self._release_console()
        self._ended = True
        hooks.release(self)
        if state == "finished" and self._marker is not None:
            remove_marker(self._marker)

    def _stop_compactor(self, state: str) -> None:
        """At a clean finish, commit the rows first, then let the merges that are due complete
        (the heartbeat still runs: a long merge never makes the owner look gone); at any other
        end (preemption, an error) stop them unfinished: the final flush must not wait."""
        drain = state == "finished" and self._error is None
        if drain:
            try:
                self._flush()
            except LocalrunError:
                drain = False  # the final flush retries; no merge waits in front of it
        self._compactor.stop(drain=drain)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ended:
            return
        if ev is None:
            self.finish(0)
        elif self._preempted:
            self._end("preempted", 128 + signal.SIGTERM)
        elif isinstance(ev, SystemExit):
            code = ev.code if isinstance(ev.code, int) else (0 if ev.code is None else 1)
            self.finish(code)
        else:
            self._end("failed", 130 if isinstance(ev, KeyboardInterrupt) else 1)

    def __repr__(self) -> str:
        return f"<localrun.Run {self.path} attempt={self.attempt} step={self.step}>"


# -- init -------------------------------------------------------------------------------
