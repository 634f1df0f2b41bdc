"""Rows buffered by ``log()`` between flushes, and their conversion into one Arrow table.

Row-oriented on purpose: a row is one dict ``{key: value, "_timestamp": t}`` (and ``"_step"``
for a row logged at an explicit step), stored with one ``list.append``, which is C-level work
whatever the number of keys and atomic under the GIL: a signal can never leave half a row, and
the flush thread can take a prefix of the list without a lock (see ``Run._take_rows``).

A dict, not a ``(step, time, values)`` tuple: a dict of floats is not tracked by the cyclic
garbage collector, a tuple always is, and a million buffered tuples made every collection walk
them (half the CPU of a tight logging loop). User keys never start with ``_``, so the two
reserved keys cannot collide. The transposition into columns happens at flush time, a C-level
list comprehension per column (``batch_table``).
"""

from __future__ import annotations

# pa.array (the path of strings and lists, and of a batch being salvaged) imports pandas when it
# is installed; pandas imports this module, which cannot be first imported once the interpreter
# shuts down. A run whose first flush happens in atexit would lose its rows, so import it now.
import concurrent.futures.thread  # noqa: F401
import logging
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import starmap
from operator import itemgetter
from struct import Struct
from struct import error as struct_error
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from .._store import arrays
from .._store.schema import ARROW_TYPES, NUMBER

Row = tuple[int, float, dict[str, Any]]  # (step, unix time, values): a row with its step
Pending = dict[str, Any]  # as log() appends it: the values, TIME, and STEP for a jump
TIME = "_timestamp"
STEP = "_step"
log = logging.getLogger("localrun")
_INT64 = arrays.INT64
_FLOAT64 = arrays.FLOAT64
# What pa.array raises for a value it cannot take (UnicodeEncodeError is a ValueError, an int
# past int64 an OverflowError): a batch that fails this way is salvaged row by row.
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


class Batch(NamedTuple):
    """Rows taken from the buffer by one flush, with their steps resolved: one segment."""

    steps: Sequence[int]  # a range when no row of the batch jumped (the usual case)
    rows: list[Pending]
    cells: int  # the buffer's estimate of its size (see ``cells``)
    table: pa.Table | None = None  # once converted (then no rows): what a failed write keeps


def cells(rows: list[Pending]) -> int:
    """A cheap size estimate of buffered rows, in cells of about ``CELL_BYTES`` each: one per
    value and one per row (C-level, about 10 ns a row). Long strings and lists are counted
    by ``extra_cells`` when they are logged (the slow path)."""
    return sum(map(len, rows)) + len(rows)


CELL_BYTES = 72  # measured: a row of 10 floats (12 cells) holds about 840 bytes


def extra_cells(row: dict[str, Any]) -> int:
    """What ``cells`` does not see in a row: list items, and long strings (64 bytes a cell)."""
    extra = 0
    for v in row.values():
        t = type(v)
        if t is list:
            extra += len(v)
        elif t is str:
            extra += len(v) // CELL_BYTES
    return extra


def last_values(rows: Iterable[list[Pending]], want: int) -> dict[str, Any]:
    """The last non-None value of each key, from the newest of ``rows`` (a list of lists, oldest
    first): what the summary shows between flushes. Stops once ``want`` keys are found, so a
    buffer of rows that all hold every key costs one row, not the whole buffer."""
    out: dict[str, Any] = {TIME: None, STEP: None}
    want += 2
    for chunk in reversed(list(rows)):
        for values in reversed(chunk):
            if values.keys() <= out.keys():
                continue
            for k, v in values.items():
                if v is not None and k not in out:
                    out[k] = v
            if len(out) >= want:
                break
        else:
            continue
        break
    del out[TIME], out[STEP]
    return out


