"""History segments: immutable Parquet files of step rows, one per flush of one attempt.

Each segment carries the run identity and config in its Parquet key-value metadata, so a lost
or corrupt manifest can be rebuilt from the segments alone (``localrun verify --repair``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import atomic
from .layout import HISTORY, parse_segment_name, segment_name

META_KEY = b"localrun"


def write(
    run_dir: Path, attempt: int, seq: int, table: pa.Table, meta: dict[str, Any]
) -> dict[str, Any]:
    """Publish ``table`` as segment ``(attempt, seq)`` and return its manifest entry.

    Raises ``FileExistsError`` rather than overwrite a segment (a stale writer's late flush).
    """
    hist = run_dir / HISTORY
    hist.mkdir(exist_ok=True)
    name = segment_name(attempt, seq)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    atomic.publish_file(hist / name, lambda p: pq.write_table(table, p))
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


def merge(
    run_dir: Path,
    entries: list[dict[str, Any]],
    attempt: int,
    seq: int,
    level: int,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write the rows of ``entries`` (consecutive segments of one attempt) as one segment.

    Compaction: it keeps the manifest short for runs that flush every few seconds for days.
    The caller commits the new entry in place of the old ones, then removes the old files.
    """
    tables = [pq.read_table(run_dir / e["file"]) for e in entries]
    merged = pa.concat_tables(
        [t.replace_schema_metadata(None) for t in tables], promote_options="default"
    )
    entry = write(run_dir, attempt, seq, merged, meta)
    entry["level"] = level
    return entry


def entry_from_footer(run_dir: Path, rel: str) -> dict[str, Any]:
    """Rebuild a manifest entry from a segment's footer alone (O(1) in the run's length).

    Raises on a file that is not a complete, readable segment.
    """
    path = run_dir / rel
    parsed = parse_segment_name(path.name)
    if parsed is None:
        raise ValueError(f"{path.name} is not a segment name")
    md = pq.read_metadata(path)
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
    return {
        "file": rel,
        "attempt": parsed[0],
        "seq": parsed[1],
        "rows": md.num_rows,
        "min_step": int(lo),
        "max_step": int(hi),
        "bytes": path.stat().st_size,
    }


def footer_meta(path: Path) -> dict[str, Any]:
    """The localrun metadata stored in a segment's footer (run identity, config)."""
    kv = pq.read_schema(path).metadata or {}
    raw = kv.get(META_KEY)
    return json.loads(raw) if raw else {}
