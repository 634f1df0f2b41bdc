"""Compaction: fewer, larger segments, across attempts and rewinds, with no visible row changed.

Why: a run resumed from checkpoints hundreds of times (preemptible jobs) lists segments of
every attempt; each ``history()`` opens every one of them and each commit rewrites the list.
Merging them makes a run resumed 100 times read and resume like one written once.

The plan (:func:`plan`, pure), the merge (:func:`execute`) and the check at commit
(:func:`still_valid`, :func:`swap`) live here in the store, so that verify, repair and sync
understand what compaction writes; the writer (``_run/flusher.py``) decides when, names the
files and commits.

What a merge writes, and why readers need no new rule
-----------------------------------------------------
Readers judge each listed segment by its *position* ``(attempt, seq)`` (docs/format.md): a
rewind hides, in every segment positioned before it, the rows above its step. A merge of the
consecutive segments ``p1 .. q`` (in position order, across attempts) writes

* a **visible** segment positioned at ``q``: every row of the parts that no rewind positioned
  inside the window (after the row's part, at or before ``q``) hides. Rewinds after ``q``,
  recorded already or later, apply to it as they applied to every part (each part is before
  them), so it holds the same visible rows as its parts, now and after any later rewind. Its
  steps are strictly increasing: they are the history as seen when ``q`` was the newest segment.
* a **hidden** segment, only when the inner rewinds hide rows: those rows, positioned at the
  first part that gave one. Each of them is above the bound of its own part, and a bound only
  falls as the position moves earlier, so the rule hides all of it: readers skip it without
  opening it, ``history(all_attempts=True)`` shows it. Hidden segments merge among themselves
  the same way, positioned at their first part: still hidden.

So the one rule (``manifest.visible_bound``), the DuckDB query of docs/format.md and localrun
readers of earlier versions see exactly the rows they saw before the merge; nothing is deleted
(hiding, not deleting, is the contract), and the replaced files are removed only after the
revision listing the merge is committed.

Each row of a merged segment keeps where it was logged, in the columns ``_attempt`` and
``_seq`` (the position of the flush that wrote it): ``all_attempts`` labels and orders rows as
before, and the footer's ``compaction`` record (position, parts, origins, rewinds) lets
``verify --repair`` tell which files a merge replaced even when every revision is lost.

Which segments (the policy)
---------------------------
Tiered, fanout F: the first run of F consecutive visible-history segments of one level becomes
one segment of the next level; then the same among hidden segments. Levels count over the whole
run, not per attempt, so 100 attempts of 10 flushes end in the same few segments as one attempt
of 1,000 flushes, and each row is rewritten about log_F(flushes) times. "The first run" (not
"the last") makes the result the same whenever the compactor gets to it: a merge sits at its
last part's position, before any newer segment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import arrays, atomic, segments
from . import manifest as mf
from .layout import HISTORY, inside, safe_dir, segment_name
from .records import Revision, SegmentEntry
from .safe_io import open_inside
from .segments import COMPACTION

ORIGIN = segments.ORIGIN
Position = tuple[int, int]
RewindKey = tuple[int, int, int]  # (attempt, seq, step)


class Stopped(Exception):
    """The writer asked the merge to stop (its attempt is ending)."""


def position(entry: SegmentEntry) -> Position:
    return (entry["attempt"], entry["seq"])


def level(entry: SegmentEntry) -> int:
    return int(entry.get("level", 0))


@dataclass(frozen=True)
class Job:
    """One merge: ``parts`` (consecutive in position order) become one segment of ``level``.

    ``rewinds``: the run's rewinds when planned; the commit re-checks them (:func:`still_valid`).
    ``splits``: a visible merge whose inner rewinds hide rows, so it writes a hidden segment too.
    """

    parts: tuple[SegmentEntry, ...]
    hidden: bool
    level: int
    rewinds: tuple[RewindKey, ...]
    splits: bool

    @property
    def outputs(self) -> int:
        """How many files the merge writes (the writer names them before it starts)."""
        return 2 if self.splits else 1


def rewind_keys(m: Revision) -> tuple[RewindKey, ...]:
    return tuple(sorted((r["attempt"], r["seq"], r["step"]) for r in m.get("rewinds", [])))


def is_hidden(entry: SegmentEntry, bound: int | None) -> bool:
    """Whether readers see no row of ``entry`` (its ``bound`` from ``manifest.visible_bounds``)."""
    return bool(entry.get("hidden")) or (bound is not None and entry["min_step"] > bound)


def plan(m: Revision, fanout: int) -> Job | None:
    """The next merge the run's state calls for, or None (see the module's policy)."""
    bound = mf.visible_bounds(m)
    live: list[SegmentEntry] = []
    dead: list[SegmentEntry] = []
    for e in sorted(m["segments"], key=position):
        (dead if is_hidden(e, bound(*position(e))) else live).append(e)
    rewinds = rewind_keys(m)
    for group, hidden in ((live, False), (dead, True)):
        window = _first_window(group, fanout)
        if window is None:
            continue
        splits = not hidden and any(
            b is not None and p["max_step"] > b
            for p, b in zip(window, inner_bounds(rewinds, window), strict=True)
        )
        return Job(tuple(window), hidden, level(window[0]) + 1, rewinds, splits)
    return None


def _first_window(entries: list[SegmentEntry], fanout: int) -> list[SegmentEntry] | None:
    """The first ``fanout`` consecutive entries of one level, or None."""
    start = 0
    for i, e in enumerate(entries):
        if i and level(e) != level(entries[i - 1]):
            start = i
        if i - start + 1 == fanout:
            return entries[start : i + 1]
    return None


def inner_bounds(rewinds: Iterable[RewindKey], parts: Iterable[SegmentEntry]) -> list[int | None]:
    """Per part, the lowest step of the rewinds after it and at or before the last part: the
    rows above it are hidden inside the window, so the merge moves them to a hidden segment."""
    parts = list(parts)
    last = position(parts[-1])
    rw = list(rewinds)
    out: list[int | None] = []
    for p in parts:
        steps = [n for a, s, n in rw if position(p) < (a, s) <= last]
        out.append(min(steps) if steps else None)
    return out


def still_valid(m: Revision, job: Job) -> bool:
    """Whether the merge planned on an older state may still replace its parts in ``m``.

    Every part must be listed as planned (a repair may have dropped one), and, for a visible
    merge, no rewind may have appeared at or before its position (it would hide rows the merge
    kept visible). Rewinds after the position are fine: they apply to the merge by the rule.
    """
    listed = {s["file"]: s for s in m["segments"]}
    if any(listed.get(p["file"]) != p for p in job.parts):
        return False
    if job.hidden:
        return True
    last = position(job.parts[-1])
    return [r for r in rewind_keys(m) if r[:2] <= last] == [r for r in job.rewinds if r[:2] <= last]


def swap(m: Revision, job: Job, outputs: list[SegmentEntry]) -> None:
    """The commit's change: the outputs listed in place of the parts."""
    gone = {p["file"] for p in job.parts}
    m["segments"] = [s for s in m["segments"] if s["file"] not in gone] + outputs


