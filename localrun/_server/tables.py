"""The history tables the charts read recently, kept by run revision and columns.

Why: a chart asks for the same run's columns again and again with another query: a zoom (a
new x range), a resize (a new width), a compare page's group bands next to its lines. Each was
a read of every segment (a million rows of five metrics: 60 to 200 ms here, more on NFS)
before a downsampling that takes a fraction of that. A revision is immutable, so a table kept
under the run's folder, uid, revision and columns is never stale: a commit makes a new key.
Bounded by Arrow bytes (least recently used first out); a table over half the bound is not
kept, so one huge run cannot flush every other.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import pyarrow as pa

from .._query import StoredRun

MAX_BYTES = 256 << 20

_Key = tuple[str, object, int | None, tuple[str, ...]]


class Tables:
    """A thread-safe LRU of history tables (handlers run in worker threads)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.reads = 0  # tables read from the run (the tests count them)
        self._tables: OrderedDict[_Key, pa.Table] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def history(self, run: StoredRun, columns: list[str]) -> pa.Table:
        """``run.history(columns)``, read once per revision while it is kept."""
        key = (os.fspath(run.dir), run.manifest.get("uid"), run.rev, tuple(columns))
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
                return table
        table = run.history(columns)
        self.reads += 1
        size = table.nbytes
        if size > self.max_bytes // 2:
            return table
        with self._lock:
            if key not in self._tables:
                self._tables[key] = table
                self._size += size
                while self._size > self.max_bytes:
                    _, old = self._tables.popitem(last=False)
                    self._size -= old.nbytes
        return table
