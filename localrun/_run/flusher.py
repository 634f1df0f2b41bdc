"""The flush thread and compaction: what turns the buffer into committed segments.

The thread wakes every ``flush_interval`` seconds (or when ``log()`` reaches ``flush_rows``
rows) and calls ``Run._flush``. It outlives any one failed flush (a full disk, a hiccup of
the NFS server): the rows stay buffered and the next pass retries. It stops for good when the
run is superseded.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .._store import manifest as mf
from .._store import segments
from .._store.layout import inside
from .._store.records import SegmentEntry
from ..errors import RunSupersededError

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("localrun")


def loop(run: Run) -> None:
    pa.array([0.0])  # pay pyarrow's lazy pandas import here, not in the first flush
    interval = run._settings.flush_interval
    while not run._stop.is_set():
        run._wake.wait(interval)
        run._wake.clear()
        if run._stop.is_set() or os.getpid() != run._pid:
            return
        if run._rows or run._dirty or run._capture or run._system_due():
            try:
                run._flush()
            except RunSupersededError:
                return
            except Exception as exc:  # the thread must outlive any one failed flush
                log.warning("localrun: flush of %s failed, will retry: %s", run.path, exc)


def compact(run: Run, meta: dict[str, Any]) -> None:
    """Tiered compaction of this attempt's newest segments (docs/format.md).

    When the tail holds FANOUT segments of one level, they become one segment of the next
    level: the manifest stays short (a run flushing every 2 s for days would otherwise list
    100,000 segments and rewrite them all on every flush), and each row is rewritten only
    log_FANOUT(rows) times. Never across a rewind: ``_mine`` restarts at each one. The old
    files are removed only after the manifest lists the merged one instead.
    """
    fanout = run._settings.compact_fanout
    while len(run._mine) >= fanout:
        level = int(run._mine[-1].get("level", 0))
        group = run._mine[-fanout:]
        if any(int(e.get("level", 0)) != level for e in group):
            return
        merged = segments.merge(run.dir, group, run.attempt, run._seq, level + 1, meta)
        run._seq += 1
        old = {e["file"] for e in group}

        def swap(m: mf.Manifest, old: set[str] = old, merged: SegmentEntry = merged) -> None:
            m["segments"] = [s for s in m["segments"] if s["file"] not in old] + [merged]

        run._update(swap)
        run._mine[-fanout:] = [merged]
        for rel in old:
            inside(run.dir, rel, "segment").unlink(missing_ok=True)
