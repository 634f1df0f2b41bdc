"""History segments: immutable Parquet files of step rows, one per flush of one attempt.

Each segment carries the run identity and config in its Parquet key-value metadata, so a lost
or corrupt manifest can be rebuilt from the segments alone (``localrun verify --repair``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CorruptRunError
from . import arrays, atomic
from .layout import HISTORY, parse_segment_name, run_label, safe_dir, segment_name
from .records import SegmentEntry
from .safe_io import open_inside, open_regular

META_KEY = b"localrun"
COMPACTION = "compaction"  # the record a merged segment carries in its footer metadata
ORIGIN = ("_attempt", "_seq")  # per-row origin columns of a merged segment
# What reading a damaged segment raises, whatever pyarrow makes of it (ArrowInvalid is a
# ValueError, ArrowIOError an OSError); a missing file is FileNotFoundError, caught before.
DAMAGE_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError)


def damaged(run_dir: Path, rel: str, why: object) -> CorruptRunError:
    """The error for a listed segment that cannot be read as written."""
    return CorruptRunError(
        f"run {run_label(run_dir)}: segment {rel} is damaged ({why}); run `localrun verify "
        f"--repair {run_label(run_dir)}` to set it aside (its rows are lost, the others read)"
    )


def parquet_file(f: BinaryIO | pa.NativeFile) -> pq.ParquetFile:
    """A Parquet file to read that starts none of Arrow's thread pools (read it with
    ``use_threads=False`` too).

    Why: a process in which Arrow started a thread pool aborts at exit now and then,
    "terminate called without an active exception" (apache/arrow#34314, open; seen here in the
    demo's process, a docs page's, a resumed job's), and a training job that exits with
    SIGABRT is a failed job to its scheduler. pyarrow pre-buffers a file's column chunks on its
    I/O pool by default, and ``use_threads`` decodes on its CPU pool; a segment is a few
    columns, read in its owner's thread just as fast.
    """
    return pq.ParquetFile(f, pre_buffer=False)


def read_parquet(f: BinaryIO | pa.NativeFile, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (or ``columns`` of it) read as :func:`parquet_file` says: no pool."""
    return parquet_file(f).read(columns=columns, use_threads=False)


def read_table(run_dir: Path, rel: object, columns: list[str] | None = None) -> pa.Table:
    """The rows of segment ``rel`` (a path from the manifest), read without leaving the run.

    Raises :class:`CorruptRunError` for a path out of the run, a link, a FIFO or a damaged
    file; ``FileNotFoundError`` when it is missing.
    """
    with open_inside(run_dir, rel, "segment") as f:
        try:
            return read_parquet(f, columns)
        except DAMAGE_ERRORS as exc:
            raise damaged(run_dir, str(rel), exc) from exc


def problem(run_dir: Path, entry: SegmentEntry) -> str | None:
    """What is wrong with a listed segment, or None: for ``localrun verify``.

    Footer only (O(1) per segment): the file must be a readable segment with a ``_step``
    column and as many rows as the manifest says.
    """
    rel = entry.get("file")
    try:
        with open_inside(run_dir, rel, "segment") as f:
            md = pq.read_metadata(f)
            if "_step" not in md.schema.names:
                return f"segment {rel} has no _step column"
            if md.num_rows != entry.get("rows"):
                return (
                    f"segment {rel} holds {md.num_rows} rows, the manifest says {entry.get('rows')}"
                )
    except FileNotFoundError:
        return f"listed segment {rel} is missing: its rows are lost"
    except CorruptRunError as exc:
        return str(exc)
    except DAMAGE_ERRORS as exc:
        return f"segment {rel} is damaged ({exc})"
    return None


def write(
    run_dir: Path, attempt: int, seq: int, table: pa.Table, meta: dict[str, Any]
) -> SegmentEntry:
    """Publish ``table`` as segment ``(attempt, seq)`` and return its manifest entry.

    Raises ``FileExistsError`` rather than overwrite a segment (a stale writer's late flush).
    """
    if table.num_rows == 0:
        raise ValueError("a segment holds at least one row; skip an empty batch")
    try:
        hist = safe_dir(run_dir, HISTORY)
    except OSError as exc:  # the run folder vanished, the disk is read-only or full
        raise atomic.storage_error(exc, "create the folder", run_dir / HISTORY) from exc
    name = segment_name(attempt, seq)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    options = write_options(table.schema)
    atomic.publish_file(hist / name, lambda p: pq.write_table(table, p, **options))
    steps = table.column("_step")
    return {
        "file": f"{HISTORY}/{name}",
        "attempt": attempt,
        "seq": seq,
        "rows": table.num_rows,
        "min_step": steps[0].as_py(),
        "max_step": steps[-1].as_py(),
        "bytes": (hist / name).stat().st_size,
    }


def write_options(schema: pa.Schema) -> dict[str, Any]:
    """How each column kind is encoded (docs/format.md#encoding); any Parquet reader reads it.

    zstd everywhere. Floats without a dictionary (a metric rarely repeats a value exactly, so
    the dictionary only costs time and bytes) and in BYTE_STREAM_SPLIT, which puts the bytes of
    equal rank together: exponents and high mantissa bytes of a curve then compress well, on
    noisy and on smooth curves alike. ``_step`` counts up by one: DELTA_BINARY_PACKED stores it
    in a few bits a row. Strings keep their dictionary (labels and phases repeat). Segments
    written before (snappy, dictionaries everywhere) read the same: the encoding is per file.
    """
    encoding: dict[str, str] = {}
    dictionary: list[str] = []
    for field in schema:
        t, path = field.type, field.name
        if pa.types.is_list(t):  # the leaf column of a list (pyarrow's compliant nested names)
            t, path = t.value_type, f"{path}.list.element"
        if pa.types.is_floating(t):
            encoding[path] = "BYTE_STREAM_SPLIT"
        elif path == "_step" and pa.types.is_int64(t):
            encoding[path] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(t):
            dictionary.append(path)
    return {
        "compression": "zstd",
        "use_dictionary": dictionary,
        "column_encoding": encoding,
    }


def entry_from_footer(run_dir: Path, rel: str) -> SegmentEntry:
    """Rebuild a manifest entry from a segment's footer alone (O(1) in the run's length).

    A merged segment's position, level and hiddenness come from its footer's ``compaction``
    record (its name is in the namespace of the attempt that merged it, not its position).
    Raises on a file that is not a complete, readable segment.
    """
    path = run_dir / rel
    parsed = parse_segment_name(path.name)
    if parsed is None:
        raise ValueError(f"{path.name} is not a segment name")
    with open_inside(run_dir, rel, "segment") as f:
        md = pq.read_metadata(f)
        size = os.fstat(f.fileno()).st_size
    idx = md.schema.names.index("_step")
    lo: int | None = None
    hi: int | None = None
    for g in range(md.num_row_groups):
        st = md.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            raise ValueError(f"{path.name} has no _step statistics")
        lo = st.min if lo is None else min(lo, st.min)
        hi = st.max if hi is None else max(hi, st.max)
    if md.num_rows == 0 or lo is None or hi is None:
        raise ValueError(f"{path.name} has no rows")
    entry: SegmentEntry = {
        "file": rel,
        "attempt": parsed[0],
        "seq": parsed[1],
        "rows": md.num_rows,
        "min_step": int(lo),
        "max_step": int(hi),
        "bytes": size,
    }
    raw = (md.metadata or {}).get(META_KEY)
    rec = compaction_record(json.loads(raw)) if raw else None
    if rec is not None:
        entry["attempt"], entry["seq"] = int(rec["attempt"]), int(rec["seq"])
        entry["level"] = int(rec.get("level", 0))
        if rec.get("hidden"):
            entry["hidden"] = True
    return entry


def compaction_record(meta: object) -> dict[str, Any] | None:
    """The ``compaction`` record of a segment's footer metadata, or None for a flush's segment.

    It says what the merged file is (position, level, hidden), which files it replaced
    (``parts``), which flushes' rows it holds (``origins``: ``[attempt, first seq, last seq]``),
    its ``partner`` (the other file of the same merge) and the rewinds it was made under.
    """
    rec = meta.get(COMPACTION) if isinstance(meta, dict) else None
    if not isinstance(rec, dict):
        return None
    if not all(
        isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool) for k in ("attempt", "seq")
    ):
        raise ValueError("its compaction record has no position")
    return rec


