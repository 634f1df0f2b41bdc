"""Segments are encoded per column kind (docs/format.md#encoding), and old segments still read."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun


def _segments(root: Path) -> list[Path]:
    return sorted((root / "p" / "r" / "history").glob("*.parquet"))


def _encodings(path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    md = pq.read_metadata(path)
    rg = md.row_group(0)
    out = {}
    for i in range(md.num_columns):
        col = rg.column(i)
        out[col.path_in_schema] = (col.compression, col.encodings)
    return out


def test_each_column_kind_gets_its_encoding(root: Path) -> None:
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(100):
            run.log({"loss": 1.0 / (i + 1), "phase": "train" if i % 2 else "eval"})
        run.log({"hist": [0.5, 1.5], "tags": ["a", "b"]})
    (seg,) = _segments(root)
    enc = _encodings(seg)
    assert {c for c, _ in enc.values()} == {"ZSTD"}
    for floats in ("loss", "_timestamp", "_runtime", "hist.list.element"):
        assert "BYTE_STREAM_SPLIT" in enc[floats][1], (floats, enc[floats])
        assert "RLE_DICTIONARY" not in enc[floats][1] and "PLAIN_DICTIONARY" not in enc[floats][1]
    assert "DELTA_BINARY_PACKED" in enc["_step"][1]
    for strings in ("phase", "tags.list.element"):
        assert "RLE_DICTIONARY" in enc[strings][1], (strings, enc[strings])


def test_segments_are_smaller_than_with_the_old_settings(root: Path) -> None:
    """What the encodings are for: a noisy and a smooth curve take fewer bytes than snappy with
    dictionaries (the settings of earlier versions) gave the same rows."""
    rnd = random.Random(0)
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(5000):
            run.log({"noisy": rnd.gauss(0.0, 1.0), "smooth": math.exp(-i / 1000.0)})
    (seg,) = _segments(root)
    table = pq.read_table(seg)
    old = root / "old.parquet"
    pq.write_table(table, old)  # pyarrow's defaults: snappy, dictionaries: what segments were
    assert seg.stat().st_size < 0.8 * old.stat().st_size


@pytest.mark.parametrize("curve", ["noisy", "smooth"])
def test_segments_take_at_most_a_fifth_more_bytes_than_one_zstd_file(
    root: Path, curve: str
) -> None:
    """The target of docs/performance.md#segment-encoding: a run's segments, as written and
    compacted, within 1.2x the bytes of one zstd file of the same table (the better of plain
    and byte_stream_split floats), on noisy values and on smooth ones. Bytes, not time: the
    same rows always encode alike (the times' columns vary a little from run to run)."""
    rnd = random.Random(0)
    with localrun.init(project="p", id="r", dir=root, console=False) as run:
        for i in range(25_000):
            if curve == "noisy":
                run.log({f"m{j}": rnd.gauss(0.0, 1.0) for j in range(4)})
            else:
                run.log({f"m{j}": math.exp(-i / (5_000.0 * (j + 1))) for j in range(4)})
    ours = sum(p.stat().st_size for p in _segments(root))
    table = localrun.Api(root).run("p/r").history()
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    best = min(
        _one_file_bytes(table, compression="zstd", use_dictionary=False),
        _one_file_bytes(
            table, compression="zstd", use_dictionary=False, use_byte_stream_split=floats
        ),
    )
    assert ours <= 1.2 * best, (curve, ours, best)


def _one_file_bytes(table: pa.Table, **options: Any) -> int:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return int(sink.getvalue().size)


def test_old_snappy_segments_and_new_ones_read_together(root: Path) -> None:
    """A run written by an earlier version (snappy, dictionaries on every column), resumed by
    this one: history() reads old and new segments as one table, and verify passes."""
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(10):
            run.log({"loss": float(i), "phase": f"p{i % 3}"})
    (old,) = _segments(root)
    table = pq.read_table(old)  # keeps the footer's localrun metadata (run identity)
    old.unlink()
    pq.write_table(table, old)  # exactly how earlier versions wrote segments
    assert {c for c, _ in _encodings(old).values()} == {"SNAPPY"}
    assert "RLE_DICTIONARY" in _encodings(old)["loss"][1]
    with localrun.init(project="p", id="r", dir=root, resume="must") as run:
        for i in range(10, 20):
            run.log({"loss": float(i), "phase": f"p{i % 3}"})
    segs = _segments(root)
    assert len(segs) == 2 and {c for c, _ in _encodings(segs[1]).values()} == {"ZSTD"}
    stored = localrun.Api(root).run("p/r")
    history = stored.history(["loss", "phase"])
    assert history.column("_step").to_pylist() == list(range(20))
    assert history.column("loss").to_pylist() == [float(i) for i in range(20)]
    assert history.column("phase").to_pylist() == [f"p{i % 3}" for i in range(20)]
    assert stored.summary["loss"] == 19.0
    assert localrun.Api(root).verify()[0].ok
