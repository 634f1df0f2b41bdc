"""A run's metrics as chart series, downsampled where they are read (DESIGN §7).

A chart is a few hundred to a few thousand pixels wide; a run logs up to millions of steps.
Sending every point makes the browser, not the data, the limit (the reason people call other
dashboards slow), so a series comes back with at most ``2 * width`` points: the x range is cut
into ``width`` equal buckets and each non-empty bucket keeps its lowest and its highest point,
each at its own x. A spike is the highest point of its bucket, so it survives any zoom level;
a series that already fits comes back whole.

Pure pyarrow compute (no numpy, no Python loop over rows): a million rows take a few hash
aggregations. Rows hidden by rewinds never reach here (``StoredRun.history`` leaves them out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from ._query import NUMBER
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


def finite(x: Column, y: Column) -> tuple[pa.Array, pa.Array]:
    """``x`` and ``y`` as float64 without the rows where either is null, NaN or infinite (a
    chart cannot place them, and JSON cannot carry NaN)."""
    xs = _flat(x).cast(pa.float64())
    ys = _flat(y).cast(pa.float64())
    keep = pc.fill_null(pc.and_(pc.is_finite(xs), pc.is_finite(ys)), False)
    return pc.filter(xs, keep), pc.filter(ys, keep)


def in_range(
    x: pa.Array, y: pa.Array, xmin: float | None, xmax: float | None
) -> tuple[pa.Array, pa.Array]:
    """The points with ``xmin <= x <= xmax`` (either bound may be open)."""
    keep: Any = None
    if xmin is not None:
        keep = pc.greater_equal(x, xmin)
    if xmax is not None:
        upper = pc.less_equal(x, xmax)
        keep = upper if keep is None else pc.and_(keep, upper)
    if keep is None:
        return x, y
    return pc.filter(x, keep), pc.filter(y, keep)


def bounds(x: pa.Array, xmin: float | None, xmax: float | None) -> tuple[float, float]:
    """The grid's range: the given bounds, else the data's own (0, 0 for no data)."""
    lo = xmin
    hi = xmax
    if lo is None or hi is None:
        found = pc.min_max(x).as_py() if len(x) else {"min": 0.0, "max": 0.0}
        lo = float(found["min"]) if lo is None else lo
        hi = float(found["max"]) if hi is None else hi
    return float(lo), float(hi)


def buckets(x: pa.Array, lo: float, hi: float, width: int) -> pa.Array:
    """Each point's bucket, ``0 .. width - 1``, of ``width`` equal buckets over ``[lo, hi]``
    (``hi`` itself falls in the last bucket, points outside in the nearest)."""
    if hi <= lo:
        return pc.multiply(pc.cast(x, pa.int64(), safe=False), 0)
    scaled = pc.floor(pc.multiply(pc.subtract(x, lo), width / (hi - lo)))
    index = pc.cast(scaled, pa.int64(), safe=False)
    return pc.min_element_wise(pc.max_element_wise(index, 0), width - 1)


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
    """
    xs, ys = in_range(*finite(x, y), xmin, xmax)
    count = len(xs)
    if count <= 2 * width:
        table = pa.table({"x": xs, "y": ys}).sort_by([("x", "ascending")])
        return Points(key, table["x"].to_pylist(), table["y"].to_pylist(), count, False)
    lo, hi = bounds(xs, xmin, xmax)
    table = pa.table({"b": buckets(xs, lo, hi, width), "x": xs, "y": ys})
    ends = table.group_by("b").aggregate([("y", "min"), ("y", "max")])
    joined = table.join(ends, "b")
    lows = _first_at(joined, pc.equal(joined["y"], joined["y_min"]))
    highs = _first_at(joined, pc.equal(joined["y"], joined["y_max"]))
    # A bucket whose min and max are the same point (one point, or a flat run) gives it once.
    points = pa.concat_tables([lows, highs]).group_by(["b", "x", "y"]).aggregate([])
    points = points.sort_by([("x", "ascending"), ("y", "ascending")])
    return Points(key, points["x"].to_pylist(), points["y"].to_pylist(), count, True)


