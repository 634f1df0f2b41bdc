"""The writer: ``init``, ``Run.log``, flushes, the heartbeat, signals and ``finish``.

``log()`` only validates and appends to an in-memory buffer. A background thread turns the
buffer into one immutable segment every ``flush_interval`` seconds (or ``flush_rows`` rows), then
commits it by replacing the manifest under the mutex. A second thread bumps the lease heartbeat
every TTL/3. Every manifest change goes through ``Run._update``, the fence: a writer that is no
longer the owner commits nothing more.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import pyarrow as pa

from . import _settings
from ._buffer import Row, last_values, to_table
from ._config import Config, merge
from ._files import FileSaver
from ._resume import job_key, marker_path, read_marker, remove_marker, write_marker
from ._store import manifest as mf
from ._store import segments
from ._store.files import point_latest, remove_version
from ._store.layout import inside
from ._store.layout import run_dir as make_run_dir
from ._store.lease import beat
from ._store.ownership import Claim, create, release, take_over, wait_for_manifest
from ._store.schema import NUMBER
from ._values import check_key, check_step, flatten, kind_conflict, normalize
from .errors import (
    CorruptRunError,
    LocalrunError,
    LocalrunWarning,
    LockTimeout,
    RunExistsError,
    RunNotFoundError,
    RunSupersededError,
    StorageError,
    UsageError,
)
from .util import generate_id

log = logging.getLogger("localrun")

_current: Run | None = None
_all_runs: weakref.WeakSet[Run] = weakref.WeakSet()


def _beat(m: mf.Manifest) -> None:
    beat(m["owner"])


_now = time.time
_FLOATS = frozenset({float})
_NUMBERS = frozenset({float, int})
_INT64 = 2**63


def _ints_fit(data: dict[str, Any]) -> bool:
    """Ints that float64 columns take as Python's float() would (|v| < 2**63)."""
    return all(-_INT64 < v < _INT64 for v in data.values() if type(v) is int)


