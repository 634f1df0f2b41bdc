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
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from .._store.schema import ARROW_TYPES

Row = tuple[int, float, dict[str, Any]]  # (step, unix time, values): a row with its step
Pending = tuple[int | None, float, dict[str, Any]]  # as log() appends it: step None = the next
log = logging.getLogger("localrun")
_INT64 = pa.int64()
_FLOAT64 = pa.float64()
# What pa.array raises for a value it cannot take (UnicodeEncodeError is a ValueError, an int
# past int64 an OverflowError): a batch that fails this way is salvaged row by row.
_CONVERSION_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)


def last_values(rows: Sequence[Row] | Sequence[Pending]) -> dict[str, Any]:
    """The last non-None value of each key: what the summary shows between flushes."""
    out: dict[str, Any] = {}
    for _, _, values in reversed(rows):
        for k, v in values.items():
            if v is not None and k not in out:
                out[k] = v
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
