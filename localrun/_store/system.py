"""The system stream: samples keyed by time, in immutable ``system/`` segments (docs/format.md).

Apart from ``history/`` because samples have no step: they must never take one of the user's
steps, and a rewind (which is about steps) does not hide them. A sample is written at most a
minute after it is taken (and at the end of an attempt); when an attempt has
:data:`MERGE_AT` segments they become one, so a run of days keeps a short list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import arrays, atomic
from .layout import inside, safe_dir, segment_name
from .records import SystemEntry
from .segments import parquet_file, read_parquet, write_options

SYSTEM = "system"
MERGE_AT = 16
TIME_FIELDS = (pa.field("_timestamp", pa.float64()), pa.field("_runtime", pa.float64()))


def to_table(samples: list[tuple[float, float, dict[str, float]]]) -> pa.Table:
    """``(timestamp, runtime, values)`` samples as one table: the time columns, then every key
    (float64; null where a sample lacks it)."""
    keys = sorted({k for _, _, values in samples for k in values})
    columns: dict[str, pa.Array] = {
        "_timestamp": arrays.float64s([s[0] for s in samples]),
        "_runtime": arrays.float64s([s[1] for s in samples]),
    }
    for k in keys:
        column = arrays.optional_float64s([s[2].get(k) for s in samples])
        columns[k] = pa.nulls(len(samples), arrays.FLOAT64) if column is None else column
    return pa.table(columns)


def write(run_dir: Path, attempt: int, seq: int, table: pa.Table, level: int = 0) -> SystemEntry:
    """Publish ``table`` as ``system/<attempt>-<seq>.parquet``; ``FileExistsError`` if taken."""
    try:
        folder = safe_dir(run_dir, SYSTEM)
    except OSError as exc:
        raise atomic.storage_error(exc, "create the folder", run_dir / SYSTEM) from exc
    name = segment_name(attempt, seq)
    meta = {"localrun": json.dumps({"stream": SYSTEM, "attempt": attempt})}
    table = table.replace_schema_metadata(meta)
    options = write_options(table.schema)
    atomic.publish_file(folder / name, lambda p: pq.write_table(table, p, **options))
    times = table.column("_timestamp")
    return {
        "file": f"{SYSTEM}/{name}",
        "attempt": attempt,
        "seq": seq,
        "rows": table.num_rows,
        "min_time": times[0].as_py(),
        "max_time": times[-1].as_py(),
        "bytes": (folder / name).stat().st_size,
        "level": level,
    }


def read(run_dir: Path, entry: SystemEntry) -> pa.Table:
    """One segment's samples. Through ``ParquetFile`` without threads, as every segment read
    (``segments.read_rows``): Arrow's thread pools abort the interpreter at exit now and then."""
    with inside(run_dir, entry["file"], "system segment").open("rb") as f:
        return read_parquet(f).replace_schema_metadata(None)


def keys(run_dir: Path, entry: SystemEntry) -> list[str]:
    """The sampled keys of one segment, from its footer alone (no row is read)."""
    with inside(run_dir, entry["file"], "system segment").open("rb") as f:
        names = parquet_file(f).schema_arrow.names
    return [n for n in names if not n.startswith("_")]


def merge(
    run_dir: Path, entries: list[SystemEntry], new: pa.Table, attempt: int, seq: int
) -> SystemEntry:
    """The rows of ``entries`` (this attempt's) and then ``new`` as one segment; the caller
    commits it in their place, then removes their files."""
    tables = [read(run_dir, e) for e in entries]
    merged = pa.concat_tables([*tables, new], promote_options="default")
    return write(run_dir, attempt, seq, merged, level=1)