def batch_table(
    batch: Batch, kinds: dict[str, str], runtime_base: float, t0: float, where: str = ""
) -> pa.Table:
    """The table of a batch, as :func:`to_table` makes it, built in C from the row dicts.

    The number columns and the times are transposed in one pass over the rows when every row
    holds every number key (the hot path's rows: :func:`_transposed`), else one list
    comprehension and one ``array('d')`` per column (``_store/arrays.py``: never ``pa.array``,
    whose first call imports pandas); other kinds go through one ``pa.array`` of structs. Any
    value Arrow refuses sends the batch down :func:`to_table`'s path, which salvages the rest.
    """
    rows = batch.rows
    n = len(rows)
    columns: dict[str, pa.Array] = {}
    others: list[str] = []
    try:
        keys = _keys(rows, kinds)
        numbers = [k for k in keys if kinds[k] == NUMBER]
        others = [k for k in keys if kinds[k] != NUMBER]
        together = _transposed(rows, numbers)
        if together is not None:
            times = together.pop()
            columns.update(zip(numbers, together, strict=True))
        else:
            times = arrays.float64s([r[TIME] for r in rows])
            for k in numbers:
                column = _numbers(rows, k)
                if column is not None:  # a key no row of the batch holds is no column
                    columns[k] = column
        runtime = pc.add(
            pc.subtract(times, arrays.float64_scalar(t0)), arrays.float64_scalar(runtime_base)
        )
        head = [arrays.int64s(batch.steps), times, runtime]
        if others:
            fields = [pa.field(k, ARROW_TYPES[kinds[k]]) for k in others]
            struct = pa.array(rows, pa.struct(fields))
            for i, k in enumerate(others):
                column = struct.field(i)
                if column.null_count < n:
                    columns[k] = column
    except _CONVERSION_ERRORS:
        return to_table(_as_rows(batch), kinds, runtime_base, t0, where)
    names = sorted(columns)
    return pa.Table.from_arrays(
        [*head, *(columns[k] for k in names)], names=[STEP, TIME, "_runtime", *names]
    )


_MAX_TOGETHER = 128  # number columns transposed in one pass at most (see _strides' memory)


def _transposed(rows: list[Pending], keys: list[str]) -> list[pa.Array] | None:
    """Each number column of ``keys``, then the times, from one pass over the rows; None when
    a row lacks a key or holds a value ``struct`` cannot pack as a double (a None): the
    column-by-column path handles those.

    Why: the writer converts every logged row, and a loop logging faster than the disk makes
    ``log()`` convert rows itself (``Run._help``), so this cost is the tight loop's. One
    column at a time reads each row dict once per key, in a Python-level comprehension, cold
    in the cache once the buffer is large (2 us a row of 10 floats, measured in the loop); here
    ``itemgetter`` takes each row's values at once and ``struct`` packs them into one
    row-major buffer (all C), which Arrow's ``take`` cuts into columns. A double packs as
    ``array('d')`` would convert it (``float()``: an int past 2**53 rounds).
    """
    width = len(keys) + 1
    if not keys or width > _MAX_TOGETHER:
        return None
    n = len(rows)
    try:
        packed = b"".join(starmap(_packer(width).pack, map(itemgetter(*keys, TIME), rows)))
    except (KeyError, TypeError, OverflowError, struct_error):
        return None
    flat = pa.Array.from_buffers(_FLOAT64, n * width, [None, pa.py_buffer(packed)])
    return [flat.take(s) for s in _strides(width, n)]


@lru_cache(maxsize=8)
def _packer(width: int) -> Struct:
    return Struct(f"{width}d")


def _strides(width: int, n: int) -> list[pa.Array]:
    """For each column of a row-major buffer of ``width`` columns, its ``n`` indices."""
    every = _stride_table(width, max(n, _STRIDE_ROWS))
    return every if len(every[0]) == n else [s.slice(0, n) for s in every]


_STRIDE_ROWS = 4096  # a conversion's rows at most, usually (Run's _SLICE is 2,048)


@lru_cache(maxsize=4)
def _stride_table(width: int, rows: int) -> list[pa.Array]:
    """Kept: a run logs the same keys batch after batch (at most 128 x 4,096 x 8 bytes = 4 MiB
    an entry, for the widest rows)."""
    return [arrays.int64s(range(j, rows * width, width)) for j in range(width)]


def _numbers(rows: list[Pending], key: str) -> pa.Array | None:
    """A number column; None if no row holds the key. ``TypeError`` for a value of no number."""
    try:
        return arrays.float64s([r[key] for r in rows])
    except (KeyError, TypeError):  # a row without the key, or a None: nulls
        return arrays.optional_float64s([r.get(key) for r in rows])


def _keys(rows: list[Pending], kinds: dict[str, str]) -> list[str]:
    """The keys of the batch's columns, sorted. With few known keys, all of them (the absent
    ones are dropped as all-null columns); with many more keys than a row holds, the union of
    the rows' keys, so a run of 1,000 sparse keys does not look each one up in every row."""
    if len(kinds) + 2 <= 2 * len(rows[0]):
        return sorted(kinds)
    present = set().union(*rows)
    return sorted(k for k in present if k in kinds)


