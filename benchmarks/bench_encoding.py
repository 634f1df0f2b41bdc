"""Bytes per logged point on disk: localrun's segments against one zstd Parquet file of the
same table, and against the settings of earlier versions (snappy, dictionaries everywhere).

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_encoding.py [--steps 200000]

Each curve is logged with ``run.log()`` (10 keys a step, default settings: segments of 10,000
rows, compacted as a real run is), then the run's whole history is read back and written as
one file for the baselines. A point is one logged value; the bytes include ``_step``,
``_timestamp`` and ``_runtime``. The write cost (CPU per row of one 10,000-row segment) and
``history()`` time are printed for both encodings, so a smaller file is not bought with time.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _table import print_table

import localrun
from localrun._store.segments import write_options

KEYS = 10
CURVES: dict[str, Callable[[random.Random, int, int], float]] = {
    # independent Gaussian noise: the worst case for any encoding
    "noisy": lambda rnd, i, j: rnd.gauss(0.0, 1.0),
    # a decaying loss with a slow oscillation: full-precision values that change slowly
    "smooth": lambda rnd, i, j: math.exp(-i / (20_000.0 * (j + 1))) + 0.1 * math.sin(i / 500.0),
    # a schedule: a learning rate halved every 10,000 steps, an epoch counter
    "stepped": lambda rnd, i, j: 0.1 * 0.5 ** (i // 10_000) if j % 2 else float(i // 5_000),
}


def _file_bytes(table: pa.Table, **options: object) -> int:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)  # type: ignore[arg-type]
    return len(buf.getvalue())


def _cpu_per_row(table: pa.Table, options: dict[str, object]) -> float:
    best = float("inf")
    for _ in range(5):
        c0 = time.process_time()
        _file_bytes(table, **options)
        best = min(best, time.process_time() - c0)
    return best / table.num_rows


def _history_seconds(root: Path) -> float:
    stored = localrun.Api(root).run("bench/r")
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        stored.history()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_curve(name: str, steps: int, tmp: Path) -> list[tuple[str, str, str]]:
    curve = CURVES[name]
    rnd = random.Random(0)
    root = tmp / name
    with localrun.init(project="bench", id="r", dir=root) as run:
        for i in range(steps):
            run.log({f"m{j}": curve(rnd, i, j) for j in range(KEYS)})
    points = steps * KEYS
    history = root / "bench" / "r" / "history"
    segs = sorted(history.glob("*.parquet"))
    ours = sum(p.stat().st_size for p in segs)
    table = localrun.Api(root).run("bench/r").history()
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    plain = _file_bytes(table, compression="zstd", use_dictionary=False)
    split = _file_bytes(
        table, compression="zstd", use_dictionary=False, use_byte_stream_split=floats
    )
    best = min(plain, split)
    # The same segments as earlier versions wrote them (pyarrow's defaults), in a copy of the run.
    old_root = tmp / f"{name}-old"
    shutil.copytree(root, old_root)
    old = 0
    for p in sorted((old_root / "bench" / "r" / "history").glob("*.parquet")):
        t = pq.read_table(p)
        p.unlink()
        pq.write_table(t, p)
        old += p.stat().st_size
    new_read, old_read = _history_seconds(root), _history_seconds(old_root)
    seg = table.slice(0, min(10_000, steps))
    new_cpu = _cpu_per_row(seg, write_options(seg.schema))
    old_cpu = _cpu_per_row(seg, {})
    return [
        (f"{name}: localrun segments", f"{ours / points:.2f} B/pt", f"{len(segs)} segments"),
        (
            f"{name}: one zstd file, best of plain/split",
            f"{best / points:.2f} B/pt",
            f"plain {plain / points:.2f}, byte_stream_split {split / points:.2f}; "
            f"localrun = {ours / best:.2f}x (target <= 1.2x)",
        ),
        (
            f"{name}: old settings (snappy + dictionary)",
            f"{old / points:.2f} B/pt",
            f"{old / ours:.2f}x localrun's bytes",
        ),
        (
            f"{name}: segment write CPU, new vs old",
            f"{new_cpu * 1e6:.2f} us/row",
            f"old {old_cpu * 1e6:.2f} us/row (10 keys, one 10,000-row segment)",
        ),
        (
            f"{name}: history() of the run, new vs old",
            f"{new_read * 1e3:.1f} ms",
            f"old {old_read * 1e3:.1f} ms (best of 5)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in CURVES:
            rows += bench_curve(name, args.steps, Path(tmp))
    print_table(
        f"bytes per logged point, {args.steps:,} steps x {KEYS} keys (python "
        f"{sys.version.split()[0]}, pyarrow {pa.__version__}, load {os.getloadavg()[0]:.1f})",
        rows,
    )


if __name__ == "__main__":
    main()