def execute(
    run_dir: Path,
    job: Job,
    names: list[Position],
    meta: dict[str, Any],
    stop: Callable[[], bool] = lambda: False,
) -> list[SegmentEntry]:
    """Write the merge's files, named ``names`` (``job.outputs`` of them, in the writing
    attempt's namespace), and return their entries, the visible one first.

    The merge streams: each part is read one row group at a time and written through one
    Parquet writer whose schema is unified up front from the parts' footers, so its memory is
    a row group or two (:data:`ROW_GROUP_ROWS`), not the merge (a second-level merge of a long
    run holds millions of rows). A split merge reads the parts that give hidden rows twice.

    The hidden file is written before the visible one, so a visible merged file on disk always
    has its partner (what a rebuild from footers relies on). On any failure, or when ``stop()``
    says so between row groups, the files written so far are removed (they were never listed)
    and the error (or :class:`Stopped`) is raised.
    """
    bounds = [None] * len(job.parts) if job.hidden else inner_bounds(job.rewinds, job.parts)
    schemas, origins = [], []
    for part in job.parts:
        if stop():
            raise Stopped
        schema = _footer_schema(run_dir, part["file"])
        origins.extend(_origins_of(schema, part))
        schemas.append(_origin_schema(schema))
    schema = pa.unify_schemas(schemas, promote_options="default")
    record: dict[str, Any] = {
        "parts": [p["file"] for p in job.parts],
        "origins": _ranges(origins),
        "rewinds": [list(r) for r in job.rewinds],
    }
    merge = _Merge(run_dir, job.parts, schema, meta, stop)
    written: list[str] = []
    try:
        if job.hidden:
            first = position(job.parts[0])
            everything = [(p, None, True) for p in job.parts]
            return [merge.write(names[0], everything, first, job.level, True, record, written)]
        split: SegmentEntry | None = None
        hiding = [
            (p, b, False)
            for p, b in zip(job.parts, bounds, strict=True)
            if b is not None and p["max_step"] > b
        ]
        if job.splits and hiding:
            rec = {**record, "partner": _file(names[0])}
            split = merge.write(names[1], hiding, position(hiding[0][0]), 0, True, rec, written)
        rec = {**record, "partner": split["file"] if split else None}
        last = position(job.parts[-1])
        keeping = [(p, b, True) for p, b in zip(job.parts, bounds, strict=True)]
        out = [merge.write(names[0], keeping, last, job.level, False, rec, written)]
        return [*out, split] if split else out
    except BaseException:
        for rel in written:
            inside(run_dir, rel, "segment").unlink(missing_ok=True)
        raise