def _as_rows(batch: Batch) -> list[Row]:
    """The batch as ``(step, time, values)`` rows, for the row-by-row salvage path."""
    out: list[Row] = []
    for step, row in zip(batch.steps, batch.rows, strict=True):
        values = {k: v for k, v in row.items() if k != TIME and k != STEP}
        out.append((step, row[TIME], values))
    return out


def to_table(
    rows: list[Row], kinds: dict[str, str], runtime_base: float, t0: float, where: str = ""
) -> pa.Table:
    """One Arrow table: ``_step``, ``_timestamp``, ``_runtime``, then every key by name.

    Never raises for the values of one row: a row whose value Arrow cannot take (a step past
    int64, a string that is not UTF-8) is dropped with a logged error naming ``where`` (the
    run), the key and the step, and the rest of the batch is converted, so one bad row can
    never block every later flush. The table may then have no rows: write nothing for it.
    """
    cols = _transpose(rows)
    try:
        return _build(rows, cols, kinds, runtime_base, t0)
    except _CONVERSION_ERRORS as exc:
        error = exc
    bad = _bad_rows(rows, cols, kinds)
    if not bad:  # not the fault of any one value: the caller must see it
        raise error
    details: dict[str, list[int]] = {}
    for i, keys in sorted(bad.items()):
        for k in keys:
            details.setdefault(k, []).append(rows[i][0])
    log.error(
        "localrun: run %s: dropped %d row(s) whose values cannot be stored (%s); the other "
        "%d row(s) of the batch are kept",
        where or "?",
        len(bad),
        "; ".join(
            f"{k!r} at step {', '.join(map(str, steps[:3]))}" for k, steps in details.items()
        ),
        len(rows) - len(bad),
    )
    return to_table([r for i, r in enumerate(rows) if i not in bad], kinds, runtime_base, t0, where)


def _transpose(rows: list[Row]) -> dict[str, list[Any]]:
    """Each key's values, one per row (None where a row lacks the key)."""
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
    return cols


def _build(
    rows: list[Row],
    cols: dict[str, list[Any]],
    kinds: dict[str, str],
    runtime_base: float,
    t0: float,
) -> pa.Table:
    times = [r[1] for r in rows]
    arrays = [
        pa.array([r[0] for r in rows], _INT64),
        pa.array(times, _FLOAT64),
        pa.array([runtime_base + (t - t0) for t in times], _FLOAT64),
    ]
    names = ["_step", "_timestamp", "_runtime"]
    for k in sorted(cols):
        arrays.append(_array(cols[k], ARROW_TYPES[kinds[k]]))
        names.append(k)
    return pa.Table.from_arrays(arrays, names=names)


def _array(values: list[Any], t: pa.DataType) -> pa.Array:
    """``pa.array``, except that ints go into float64 columns as Python's ``float()`` rounds
    them: ``log()``'s fast path keeps plain ints (a ``time.time_ns()``), and Arrow refuses an
    int past 2**53 that a double cannot hold exactly."""
    try:
        return pa.array(values, t)
    except pa.ArrowInvalid:
        if t != _FLOAT64:
            raise
        return pa.array([float(v) if type(v) is int else v for v in values], t)


def _bad_rows(
    rows: list[Row], cols: dict[str, list[Any]], kinds: dict[str, str]
) -> dict[int, list[str]]:
    """Row index -> the columns whose value in that row Arrow refuses (value by value: slow,
    but only ever run on a batch that failed)."""
    bad: dict[int, list[str]] = {}
    checks: list[tuple[str, list[Any], pa.DataType]] = [
        ("_step", [r[0] for r in rows], _INT64),
        ("_timestamp", [r[1] for r in rows], _FLOAT64),
    ]
    checks += [(k, cols[k], ARROW_TYPES[kinds[k]]) for k in sorted(cols)]
    for name, values, t in checks:
        try:
            _array(values, t)
            continue
        except _CONVERSION_ERRORS:
            pass
        for i, v in enumerate(values):
            if v is not None and not _fits(v, t):
                bad.setdefault(i, []).append(name)
    return bad


def _fits(value: Any, t: pa.DataType) -> bool:
    try:
        _array([value], t)
    except _CONVERSION_ERRORS:
        return False
    return True
