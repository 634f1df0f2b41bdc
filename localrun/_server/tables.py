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

import pyarrow as pa

from .._query import StoredRun
from .._query_series import read_history
from .kept import Kept

MAX_BYTES = 256 << 20

_Key = tuple[str, object, int | None, tuple[str, ...]]


class Tables:
    """History tables by run folder, uid, revision and columns (``Kept``: at most
    ``max_bytes``; one over half of it is not kept)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.reads = 0  # tables read from the run (the tests count them)
        self._kept: Kept[_Key, pa.Table] = Kept(max_bytes, _nbytes, max_bytes // 2)

    def history(self, run: StoredRun, columns: list[str]) -> pa.Table:
        """``read_history(run, columns)``, read once per revision while it is kept."""
        key = (os.fspath(run.dir), run.manifest.get("uid"), run.rev, tuple(columns))
        table = self._kept.get(key)
        if table is None:
            table = read_history(run, columns)
            self.reads += 1
            self._kept.put(key, table)
        return table


def _nbytes(table: pa.Table) -> int:
    return int(table.nbytes)
