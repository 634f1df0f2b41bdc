"""Arrow arrays built from Python numbers through their buffers, not ``pa.array``.

Why not ``pa.array``: its first call in a process (and ``pa.scalar``'s, and any compute call
given a Python number) asks pandas whether the input is array-like, which imports pandas when it
is installed: 0.3 s on a quiet machine, over 1 s on a loaded one, holding pyarrow's import lock
and most of the GIL. On the writer's side that import landed in the first flush of a tight
loop, and a ``log()`` waiting for room waited for it (issue 8: the slowest ``log()`` call). The
writer builds its number columns here, so a process that never uses pandas never imports it,
and one that does pays for it where it uses it. ``array('d')`` converts as Python's ``float()``
does (an int past 2**53 rounds, as it must in a float64 column), in C, about as fast as
``pa.array``.
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

INT64 = pa.int64()
FLOAT64 = pa.float64()
_UINT8 = pa.uint8()
_BOOL = pa.bool_()


def int64s(values: Iterable[int]) -> pa.Array:
    """An int64 array (``OverflowError`` past int64)."""
    buf = array.array("q", values)
    return pa.Array.from_buffers(INT64, len(buf), [None, pa.py_buffer(buf)])


def int64_scalar(value: int) -> pa.Scalar:
    """An int64 scalar, for compute calls (which would convert a Python int with ``pa.scalar``)."""
    return int64s((value,))[0]


def float64_scalar(value: float) -> pa.Scalar:
    """A float64 scalar, for compute calls (as :func:`int64_scalar`)."""
    return float64s((value,))[0]


def repeat_int64(value: int, n: int) -> pa.Array:
    """``n`` times ``value``, as ``pa.repeat`` would give it."""
    buf = array.array("q", (value,)) * n
    return pa.Array.from_buffers(INT64, n, [None, pa.py_buffer(buf)])


def float64s(values: Iterable[float]) -> pa.Array:
    """A float64 array without nulls. ``TypeError`` for a None or anything that is no number."""
    buf = array.array("d", values)
    return pa.Array.from_buffers(FLOAT64, len(buf), [None, pa.py_buffer(buf)])


def optional_float64s(values: Sequence[float | None]) -> pa.Array | None:
    """A float64 array with a null for each None; None when every value is None (the caller
    leaves such a column out). ``TypeError`` for anything that is no number."""
    n = len(values)
    valid = bytes([v is not None for v in values])
    count = valid.count(1)
    if count == 0:
        return None
    data = pa.py_buffer(array.array("d", [0.0 if v is None else v for v in values]))
    if count == n:
        return pa.Array.from_buffers(FLOAT64, n, [None, data])
    # One byte per value as uint8, cast to bool: Arrow packs it into the validity bitmap.
    flags = pa.Array.from_buffers(_UINT8, n, [None, pa.py_buffer(valid)])
    bitmap = pc.cast(flags, _BOOL).buffers()[1]
    return pa.Array.from_buffers(FLOAT64, n, [bitmap, data], null_count=n - count)
