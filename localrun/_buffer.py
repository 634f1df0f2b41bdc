"""The in-memory columnar buffer behind ``log()``: appends only, no I/O, no lock beyond one
``threading.Lock`` that a flush takes just long enough to swap buffers.

Rows are sparse (each step logs its own keys), so a column is padded with None lazily, when it
is next written or when the buffer becomes a table, which keeps a ``log()`` at O(keys logged).
"""

from __future__ import annotations

# pyarrow imports pandas (when installed) on its first array; pandas imports this module, which
# cannot be first imported once the interpreter shuts down. A run whose first flush happens in
# atexit would lose its rows, so import it now (it is small).
import concurrent.futures.thread  # noqa: F401
from typing import Any

import pyarrow as pa

from ._store.schema import ARROW_TYPES


class Buffer:
    """Rows committed since the last flush, column by column."""

    __slots__ = ("cols", "steps", "times")

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {}
        self.steps: list[int] = []
        self.times: list[float] = []

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: int, ts: float, row: dict[str, Any]) -> None:
        n = len(self.steps)
        cols = self.cols
        for k, v in row.items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            elif len(col) != n:
                # Pad a column this row is the first to write since n-len rows, or drop a value
                # a row interrupted by a signal left behind.
                if len(col) < n:
                    col.extend([None] * (n - len(col)))
                else:
                    del col[n:]
            col.append(v)
        self.steps.append(step)
        self.times.append(ts)

    def last_values(self) -> dict[str, Any]:
        """The last non-None value of each column: what the summary shows between flushes."""
        out = {}
        for k, col in self.cols.items():
            for v in reversed(col):
                if v is not None:
                    out[k] = v
                    break
        return out

    def to_table(self, kinds: dict[str, str], runtime_base: float, t0: float) -> pa.Table:
        n = len(self.steps)
        arrays = [
            pa.array(self.steps, pa.int64()),
            pa.array(self.times, pa.float64()),
            pa.array([runtime_base + (t - t0) for t in self.times], pa.float64()),
        ]
        names = ["_step", "_timestamp", "_runtime"]
        for k in sorted(self.cols):
            col = self.cols[k]
            if len(col) < n:
                col.extend([None] * (n - len(col)))
            elif len(col) > n:
                del col[n:]
            arrays.append(pa.array(col, ARROW_TYPES[kinds[k]]))
            names.append(k)
        return pa.Table.from_arrays(arrays, names=names)