def _file(name: Position) -> str:
    return f"{HISTORY}/{segment_name(*name)}"


# Rows a merge buffers before it writes them as one row group, or this many bytes of Arrow
# memory (wide rows). A merge holds about two row groups at once (one being written, the next
# being read and decoded), and that is the peak memory of a long run's writer: 65,536 rows of
# 10 floats (7 MB) instead of 131,072, and no third group held (see _row_groups), took a
# 1e7-step loop's Arrow peak from 45-52 MB to 18-25 MB and its peak RSS from +243 to +203 MiB
# (4 runs each, docs/performance.md). Readers do not notice: a row group of 65,536 rows is
# still far past the size where per-group costs matter.
ROW_GROUP_ROWS = 1 << 16
ROW_GROUP_BYTES = 32 << 20

# (part, bound, keep): the part's rows at or below ``bound`` when ``keep``, above it when not
# (no bound: every row).
Source = tuple[SegmentEntry, int | None, bool]


class _ReadFailed(Exception):
    """A part could not be read during a write: carried through ``atomic.publish_file`` (which
    would report an ``OSError`` as a failed *write*) and raised as it was."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Merge:
    """Streams the rows of parts into merged files of one unified schema."""

    def __init__(
        self,
        run_dir: Path,
        parts: tuple[SegmentEntry, ...],
        schema: pa.Schema,
        meta: dict[str, Any],
        stop: Callable[[], bool],
    ) -> None:
        self.run_dir, self.parts, self.schema = run_dir, parts, schema
        self.meta, self.stop = meta, stop

    def write(
        self,
        name: Position,
        sources: Sequence[Source],
        pos: Position,
        lvl: int,
        hidden: bool,
        record: dict[str, Any],
        written: list[str],
    ) -> SegmentEntry:
        """One merged file of ``sources``' rows, its footer saying what it is; its entry sits
        at ``pos``."""
        if self.stop():
            raise Stopped
        rec = {**record, "attempt": pos[0], "seq": pos[1], "level": lvl, "hidden": hidden}
        footer = json.dumps({**self.meta, COMPACTION: rec}, default=str).encode()
        schema = self.schema.with_metadata({segments.META_KEY: footer})
        stats = _Stats()

        def produce(path: Path) -> None:
            options = segments.write_options(schema)
            with pq.ParquetWriter(path, schema, **options) as writer:
                for table in _row_groups(self._pieces(sources)):
                    stats.add(table)
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                    del table  # not held while the next group is read (see _row_groups)
            if stats.rows == 0:
                raise ValueError("a segment holds at least one row; the merge found none")

        try:
            hist = safe_dir(self.run_dir, HISTORY)
        except OSError as exc:  # the run folder vanished, the disk is read-only or full
            raise atomic.storage_error(exc, "create the folder", self.run_dir / HISTORY) from exc
        final = hist / segment_name(*name)
        try:
            atomic.publish_file(final, produce)
        except _ReadFailed as failed:
            raise failed.error from None
        rel = f"{HISTORY}/{final.name}"
        written.append(rel)
        entry: SegmentEntry = {
            "file": rel,
            "attempt": pos[0],
            "seq": pos[1],
            "rows": stats.rows,
            "min_step": stats.lo,
            "max_step": stats.hi,
            "bytes": final.stat().st_size,
            "level": lvl,
        }
        if hidden:
            entry["hidden"] = True
        return entry

    def _pieces(self, sources: Sequence[Source]) -> Iterator[pa.Table]:
        """Each source's rows, a row group at a time, in the merge's schema."""
        for part, bound, keep in sources:
            for table in _read_groups(self.run_dir, part, self.stop):
                table = _with_origin(table, part)
                if bound is not None and part["max_step"] > bound:
                    mask = pc.less_equal(table.column("_step"), arrays.int64_scalar(bound))
                    table = table.filter(mask if keep else pc.invert(mask))
                if table.num_rows:
                    yield _conform(table, self.schema)
                del table  # see _row_groups


class _Stats:
    """Rows and step range of what a merge wrote."""

    def __init__(self) -> None:
        self.rows = 0
        self.lo = 0
        self.hi = 0

    def add(self, table: pa.Table) -> None:
        steps = pc.min_max(table.column("_step"))
        lo, hi = int(steps["min"].as_py()), int(steps["max"].as_py())
        self.lo, self.hi = (lo, hi) if not self.rows else (min(self.lo, lo), max(self.hi, hi))
        self.rows += table.num_rows


def _row_groups(pieces: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The pieces regrouped into tables of about :data:`ROW_GROUP_ROWS` rows (many small
    flushes make one row group: compression and reads want them large; memory wants them
    bounded).

    Every generator of the chain, and the writer's loop, drops its reference to a group once
    it is handed on (``del``): a loop variable would otherwise keep the last group alive while
    the next one is read, a third row group in memory at the merge's peak."""
    held: list[pa.Table] = []
    rows = nbytes = 0
    for table in pieces:
        held.append(table)
        rows += table.num_rows
        nbytes += table.nbytes
        del table
        if rows >= ROW_GROUP_ROWS or nbytes >= ROW_GROUP_BYTES:
            group, held, rows, nbytes = pa.concat_tables(held), [], 0, 0
            yield group
            del group
    if held:
        yield pa.concat_tables(held)