def footer_meta(path: Path) -> dict[str, Any]:
    """The localrun metadata stored in a segment's footer (run identity, config)."""
    with open_regular(path) as f:
        kv = pq.read_schema(f).metadata or {}
    raw = kv.get(META_KEY)
    return json.loads(raw) if raw else {}


def read_rows(f: BinaryIO, seg: SegmentEntry, bound: int | None, schema: pa.Schema) -> pa.Table:
    """The rows of an open listed segment in the run's ``schema`` (what ``history()`` reads).

    Rows above ``bound`` (a rewind) are left out. ``_attempt`` and ``_seq`` in ``schema`` are
    where each row was logged: a merged segment's columns, else the flush's position. A file
    that is not what the manifest lists (no ``_step``, other rows, a column of another kind)
    raises ``ValueError``; damaged Parquet raises whatever pyarrow does: the caller turns
    :data:`DAMAGE_ERRORS` into :func:`damaged`.
    """
    pf = parquet_file(f)
    types = {field.name: field.type for field in pf.schema_arrow}
    if "_step" not in types:
        raise ValueError("it has no _step column")
    if pf.metadata.num_rows != seg.get("rows", pf.metadata.num_rows):
        raise ValueError(f"it holds {pf.metadata.num_rows} rows, the manifest says {seg['rows']}")
    for field in schema:
        have = types.get(field.name)
        if have is not None and not _same_type(have, field.type):
            raise ValueError(f"its column {field.name!r} is {have}, the run's is {field.type}")
    table = pf.read(columns=[n for n in schema.names if n in types], use_threads=False)
    if bound is not None and seg["max_step"] > bound:
        table = table.filter(pc.less_equal(table.column("_step"), arrays.int64_scalar(bound)))
    n = table.num_rows
    columns = []
    for field in schema:
        if field.name in ORIGIN and field.name not in types:
            # A flush's rows all come from its position; a merged segment has them per row.
            value = seg["attempt"] if field.name == "_attempt" else seg["seq"]
            columns.append(arrays.repeat_int64(value, n))
        elif field.name in types:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _same_type(have: pa.DataType, want: pa.DataType) -> bool:
    """A segment column fits the run's schema: the same type (list field names aside), or all
    nulls."""
    if have == want or pa.types.is_null(have):
        return True
    return bool(
        pa.types.is_list(have) and pa.types.is_list(want) and have.value_type == want.value_type
    )