class Summary(Mapping[str, Any]):
    """``run.summary``: the last logged value of each key, unless set here explicitly.

    A key set explicitly (``run.summary["best_loss"] = x``) keeps that value: later logs of the
    same key do not overwrite it. That is what a "best so far" summary needs.
    """

    def __init__(self, run: Run) -> None:
        self._run = run

    def _view(self) -> dict[str, Any]:
        return self._run._summary_now()

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Any:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        clean = {}
        for key, value in values.items():
            check_key(key)
            clean[key] = normalize(key, value)[0]
        with self._run._lock:
            self._run._explicit.update(clean)
            self._run._dirty = True

    def __repr__(self) -> str:
        return f"Summary({self._view()!r})"


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
        self._rows: list[Row] = []  # logged since the last flush; log() appends, flush takes
        self._backlog: list[list[Row]] = []  # taken but not yet written (a failed write keeps them)
        self._pending: list[dict[str, Any]] = []  # written but not yet committed segments
        self._seq = 0
        self._mine: list[dict[str, Any]] = []  # this attempt's segments since the last rewind
        self._step: int = self.starting_step
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
        self._thread = threading.Thread(
            target=self._loop, name=f"localrun-flush-{self.id}", daemon=True
        )
        self._thread.start()
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name=f"localrun-heartbeat-{self.id}", daemon=True
        )
        self._heartbeat.start()
        _all_runs.add(self)

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
        return self._step

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
            and data.keys() <= self._number_keys
            and (
                _FLOATS.issuperset(map(type, data.values()))
                or (_NUMBERS.issuperset(map(type, data.values())) and _ints_fit(data))
            )
        ):
            # The hot path: known number keys, plain floats/ints, no pending row, run open.
            # The step is read, used and moved under the lock, so threads logging at once get
            # every step exactly once and in list order; the flush takes a prefix under it too.
            # ``with`` (not acquire/try): a signal handler that raises between acquire and
            # try would leave the lock held; ``with`` on a C lock has no such window.
            with self._lock:
                rows = self._rows
                rows.append((self._step, _now(), data.copy()))
                self._step += 1
                if len(rows) == self._flush_rows:
                    self._wake.set()  # once: the flush thread takes it from here
            return
        if self._error is not None:
            raise self._error
        if self._finished:
            raise UsageError(f"run {self.path} is finished; call localrun.init() for a new one")
        if not isinstance(data, Mapping):
            raise UsageError(f"log() takes a dict of key -> value, got {type(data).__name__}")
        if step is None and commit is not False and not self._row:
            row = self._validate(data)
            with self._lock:
                self._commit_row(row)
            return
        self._log_slow(data, step, commit)

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
            row[k] = value
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
            row[k] = value
        if new_kinds:
            with self._lock:
                for k, kind in new_kinds.items():
                    self._kinds.setdefault(k, kind)
                    if kind is NUMBER:
                        self._number_keys.add(k)
        return row

    def _commit_row(self, row: dict[str, Any]) -> None:
        self._rows.append((self._step, time.time(), row))
        self._step += 1
        if len(self._rows) == self._flush_rows:
            self._wake.set()

    def _take_rows(self) -> list[Row]:
        """Take the rows logged so far (the caller holds ``_lock``, as every ``log()`` does while
        it appends, so no row is between its step and the list)."""
        rows = self._rows
        n = len(rows)
        batch = rows[:n]
        del rows[:n]
        return batch

    def _log_slow(self, data: Mapping[str, Any], step: int | None, commit: bool | None) -> None:
        row = self._validate(data)
        with self._lock:
            if step is not None:
                step = check_step(step)
                if step < self._step:
                    self._dropped += 1
                    self._dirty = True
                    if not self._warned_drop:
                        self._warned_drop = True
                        warnings.warn(
                            f"localrun: step {step} is lower than the run's current step "
                            f"{self._step}; the data is dropped (and later ones like it, counted "
                            "in the manifest's dropped_steps). To log from an older checkpoint, "
                            "rewind the run (init(..., rewind_to=N) or run.rewind(N))",
                            LocalrunWarning,
                            stacklevel=3,
                        )
                    return
                if step > self._step:
                    if self._row:
                        self._commit_row(self._row)
                        self._row = {}
                    self._step = step
            if commit is None:
                commit = step is None
            self._row.update(row)
            if commit:
                self._commit_row(self._row)
                self._row = {}
            self._fast = not self._row and self._error is None and not self._finished

    # -- flushing -------------------------------------------------------------------------
    def _loop(self) -> None:
        pa.array([0.0])  # pay pyarrow's lazy pandas import here, not in the first flush
        interval = self._settings.flush_interval
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set() or os.getpid() != self._pid:
                return
            if self._rows or self._dirty:
                try:
                    self._flush()
                except RunSupersededError:
                    return
                except Exception as exc:  # the thread must outlive any one failed flush
                    log.warning("localrun: flush of %s failed, will retry: %s", self.path, exc)

    def _heartbeat_loop(self) -> None:
        """Bump the lease every TTL/3, on its own thread.

        Never behind a data flush: a slow one (a first pyarrow import, a large segment on a
        loaded NFS server) must not make a live owner look dead to a watcher on another host.
        """
        while not self._stop.wait(self._settings.lease_ttl / 3):
            if os.getpid() != self._pid:
                return

            try:
                self._update(_beat)
            except RunSupersededError:
                return
            except Exception as exc:  # keep beating: the next one may get through
                log.warning("localrun: heartbeat of %s failed, will retry: %s", self.path, exc)

    def flush(self) -> None:
        """Write and commit everything logged so far (normally the background thread does it)."""
        if self._error is not None:
            raise self._error
        self._flush()

    def _flush(
        self,
        end: tuple[str, int | None] | None = None,
        files: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        """Write the buffered rows as segments and commit them in one revision, together with
        ``files`` (saved-file versions) and, at the end, the attempt's end state.

        Rows and files in one commit: a checkpoint saved after step N is never visible without
        the rows up to N, so a restored checkpoint is never newer than ``run.step``.
        """
        self._check_process()
        with self._flush_lock:
            with self._lock:
                if self._rows:
                    self._backlog.append(self._take_rows())
                kinds = dict(self._kinds)
                summary = self._summary_locked()
                explicit = sorted(self._explicit)
                config = self._config.as_dict()
                dropped = self._dropped
                self._dirty = False
            meta = {
                "project": self.project,
                "id": self.id,
                "attempt": self.attempt,
                "config": config,
            }
            while self._backlog:
                table = to_table(
                    self._backlog[0], kinds, self._runtime_base, self._t0, where=self.path
                )
                if table.num_rows == 0:  # every row of the batch was refused (logged)
                    self._backlog.pop(0)
                    continue
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
                self._backlog.pop(0)
            runtime = self._runtime_base + (time.time() - self._t0)
            pending = list(self._pending)
            keep = self._settings.keep_versions
            retired: list[dict[str, Any]] = []  # versions past the bound, removed once committed

            def commit(m: mf.Manifest) -> None:
                listed = {s["file"] for s in m["segments"]}
                for e in pending:
                    if e["file"] not in listed:
                        m["segments"].append(e)
                    m["last_step"] = max(m["last_step"], e["max_step"])
                m["schema"].update(kinds)
                m["summary"] = {k: mf.encode_value(v) for k, v in summary.items()}
                m["summary_explicit"] = explicit
                m["config"] = config
                m["runtime"] = runtime
                m["dropped_steps"] = dropped
                _beat(m)
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
                if end is not None:
                    release(m, self._token, end[0], end[1], self.attempt)

            try:
                self._update(commit)
            except (StorageError, LockTimeout):
                self._dirty = True
                raise
            del self._pending[: len(pending)]
            self._mine.extend(pending)
            for name, entry in files or ():
                point_latest(self.dir, name, entry)
            for old in retired:
                remove_version(self.dir, old)
            if end is None:
                self._compact(meta)

    def _compact(self, meta: dict[str, Any]) -> None:
        """Tiered compaction of this attempt's newest segments (docs/format.md).

        When the tail holds FANOUT segments of one level, they become one segment of the next
        level: the manifest stays short (a run flushing every 2 s for days would otherwise list
        100,000 segments and rewrite them all on every flush), and each row is rewritten only
        log_FANOUT(rows) times. Never across a rewind: ``_mine`` restarts at each one. The old
        files are removed only after the manifest lists the merged one instead.
        """
        fanout = self._settings.compact_fanout
        while len(self._mine) >= fanout:
            level = int(self._mine[-1].get("level", 0))
            group = self._mine[-fanout:]
            if any(int(e.get("level", 0)) != level for e in group):
                return
            merged = segments.merge(self.dir, group, self.attempt, self._seq, level + 1, meta)
            self._seq += 1
            old = {e["file"] for e in group}

            def swap(m: mf.Manifest, old: set[str] = old, merged: dict[str, Any] = merged) -> None:
                m["segments"] = [s for s in m["segments"] if s["file"] not in old] + [merged]

            self._update(swap)
            self._mine[-fanout:] = [merged]
            for rel in old:
                inside(self.dir, rel, "segment").unlink(missing_ok=True)

    def _update(self, change: Callable[[mf.Manifest], None]) -> None:
        """Read-modify-write the manifest as this attempt's owner: the fence (DESIGN §5).

        If the lease is no longer this process's (it hung, and another took the run over), it
        commits nothing and this writer is superseded for good.
        """

        self._check_process()

        def fenced(m: mf.Manifest) -> None:
            owner = m.get("owner")
            if not isinstance(owner, dict) or owner.get("token") != self._token:
                newest = max((a["attempt"] for a in m["attempts"]), default=self.attempt)
                raise self._superseded(f"another process took the run over as attempt {newest}")
            change(m)

        mf.update(self.dir, fenced, opts=self._settings.store)

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
        for rows in (*self._backlog, self._rows):
            out.update(last_values(rows))
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

    def _commit_files(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        self._flush(files=entries)

    # -- rewind ---------------------------------------------------------------------------
    def rewind(self, step: int) -> None:
        """Continue from ``step`` + 1: readers hide rows logged earlier with a higher step.

        For resuming from a checkpoint older than the last logged step. Nothing is deleted;
        ``history(all_attempts=True)`` still shows the hidden rows.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < -1:
            raise UsageError(f"rewind step must be an int >= -1, got {step!r}")
        step = check_step(step)
        self._flush()
        seq = self._seq

        def apply(m: mf.Manifest) -> None:
            m["rewinds"].append({"attempt": self.attempt, "seq": seq, "step": step})
            m["last_step"] = step

        self._update(apply)
        self._mine = []  # compaction never merges across a rewind
        with self._lock:
            self._step = step + 1
            self._row = {}

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
        with _signals_deferred():
            self._end_deferred(state, exit_code)

    def _end_deferred(self, state: str, exit_code: int | None) -> None:
        global _current
        if not self._finished:
            self._finished = True
            self._fast = False
            self._stop.set()
            self._wake.set()
            for thread in (self._thread, self._heartbeat):
                if threading.current_thread() is not thread:
                    thread.join(timeout=30)
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
            if _current is self:
                _current = None
            raise self._error
        self._flush(end=(state, exit_code))
        self._ended = True
        if _current is self:
            _current = None
        if state == "finished" and self._marker is not None:
            remove_marker(self._marker)

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
        return f"<localrun.Run {self.path} attempt={self.attempt} step={self._step}>"


# -- init -------------------------------------------------------------------------------
def init(
    project: str | None = None,
    id: str | None = None,
    name: str | None = None,
    notes: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    config: Mapping[str, Any] | None = None,
    dir: str | os.PathLike[str] | None = None,
    resume: bool | str | None = None,
    rewind_to: int | None = None,
    force: bool | None = None,
    allow_val_change: bool = False,
    flush_interval: float | None = None,
    keep_versions: int | None = None,
) -> Run:
    """Start a run, or resume one, and make it the process's current run (docs/resuming.md).

    ``resume``: None/False/"never" (default: the id must be new), "allow" (resume if it exists),
    "must" (it must exist), a run id (resume that run), True/"auto" (resume this job's run if
    its last attempt did not finish cleanly). Arguments beat ``LOCALRUN_*`` variables.
    ``keep_versions``: how many versions of each saved file name to keep (the newest always
    stays; 0 keeps all; default 5, or ``LOCALRUN_KEEP_VERSIONS``).
    """
    global _current
    previous = _current
    if previous is not None and not previous._ended and previous._pid == os.getpid():
        try:
            previous.finish()
        except LocalrunError as exc:
            _current = None
            warnings.warn(
                f"localrun: could not finish the previous run {previous.path} ({exc}); starting "
                "the new run anyway. Its unsaved rows stay buffered: call finish() on it to retry",
                LocalrunWarning,
                stacklevel=2,
            )
    s = _settings.resolve(
        dir=dir,
        project=project,
        id=id,
        resume=resume,
        force=force,
        flush_interval=flush_interval,
        keep_versions=keep_versions,
    )
    if rewind_to is not None:
        if isinstance(rewind_to, bool) or not isinstance(rewind_to, int) or rewind_to < -1:
            raise UsageError(f"rewind_to must be an int >= -1 (a step), got {rewind_to!r}")
        rewind_to = check_step(rewind_to)
    mf.ensure_root(s.root)
    marker: Path | None = None
    mode, run_id = s.resume, s.run_id
    fresh_hint = (
        "To start a fresh run instead, pass resume='never' with a new id (or unset "
        "LOCALRUN_RESUME and LOCALRUN_RUN_ID)"
    )
    if mode == "auto":
        key = job_key(s.resume_key)
        marker = marker_path(s.root, s.project, key)
        fresh_hint = (
            f"This job's auto-resume marker {key!r} names this run. To start a fresh run "
            f"instead, clear it (`localrun markers clear {key} --project {s.project}`) or run "
            "with LOCALRUN_RESUME=never"
        )
        if run_id is None:
            run_id = _auto_target(s, marker)
        mode = "allow"
    elif mode == "allow" and run_id is None:
        warnings.warn(
            "localrun: resume='allow' without an id can never resume: a new id is made for "
            "every run. Pass id=... (or set LOCALRUN_RUN_ID), or use resume=True to resume "
            "this job's run automatically",
            LocalrunWarning,
            stacklevel=2,
        )
    if mode == "must" and run_id is None:
        raise UsageError(
            "resume='must' needs the id of the run to resume: pass id=... (or resume='<id>'), "
            "or set LOCALRUN_RUN_ID"
        )
    run_id = run_id or generate_id()
    run_dir = make_run_dir(s.root, s.project, run_id)
    fields = {
        "name": name,
        "notes": notes,
        "tags": list(tags) if tags is not None else None,
        "group": group,
        "job_type": job_type,
    }
    claim = _claim(
        s, mode, run_id, run_dir, fields, config, rewind_to, allow_val_change, fresh_hint
    )
    if marker is not None:
        write_marker(marker, run_id, marker.stem)
    run = Run(s, run_dir, claim, marker)
    _current = run
    _install_handlers()
    return run


def _auto_target(s: _settings.Settings, marker: Path) -> str | None:
    """The run this job's marker names, if it should be resumed; else None (start anew)."""
    target = read_marker(marker)
    if target is None:
        return None
    target_dir = make_run_dir(s.root, s.project, target)
    try:
        m = mf.load(target_dir)
    except RunNotFoundError:
        log.warning(
            "localrun: the resume marker %s names run %s, which no longer exists; "
            "starting a new run",
            marker,
            target,
        )
        return None
    if m.get("state") == "finished":
        return None
    return target


def _claim(
    s: _settings.Settings,
    mode: str,
    run_id: str,
    run_dir: Path,
    fields: dict[str, Any],
    config: Mapping[str, Any] | None,
    rewind_to: int | None,
    allow_val_change: bool,
    fresh_hint: str,
) -> Claim:
    exists = run_dir.exists()
    where = f"{s.project}/{run_id} under {s.root}"
    if exists and not mf.exists(run_dir) and not wait_for_manifest(run_dir):
        raise CorruptRunError(
            f"run {where} has a folder but no state (no log/ and no manifest.json). If it holds "
            "segments, `localrun verify --repair` rebuilds it from them; if it is an empty "
            "folder that no process is creating, remove it"
        )
    if mode == "never":
        if exists:
            raise RunExistsError(
                f"run {where} already exists. Pass resume='allow' or resume='must' to continue "
                "it, or choose another id (localrun.util.generate_id())"
            )
    elif mode == "must" and not exists:
        raise RunNotFoundError(
            f"resume='must': there is no run {where} to resume. Runs there: "
            f"{_list_runs(run_dir.parent)}. Pass resume='allow' to create it when missing"
        )
    if rewind_to is not None and not exists:
        raise UsageError(f"rewind_to={rewind_to} needs a run to resume; {where} does not exist")
    if not exists:
        initial = dict(fields)
        initial["config"] = merge({}, config or {}, True)
        try:
            return create(run_dir, s.project, run_id, s.lease_ttl, initial, s.store)
        except RunExistsError:
            if mode == "never":
                raise RunExistsError(f"run {where} was just created by another process") from None
            wait_for_manifest(run_dir)
    return take_over(
        run_dir,
        s.lease_ttl,
        force=s.force,
        rewind_to=rewind_to,
        prepare=_resume_fields(fields, config, allow_val_change, fresh_hint),
        opts=s.store,
    )


def _list_runs(project_dir: Path) -> str:
    try:
        names = sorted(p.name for p in project_dir.iterdir() if (p / "manifest.json").exists())
    except OSError:
        names = []
    if not names:
        return "none"
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _resume_fields(
    fields: dict[str, Any],
    config: Mapping[str, Any] | None,
    allow_val_change: bool,
    fresh_hint: str,
) -> Callable[[mf.Manifest], None]:
    """What a resume changes: given notes/name/tags overwrite the stored ones; config merges.

    Runs inside the takeover's commit, so a refused config change takes nothing over. Its
    error names the way out (a resumed job whose config changed is usually meant to be new).
    """

    def apply(m: mf.Manifest) -> None:
        if config:
            try:
                m["config"] = merge(m.get("config") or {}, config, allow_val_change)
            except UsageError as exc:
                raise UsageError(
                    f"resuming run {m['project']}/{m['id']}: {exc}. {fresh_hint}"
                ) from None
        for k, v in fields.items():
            if v is not None:
                m[k] = v

    return apply


# -- process-wide hooks -----------------------------------------------------------------
_handlers_installed = False
_previous_sigterm: Any = None
_uncaught: BaseException | None = None


_stopping = False  # a SIGTERM is already unwinding this process towards its final flush


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Preemption: mark the run preempted and leave the way Python leaves on SystemExit.

    The flush happens on the way out (``with`` blocks, atexit), in the main thread, so a
    handler that interrupted ``log()`` mid-row never deadlocks on the buffer lock. A second
    SIGTERM (scancel, systemctl stop) while the first unwinds does not raise again: it would
    cut the final flush short.
    """
    global _stopping
    for run in list(_all_runs):
        run._preempted = True
    if _stopping:
        return
    prev = _previous_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    _stopping = True
    raise SystemExit(128 + signum)


_deferring = False
_deferred: list[int] = []


def _defer(signum: int, frame: FrameType | None) -> None:
    """During the final flush: note the signal and carry on (the process is ending anyway)."""
    _deferred.append(signum)
    if signum == signal.SIGTERM:
        for run in list(_all_runs):
            run._preempted = True


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Let a second SIGTERM or Ctrl-C (scancel, systemctl stop) not cut the final flush short.

    Only the main thread can swap handlers; elsewhere the flush runs as it is. A deferred
    SIGINT is raised as KeyboardInterrupt once the flush is done, unless Python is exiting.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring = True
    saved = {sig: signal.signal(sig, _defer) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        _deferring = False
        got = list(_deferred)
        _deferred.clear()
        if signal.SIGINT in got and not _exiting:
            raise KeyboardInterrupt


_exiting = False


def _excepthook(et: type[BaseException], ev: BaseException, tb: TracebackType | None) -> None:
    global _uncaught
    _uncaught = ev
    _previous_excepthook(et, ev, tb)


_previous_excepthook = sys.excepthook


def _at_exit() -> None:
    global _exiting
    _exiting = True
    run = _current
    if run is None or run._ended or run._pid != os.getpid():
        return
    try:
        if run._preempted:
            run._end("preempted", 128 + signal.SIGTERM)
        elif _uncaught is not None:
            run._end("failed", 130 if isinstance(_uncaught, KeyboardInterrupt) else 1)
        else:
            run.finish(0)
    except LocalrunError as exc:
        print(f"localrun: could not finish run {run.path}: {exc}", file=sys.stderr)


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) must never flush or finish the parent's run."""
    global _current
    _current = None


def _install_handlers() -> None:
    global _handlers_installed, _previous_sigterm
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_at_exit)
    sys.excepthook = _excepthook
    os.register_at_fork(after_in_child=_after_fork_in_child)
    if threading.current_thread() is threading.main_thread():
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)


def current() -> Run | None:
    return _current


def log_current(
    data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
) -> None:
    if _current is None:
        raise UsageError("localrun.log() needs a run: call localrun.init() first")
    _current.log(data, step=step, commit=commit)


def finish_current(exit_code: int = 0) -> None:
    if _current is not None:
        _current.finish(exit_code)