def _first_at(table: pa.Table, mask: Column) -> pa.Table:
    """Per bucket, the point with the lowest x among the rows ``mask`` selects."""
    chosen = table.filter(mask).select(["b", "x", "y"])
    first = chosen.group_by(["b", "y"]).aggregate([("x", "min")])
    return first.rename_columns(["b", "y", "x"]).select(["b", "x", "y"])


def _flat(column: Column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


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


def run_series(
    run: StoredRun,
    keys: Sequence[str] | None,
    x: str = "step",
    width: int = 1000,
    xmin: float | None = None,
    xmax: float | None = None,
    stream: str = "history",
) -> RunSeries:
    """The run's ``keys`` (every number key by default) against ``x``, downsampled to
    ``width`` buckets over ``[xmin, xmax]``, and where each attempt after the first starts."""
    column = check_axis(run, x, stream)
    if stream == "system":
        return _system_series(run, keys, column, width, xmin, xmax)
    chosen = _history_keys(run, keys)
    wanted = sorted({*chosen, column} - set(X_COLUMNS.values()))
    table = run.history(wanted)
    series = [downsample(k, table[column], table[k], width, xmin, xmax) for k in chosen]
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
    keep = pc.greater_equal(steps, step)
    xs, steps = pc.filter(xs, keep), pc.filter(steps, keep)
    if not len(steps):
        return None
    first = pc.index(steps, pc.min(steps)).as_py()
    return float(xs[first].as_py())


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
    series = [downsample(k, table[column], table[k], width, xmin, xmax) for k in chosen]
    markers = []
    hosts = {a.get("attempt"): a.get("host") for a in run.attempts}
    if "_attempt" in table.column_names and table.num_rows:
        firsts = table.group_by("_attempt").aggregate([(column, "min")])
        for attempt, at in sorted(
            zip(firsts["_attempt"].to_pylist(), firsts[f"{column}_min"].to_pylist(), strict=True)
        ):
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
) -> GroupBands:
    """``key`` of many runs on one grid of ``width`` buckets: each run's mean per bucket, then
    across runs the mean, min, max, std and count. Buckets no run has are left out."""
    per_run: list[tuple[pa.Array, pa.Array]] = []
    for run in runs:
        column = check_axis(run, x, "history")
        if key not in number_keys(run):
            raise UsageError(
                f"key={key!r} is not a number key of run {run.path}; its number keys: "
                f"{', '.join(number_keys(run)) or 'none'}"
            )
        table = run.history(sorted({key, column} - set(X_COLUMNS.values())))
        per_run.append(in_range(*finite(table[column], table[key]), xmin, xmax))
    everything = (
        pa.concat_arrays([xs for xs, _ in per_run]) if per_run else pa.array([], pa.float64())
    )
    lo, hi = bounds(everything, xmin, xmax)
    means = []
    for xs, ys in per_run:
        if len(xs):
            t = pa.table({"b": buckets(xs, lo, hi, width), "y": ys})
            means.append(t.group_by("b").aggregate([("y", "mean")]))
    if not means:
        return GroupBands([], [], [], [], [], [], len(runs))
    stats = (
        pa.concat_tables(means)
        .group_by("b")
        .aggregate(
            [
                ("y_mean", "mean"),
                ("y_mean", "min"),
                ("y_mean", "max"),
                ("y_mean", "stddev"),
                ("y_mean", "count"),
            ]
        )
        .sort_by("b")
    )
    size = (hi - lo) / width if hi > lo else 0.0
    centres = [lo + (b + 0.5) * size if size else lo for b in stats["b"].to_pylist()]
    return GroupBands(
        x=centres,
        mean=stats["y_mean_mean"].to_pylist(),
        min=stats["y_mean_min"].to_pylist(),
        max=stats["y_mean_max"].to_pylist(),
        std=[0.0 if s is None or math.isnan(s) else s for s in stats["y_mean_stddev"].to_pylist()],
        n=stats["y_mean_count"].to_pylist(),
        runs=len(runs),
    )
