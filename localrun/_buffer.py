"""Rows buffered by ``log()`` between flushes, and their conversion into one Arrow table.

Row-oriented on purpose: a row is ``(step, time, {key: value})``, stored with one
``list.append``, which is C-level work whatever the number of keys and atomic under the GIL: a
signal can never leave half a row, and the flush thread can take a prefix of the list without a
lock (see ``Run._take_rows``). The transposition into columns happens at flush time, where runs
of rows with the same keys are transposed with ``zip``.
"""

from __future__ import annotations

# pyarrow imports pandas (when installed) on its first array; pandas imports this module, which
# cannot be first imported once the interpreter shuts down. A run whose first flush happens in
# atexit would lose its rows, so import it now (it is small).
import concurrent.futures.thread  # noqa: F401
from typing import Any

import pyarrow as pa

from ._store.schema import ARROW_TYPES

Row = tuple[int, float, dict[str, Any]]


def last_values(rows: list[Row]) -> dict[str, Any]:
    """The last non-None value of each key: what the summary shows between flushes."""
    out: dict[str, Any] = {}
    for _, _, values in reversed(rows):
        for k, v in values.items():
            if v is not None and k not in out:
                out[k] = v
    return out


def to_table(rows: list[Row], kinds: dict[str, str], runtime_base: float, t0: float) -> pa.Table:
    """One Arrow table: ``_step``, ``_timestamp``, ``_runtime``, then every key by name."""
    n = len(rows)
    cols: dict[str, list[Any]] = {}
    start = 0
    while start < n:  # each run of rows with the same keys is transposed at once
        keys = rows[start][2].keys()
        end = start + 1
        while end < n and rows[end][2].keys() == keys:
            end += 1
        columns = zip(*(r[2].values() for r in rows[start:end]), strict=True)
        for k, values in zip(list(keys), columns, strict=True):
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col[start:end] = values
        start = end
    times = [r[1] for r in rows]
    arrays = [
        pa.array([r[0] for r in rows], pa.int64()),
        pa.array(times, pa.float64()),
        pa.array([runtime_base + (t - t0) for t in times], pa.float64()),
    ]
    names = ["_step", "_timestamp", "_runtime"]
    for k in sorted(cols):
        arrays.append(pa.array(cols[k], ARROW_TYPES[kinds[k]]))
        names.append(k)
    return pa.Table.from_arrays(arrays, names=names)