def _read_groups(run_dir: Path, part: SegmentEntry, stop: Callable[[], bool]) -> Iterator[pa.Table]:
    """A part's rows, one row group at a time (checking ``stop`` before each)."""
    rel = part["file"]
    try:
        with open_inside(run_dir, rel, "segment") as f:
            try:
                pf = segments.parquet_file(f)
                for g in range(pf.num_row_groups):
                    if stop():
                        raise Stopped
                    yield pf.read_row_group(g, use_threads=False)
            except segments.DAMAGE_ERRORS as exc:
                raise segments.damaged(run_dir, str(rel), exc) from exc
    except Stopped:
        raise
    except Exception as exc:  # raised as it is once out of publish_file
        raise _ReadFailed(exc) from exc


def _footer_schema(run_dir: Path, rel: str) -> pa.Schema:
    """A part's Arrow schema and footer metadata, from its footer alone."""
    with open_inside(run_dir, rel, "segment") as f:
        try:
            return pq.read_schema(f)
        except segments.DAMAGE_ERRORS as exc:
            raise segments.damaged(run_dir, rel, exc) from exc


def _origin_schema(schema: pa.Schema) -> pa.Schema:
    """The schema of a part's rows once :func:`_with_origin` added their origin columns."""
    schema = schema.remove_metadata()
    for name in ORIGIN:
        if name not in schema.names:
            schema = schema.append(pa.field(name, pa.int64()))
    return schema


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in the merge's ``schema``: its columns cast (an all-null column of a part
    takes the key's kind), nulls for the keys it lacks."""
    n = table.num_rows
    have = set(table.column_names)
    arrays = [
        table.column(f.name).cast(f.type) if f.name in have else pa.nulls(n, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _with_origin(table: pa.Table, part: SegmentEntry) -> pa.Table:
    """The part's rows with their origin columns (a flush's rows all come from its position)."""
    table = table.replace_schema_metadata(None)
    if ORIGIN[0] in table.column_names:
        return table
    n = table.num_rows
    for name, value in zip(ORIGIN, position(part), strict=True):
        table = table.append_column(name, arrays.repeat_int64(value, n))
    return table


def _origins_of(schema: pa.Schema, part: SegmentEntry) -> list[list[int]]:
    raw = (schema.metadata or {}).get(segments.META_KEY)
    rec = segments.compaction_record(json.loads(raw) if raw else {})
    if rec is None:
        return [[part["attempt"], part["seq"], part["seq"]]]
    return [list(r) for r in rec.get("origins", [])]


def _ranges(origins: list[list[int]]) -> list[list[int]]:
    """``[attempt, first seq, last seq]`` ranges, merged where they touch."""
    out: list[list[int]] = []
    for a, lo, hi in sorted(origins):
        if out and out[-1][0] == a and lo <= out[-1][2] + 1:
            out[-1][2] = max(out[-1][2], hi)
        else:
            out.append([a, lo, hi])
    return out


def covers(origins: list[list[int]], pos: Position) -> bool:
    """Whether a merge with these origins holds the rows of the flush at ``pos``."""
    return any(a == pos[0] and lo <= pos[1] <= hi for a, lo, hi in origins)
