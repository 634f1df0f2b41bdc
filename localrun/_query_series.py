"""A run's metrics as chart series, downsampled where they are read (DESIGN §7).

A chart is a few hundred to a few thousand pixels wide; a run logs up to millions of steps.
Sending every point makes the browser, not the data, the limit (the reason people call other
dashboards slow), so a series comes back with at most ``2 * width`` points: the x range is cut
into ``width`` equal buckets and each non-empty bucket keeps its lowest and its highest point,
each at its own x. A spike is the highest point of its bucket, so it survives any zoom level;
a series that already fits comes back whole.

Vectorised with numpy (the ``server`` extra brings it): a million rows are a few passes over
two arrays, tens of milliseconds; the same with pyarrow's hash aggregations and a join took
seconds (``benchmarks/bench_ui.py``). Rows hidden by rewinds never reach here
(``StoredRun.history`` leaves them out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._query import NUMBER, STEP_COLUMNS, arrow_schema, minimum_by
from ._store import arrays, segments
from .errors import UsageError

if TYPE_CHECKING:
    from ._query import StoredRun

# x axis name -> the column it reads; any other name is a number key of the run.
X_COLUMNS = {"step": "_step", "time": "_timestamp", "relative": "_runtime"}
SYSTEM_X = ("time", "relative")
STREAMS = ("history", "system")
Column: TypeAlias = "pa.Array | pa.ChunkedArray"


@dataclass(frozen=True)
class Points:
    """One downsampled series: its points in x order, and how many the range held."""

    key: str
    x: list[float]
    y: list[float]
    count: int
    downsampled: bool


@dataclass(frozen=True)
class ResumePoint:
    """Where an attempt after the first starts among the visible rows (a resume marker)."""

    attempt: int
    step: int | None
    x: float | None
    host: str | None


@dataclass(frozen=True)
class RunSeries:
    """What a chart of one run draws: its series and its resume markers."""

    series: list[Points]
    attempts: list[ResumePoint]


@dataclass(frozen=True)
class GroupBands:
    """Many runs on one bucket grid: per bucket the mean across runs of each run's mean, and
    the min, max, population std and number of runs with points there."""

    x: list[float]
    mean: list[float]
    min: list[float]
    max: list[float]
    std: list[float]
    n: list[int]
    runs: int
    attempts: list[tuple[str, ResumePoint]]  # (run path, where a later attempt of it starts)


def finite(x: Column, y: Column) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as float64 arrays without the rows where either is null, NaN or infinite
    (a chart cannot place them, and JSON cannot carry NaN)."""
    return Axis(x).points(_floats(y))


def _floats(column: Column) -> np.ndarray:
    """A column as float64 with NaN for nulls (one copy at most, no Python objects; none for
    one chunk of float64 without nulls).

    Read from the Arrow buffers, not with ``to_numpy``: pyarrow's ``to_numpy`` (and
    ``pc.fill_null`` given a Python float) imports pandas at its first call, 0.35 s holding the
    GIL, which a server paid at its first chart, beside its first runs page.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [_chunk_floats(c) for c in chunks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


_NAN = arrays.float64_scalar(math.nan)


def _chunk_floats(a: pa.Array) -> np.ndarray:
    if a.type != arrays.FLOAT64:
        a = a.cast(arrays.FLOAT64)
    if a.null_count:
        a = pc.fill_null(a, _NAN)
    if not len(a):
        return np.empty(0, dtype=np.float64)
    return np.frombuffer(a.buffers()[1], dtype=np.float64, count=len(a), offset=a.offset * 8)


class Axis:
    """One x column, converted and checked once for every series drawn against it.

    Why: a run page asks for every key of a run against the same ``_step``; converting,
    checking and bucketing that column again per key was half the work of a 1e6-step
    answer. What depends on the y column too (its gaps) is worked out per series, and the
    shared results are used only when the series has no gap, so the x values are the same.
    """

    def __init__(self, x: Column) -> None:
        self.xs = _floats(x)
        self.x_ok = np.isfinite(self.xs)
        self.all_ok = bool(self.x_ok.all())
        self.ordered = _ordered(self.xs)
        self._buckets: dict[int, np.ndarray] = {}  # by width: the whole axis's buckets

    def points(self, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows where x and y are both finite."""
        y_ok = np.isfinite(ys)
        if self.all_ok and bool(y_ok.all()):
            return self.xs, ys
        keep = self.x_ok & y_ok
        return self.xs[keep], ys[keep]

    def downsample(
        self,
        key: str,
        y: Column,
        width: int,
        xmin: float | None = None,
        xmax: float | None = None,
    ) -> Points:
        """:func:`downsample` of ``y`` against this axis."""
        xs, ys = in_range(*self.points(_floats(y)), xmin, xmax)
        whole = xs is self.xs  # no gap, no range: the axis's own values
        if not (self.ordered if whole else _ordered(xs)):  # steps are sorted; a metric x is not
            order = np.argsort(xs, kind="stable")
            xs, ys = xs[order], ys[order]
        count = len(xs)
        if count <= 2 * width:
            return Points(key, xs.tolist(), ys.tolist(), count, False)
        # The whole axis (no gap, no range, in order) has one grid per width: its bounds and
        # buckets are worked out for the first key and reused for the others.
        shared = whole and self.ordered
        b = self._buckets.get(width) if shared else None
        if b is None:
            b = buckets(xs, *bounds(xs, xmin, xmax), width)
            if shared:
                self._buckets[width] = b
        keep = _extremes(b, ys)
        return Points(key, xs[keep].tolist(), ys[keep].tolist(), count, True)


