"""The flush thread and compaction: what turns the buffer into committed segments.

The thread wakes every ``flush_interval`` seconds (or when ``log()`` reaches ``flush_rows``
rows) and calls ``Run._flush``. It outlives any one failed flush (a full disk, a hiccup of
the NFS server): the rows stay buffered and the next pass retries. It stops for good when the
run is superseded.

The compactor (:class:`Compactor`) is the attempt's other writer thread: it merges segments,
across attempts and rewinds, by the policy and format of ``_store/compaction.py``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .._store import compaction, revisions
from .._store import manifest as mf
from .._store.layout import MANIFEST, inside
from .._store.records import SegmentEntry
from ..errors import RunSupersededError
from .heartbeat import beat_owner

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("localrun")


def loop(run: Run) -> None:
    interval = run._settings.flush_interval
    while not run._stop.is_set():
        run._wake.wait(interval)
        run._wake.clear()
        if run._stop.is_set() or os.getpid() != run._pid:
            return
        if run._rows or run._backlog or run._dirty or run._capture or run._system_due():
            try:
                run._flush()
            except RunSupersededError:
                return
            except Exception as exc:  # the thread must outlive any one failed flush
                log.warning("localrun: flush of %s failed, will retry: %s", run.path, exc)


def compact(run: Run, meta: dict[str, Any]) -> None:
    """After a flush's commit: let the run's compactor look at the new state (never waits)."""
    run._compactor.wake()


class Compactor:
    """The attempt's compaction thread (policy and format: ``_store/compaction.py``).

    Who merges: the attempt that owns the run, in the background, right after ``init`` (so a
    resumed run's earlier attempts are merged while the new one trains, and ``init`` stays as
    fast as before) and after each flush. A thread of its own, not the flush thread: a merge of
    millions of rows takes seconds, and the flush thread must keep up with ``log()``.

    Every commit is the writer's (fenced, under the flush lock, which also orders it with the
    final flush that releases the lease): a merge committed after the end of its attempt would
    be fenced out. ``finish`` lets the due merges complete (a short attempt still leaves its run
    compacted for the next); any other end (preemption, an error) stops at the next check and
    removes the merge's uncommitted files, which no revision ever listed.
    """

    _STALE_LIMIT = 3  # merges planned on a state that changed before their commit, in a row

    def __init__(self, run: Run) -> None:
        self._run = run
        self._wake = threading.Event()
        self._closing = False  # finish: merge what is due, then stop
        self._abort = False  # any other end: stop at the next check, commit nothing more
        self._thread = threading.Thread(
            target=self._loop, name=f"localrun-compact-{run.id}", daemon=True
        )
        self._thread.start()
        self.wake()  # a resumed run: its earlier attempts' segments may be due already

    def wake(self) -> None:
        self._wake.set()

    def stop(self, drain: bool, timeout: float = 60.0) -> None:
        """Stop the thread before the attempt's final commit; with ``drain``, after the merges
        that are due (for at most ``timeout`` seconds, then as without).

        Without, nothing is waited for here: a merge still reading or writing commits nothing
        (its commit looks at ``_abort`` under the flush lock, which the final commit takes
        next), stops at its next check and removes its files. :meth:`join` then waits for it
        after the final commit."""
        if drain and not self._abort:
            self._closing = True
            self._wake.set()
            self._thread.join(timeout)
        self._abort = True
        self._wake.set()

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the thread to leave the merge it is in (it checks before each row group
        and each output), after the attempt's final commit, so the end never waits on a merge.

        Why wait at all: a process must not exit while one of its threads is inside Arrow's
        reader or writer, whose C++ statics and allocator are torn down at exit under it (a
        crash with SIGSEGV instead of the process's own exit status). A superseded writer of
        the NFS suite, woken from SIGSTOP, exited 139 instead of 6 once; in a later run of the
        same step its compaction was inside a merge's write as it woke. A thread stuck on a
        hung NFS server keeps the process from exiting anyway (the kernel waits for its I/O),
        so the bound only caps this wait."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        run, stale = self._run, 0
        while not self._abort:
            self._wake.wait()
            self._wake.clear()
            while not self._abort and os.getpid() == run._pid:
                try:
                    outcome = self._merge_once()
                except (RunSupersededError, compaction.Stopped):
                    return
                except Exception as exc:  # a damaged part, a full disk: stop trying this attempt
                    log.warning("localrun: compaction of %s failed, stopped: %s", run.path, exc)
                    return
                if outcome is None:
                    break
                stale = 0 if outcome else stale + 1
                if stale >= self._STALE_LIMIT:
                    return
            if self._closing:
                return

    def _merge_once(self) -> bool | None:
        """Plan, write and commit one merge: None when nothing is due, False when the state
        changed under it (nothing committed; plan again), True when it is committed."""
        run = self._run
        job = compaction.plan(mf.load(run.dir), run._settings.compact_fanout)
        if job is None:
            return None
        with run._flush_lock:  # names are taken in order with the flushes' (one namespace)
            if self._abort or run._ended:
                raise compaction.Stopped
            names = [(run.attempt, run._seq + i) for i in range(job.outputs)]
            run._seq += job.outputs
        with run._lock:
            config = run._config.as_dict()
        meta = {"project": run.project, "id": run.id, "attempt": run.attempt, "config": config}
        outputs = compaction.execute(run.dir, job, names, meta, stop=lambda: self._abort)
        committed = False
        try:
            with run._flush_lock:
                if self._abort or run._ended:
                    raise compaction.Stopped

                def change(m: mf.Manifest) -> None:
                    if not compaction.still_valid(m, job):
                        raise _Stale
                    compaction.swap(m, job, outputs)
                    beat_owner(m)

                run._update(change)
                committed = True
        except _Stale:
            pass
        finally:
            if not committed and not run._error:
                self._discard(outputs)
        if not committed:
            return False
        parts = {part["file"] for part in job.parts}
        if revisions.copy_lists(run.dir, parts):
            # Refreshing manifest.json failed (logged): tools reading it still need the parts.
            # They stay, unlisted, until a resume or verify --repair sets them aside.
            log.warning(
                "localrun: kept %d merged segments of %s for its stale %s",
                len(parts),
                run.path,
                MANIFEST,
            )
            return True
        for part in job.parts:  # only now: the revision that replaces them is committed
            inside(run.dir, part["file"], "segment").unlink(missing_ok=True)
        return True

    def _discard(self, outputs: list[SegmentEntry]) -> None:
        """Remove a merge's files that no revision lists (checked on the newest one: a commit
        can fail after its revision is in place, when refreshing the manifest copy)."""
        run = self._run
        try:
            listed = {s["file"] for s in mf.load(run.dir)["segments"]}
        except Exception:  # cannot tell: leave them; resume and verify set orphans aside
            return
        for e in outputs:
            if e["file"] not in listed:
                inside(run.dir, e["file"], "segment").unlink(missing_ok=True)


class _Stale(Exception):
    """The run's state changed between planning a merge and committing it."""