def _ordered(xs: np.ndarray) -> bool:
    return not (len(xs) > 1 and bool((xs[1:] < xs[:-1]).any()))


def in_range(
    x: np.ndarray, y: np.ndarray, xmin: float | None, xmax: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The points with ``xmin <= x <= xmax`` (either bound may be open)."""
    if xmin is None and xmax is None:
        return x, y
    keep = np.ones(len(x), dtype=bool)
    if xmin is not None:
        keep &= x >= xmin
    if xmax is not None:
        keep &= x <= xmax
    return x[keep], y[keep]


def bounds(x: np.ndarray, xmin: float | None, xmax: float | None) -> tuple[float, float]:
    """The grid's range: the given bounds, else the data's own (0, 0 for no data)."""
    lo = xmin if xmin is not None else (float(x.min()) if len(x) else 0.0)
    hi = xmax if xmax is not None else (float(x.max()) if len(x) else 0.0)
    return float(lo), float(hi)


def buckets(x: np.ndarray, lo: float, hi: float, width: int) -> np.ndarray:
    """Each point's bucket, ``0 .. width - 1``, of ``width`` equal buckets over ``[lo, hi]``
    (``hi`` itself falls in the last bucket, points outside in the nearest)."""
    if hi <= lo:
        return np.zeros(len(x), dtype=np.int64)
    index = np.floor((x - lo) * (width / (hi - lo))).astype(np.int64)
    return np.clip(index, 0, width - 1)


def downsample(
    key: str,
    x: Column,
    y: Column,
    width: int,
    xmin: float | None = None,
    xmax: float | None = None,
) -> Points:
    """At most ``2 * width`` points of the series: each bucket's min and max point, x-ordered.

    Nulls, NaN and infinities are dropped first; ``count`` is how many points lie in range.
    (Several series against one x: :class:`Axis`, which converts and buckets it once.)
    """
    return Axis(x).downsample(key, y, width, xmin, xmax)


def warm_up() -> None:
    """Pay the first chart's one-time costs now: the Parquet reader's (its modules, zstd and
    the encodings segments are written in, the query layer's schema module) and the
    downsampling's (numpy's and Arrow's kernels). The server calls this as it starts, before
    it prints its address, so the first chart a user opens does not wait for them."""
    x = arrays.float64s([0.0, 1.0, 2.0, 3.0, 4.0])
    table = pa.table({"_step": arrays.int64s(range(5)), "x": x})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **segments.write_options(table.schema))
    read = segments.read_parquet(pa.BufferReader(sink.getvalue()))
    arrow_schema({"x": NUMBER})  # what a run's first history read imports
    downsample("warm-up", read["x"], read["x"], 1)


def _extremes(b: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The indices of each bucket's lowest and highest point (the first of equals), in order.

    ``b`` is non-decreasing (the points are in x order), so each bucket is one slice and
    ``reduceat`` finds its min and max in one pass."""
    starts = np.flatnonzero(np.concatenate(([True], b[1:] != b[:-1])))
    sizes = np.diff(np.append(starts, len(b)))
    lows = _first_of_each(y == np.repeat(np.minimum.reduceat(y, starts), sizes), b)
    highs = _first_of_each(y == np.repeat(np.maximum.reduceat(y, starts), sizes), b)
    # One point when a bucket's min and max are the same row (one point, or a flat stretch).
    return np.union1d(lows, highs)


def _first_of_each(mask: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The first index where ``mask`` holds in each bucket (every bucket has one)."""
    hits = np.flatnonzero(mask)
    groups = b[hits]
    return hits[np.concatenate(([True], groups[1:] != groups[:-1]))]


def number_keys(run: StoredRun) -> list[str]:
    """The run's keys that hold numbers (what a chart can draw), sorted."""
    kinds: dict[str, str] = run.manifest.get("schema") or {}
    return sorted(k for k, kind in kinds.items() if kind == NUMBER)


def check_axis(run: StoredRun, x: str, stream: str) -> str:
    """The column ``x`` reads, or :class:`UsageError` naming the allowed values."""
    if stream not in STREAMS:
        raise UsageError(f"stream={stream!r}: use 'history' or 'system'")
    if stream == "system":
        if x not in SYSTEM_X:
            raise UsageError(f"x={x!r}: system metrics are drawn against 'time' or 'relative'")
        return X_COLUMNS[x]
    if x in X_COLUMNS:
        return X_COLUMNS[x]
    if x not in number_keys(run):
        raise UsageError(
            f"x={x!r} is not 'step', 'time', 'relative' or a number key of run {run.path} "
            f"({', '.join(number_keys(run)) or 'it has none'})"
        )
    return x


def read_history(run: StoredRun, columns: list[str]) -> pa.Table:
    """How the series read a run's rows: ``columns`` (keys and the x axis's step column;
    ``_step`` always comes too) and no other step column. A server passes its own, which keeps
    recent ones."""
    steps = [c for c in columns if c in STEP_COLUMNS]
    return run._history_of([c for c in columns if c not in STEP_COLUMNS], steps)


History: TypeAlias = "Callable[[StoredRun, list[str]], pa.Table]"


def run_series(
    run: StoredRun,
    keys: Sequence[str] | None,
    x: str = "step",
    width: int = 1000,
    xmin: float | None = None,
    xmax: float | None = None,
    stream: str = "history",
    read: History = read_history,
) -> RunSeries:
    """The run's ``keys`` (every number key by default) against ``x``, downsampled to
    ``width`` buckets over ``[xmin, xmax]``, and where each attempt after the first starts."""
    column = check_axis(run, x, stream)
    if stream == "system":
        return _system_series(run, keys, column, width, xmin, xmax)
    chosen = _history_keys(run, keys)
    table = read(run, sorted({*chosen, column}))
    axis = Axis(table[column])
    series = [axis.downsample(k, table[k], width, xmin, xmax) for k in chosen]
    return RunSeries(series, _markers(run, table, column))


def _history_keys(run: StoredRun, keys: Sequence[str] | None) -> list[str]:
    """The keys to draw: every number key by default. A running run may not have committed a
    key a chart asks for yet: it reads as an empty series until then (not a refusal)."""
    numbers = number_keys(run)
    if keys is None or not keys:
        return numbers
    kinds: dict[str, str] = run.manifest.get("schema") or {}
    running = run.manifest.get("state") == "running"
    for k in keys:
        if k not in numbers and not (running and k not in kinds):
            raise UsageError(
                f"key={k!r} is not a number key of run {run.path}; its number keys: "
                f"{', '.join(numbers) or 'none'}"
            )
    return list(dict.fromkeys(keys))


def _markers(run: StoredRun, table: pa.Table, column: str) -> list[ResumePoint]:
    """Each later attempt's first visible step, and the x the chart draws it at there."""
    hosts = {a.get("attempt"): a.get("host") for a in run.attempts}
    if len(hosts) <= 1:  # never resumed: no marker, and no second read of the segments
        return []
    found = []
    for attempt, step in sorted(run.attempt_starts().items()):
        if attempt <= 1:
            continue
        found.append(ResumePoint(attempt, step, _x_at(table, column, step), hosts.get(attempt)))
    return found


def _x_at(table: pa.Table, column: str, step: int) -> float | None:
    """The x of the first visible row at or after ``step`` that has one."""
    if column == "_step":
        return float(step)
    xs, steps = finite(table[column], table["_step"])
    later = np.flatnonzero(steps >= step)
    if not len(later):
        return None
    return float(xs[later[np.argmin(steps[later])]])


def _system_series(
    run: StoredRun,
    keys: Sequence[str] | None,
    column: str,
    width: int,
    xmin: float | None,
    xmax: float | None,
) -> RunSeries:
    table = run.history(list(keys) if keys else None, stream="system")
    sampled = [
        f.name
        for f in table.schema
        if not f.name.startswith("_")
        and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
    ]
    chosen = list(keys) if keys else sorted(sampled)
    if column not in table.column_names:  # no samples at all
        return RunSeries([Points(k, [], [], 0, False) for k in chosen], [])
    axis = Axis(table[column])
    series = [axis.downsample(k, table[k], width, xmin, xmax) for k in chosen]
    markers = []
    hosts = {a.get("attempt"): a.get("host") for a in run.attempts}
    if "_attempt" in table.column_names and table.num_rows:
        for attempt, at in sorted(minimum_by(table["_attempt"], table[column]).items()):
            if attempt > 1:
                markers.append(ResumePoint(attempt, None, at, hosts.get(attempt)))
    return RunSeries(series, markers)


def group_series(
    runs: Sequence[StoredRun],
    key: str,
    x: str = "step",
    width: int = 1000,
    xmin: float | None = None,
    xmax: float | None = None,
    read: History = read_history,
) -> GroupBands:
    """``key`` of many runs on one grid of ``width`` buckets: each run's mean per bucket, then
    across runs the mean, min, max, std and count. Buckets no run has are left out. And where
    each run's later attempts start: a grouped chart still shows the preemptions."""
    per_run: list[tuple[np.ndarray, np.ndarray]] = []
    resumes: list[tuple[str, ResumePoint]] = []
    for run in runs:
        column = check_axis(run, x, "history")
        if key not in number_keys(run):
            raise UsageError(
                f"key={key!r} is not a number key of run {run.path}; its number keys: "
                f"{', '.join(number_keys(run)) or 'none'}"
            )
        table = read(run, sorted({key, column}))
        per_run.append(in_range(*finite(table[column], table[key]), xmin, xmax))
        resumes += [(run.path, m) for m in _markers(run, table, column)]
    everything = np.concatenate([xs for xs, _ in per_run]) if per_run else np.empty(0)
    lo, hi = bounds(everything, xmin, xmax)
    means = np.full((len(per_run), width), np.nan)
    for i, (xs, ys) in enumerate(per_run):
        b = buckets(xs, lo, hi, width)
        counts = np.bincount(b, minlength=width)
        sums = np.bincount(b, weights=ys, minlength=width)
        np.divide(sums, counts, out=means[i], where=counts > 0)
    n = np.sum(~np.isnan(means), axis=0)
    present = np.flatnonzero(n)
    if not len(present):
        return GroupBands([], [], [], [], [], [], len(runs), resumes)
    kept = means[:, present]
    size = (hi - lo) / width if hi > lo else 0.0
    return GroupBands(
        x=[lo + (b + 0.5) * size if size else lo for b in present.tolist()],
        mean=np.nanmean(kept, axis=0).tolist(),
        min=np.nanmin(kept, axis=0).tolist(),
        max=np.nanmax(kept, axis=0).tolist(),
        std=np.nanstd(kept, axis=0).tolist(),  # population std: 0 where one run has points
        n=n[present].tolist(),
        runs=len(runs),
        attempts=resumes,
    )
