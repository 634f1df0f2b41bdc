"""log() cost against appending to Python lists, flush cost, and reading a 1e6-step run.

Run: .venv/bin/python benchmarks/bench_log.py [--steps 1000000]
Prints one table; the baselines are measured in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from _table import best_of, print_table

import localrun

KEYS = [f"m{i}" for i in range(10)]


def per_call(total_s: float, n: int) -> str:
    return f"{total_s / n * 1e9:,.0f} ns"


def bench_log(root: Path, n: int) -> list[tuple[str, str, str]]:
    values = [{k: float(i + j) for j, k in enumerate(KEYS)} for i in range(1000)]

    def baseline() -> None:
        lists: dict[str, list[float]] = {k: [] for k in KEYS}
        for i in range(n):
            for k, v in values[i % 1000].items():
                lists[k].append(v)

    base, _ = best_of(baseline)
    rows = [("baseline: append 10 floats to lists", per_call(base, n), "per call, best of 5")]
    cases = (
        ("log() of 10 floats, defaults (flushes in the background)", 2.0, "10000"),
        ("log() of 10 floats, hot path only (no flush runs)", 3600.0, str(10 * n)),
    )
    for label, interval, budget in cases:
        os.environ["LOCALRUN_FLUSH_ROWS"] = budget
        if interval > 60:  # the hot path alone: no flush, so no bound to wait at either
            os.environ["LOCALRUN_BUFFER_ROWS"] = str(10 * n)
            os.environ["LOCALRUN_BUFFER_MB"] = str(max(32, n // 1000))
        run = localrun.init(project="bench", dir=root, flush_interval=interval)
        run.log(values[0])  # first log of a key takes the slow path once

        def logging(run: localrun.Run = run) -> None:
            log = run.log
            for i in range(n):
                log(values[i % 1000])

        t, _ = best_of(logging)
        rows.append((label, per_call(t, n), f"{t / base:.2f}x baseline"))
        run.finish()
    for var in ("LOCALRUN_FLUSH_ROWS", "LOCALRUN_BUFFER_ROWS", "LOCALRUN_BUFFER_MB"):
        os.environ.pop(var, None)
    return rows


def bench_flush(root: Path) -> list[tuple[str, str, str]]:
    rows = []
    for n in (1_000, 10_000):
        run = localrun.init(project="bench", dir=root, flush_interval=3600)
        times = []
        for _ in range(5):
            for i in range(n):
                run.log({k: float(i) for k in KEYS})
            t0 = time.perf_counter()
            run.flush()
            times.append(time.perf_counter() - t0)
        run.finish()
        rows.append(
            (
                f"flush of {n:,} rows x 10 keys",
                f"{min(times) * 1e3:,.1f} ms",
                "segment write + fsync + manifest commit",
            )
        )
    return rows


def bench_read(root: Path, steps: int) -> list[tuple[str, str, str]]:
    os.environ["LOCALRUN_FLUSH_ROWS"] = "100000"
    run = localrun.init(project="bench", id="big", dir=root, flush_interval=3600)
    t0 = time.perf_counter()
    for i in range(steps):
        run.log({k: float(i) for k in KEYS})
    run.finish()
    write_s = time.perf_counter() - t0
    stored = localrun.Api(root).run("bench/big")
    t, _ = best_of(lambda: stored.history(["m3"]), repeat=3)
    # baseline: the same column from one Parquet file with pyarrow alone
    one = root / "one.parquet"
    pq.write_table(
        pa.table(
            {
                "_step": pa.array(range(steps), pa.int64()),
                "m3": pa.array([float(i) for i in range(steps)]),
            }
        ),
        one,
    )
    base, _ = best_of(lambda: pq.read_table(one, columns=["_step", "m3"]), repeat=3)
    assert stored.history(["m3"]).num_rows == steps
    return [
        (
            f"write {steps:,} steps (log + flushes)",
            f"{write_s:,.2f} s",
            f"{len(stored.segment_paths())} segments",
        ),
        (
            f"baseline: pyarrow reads 1 column of 1 file ({steps:,} rows)",
            f"{base * 1e3:,.1f} ms",
            "best of 3",
        ),
        (
            f"history(['m3']) of a {steps:,}-step run",
            f"{t * 1e3:,.1f} ms",
            f"{t / base:.1f}x baseline",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = bench_log(root, args.calls) + bench_flush(root) + bench_read(root, args.steps)
    print_table(
        f"localrun write/read benchmark (python {os.sys.version.split()[0]}, "
        f"pyarrow {pa.__version__})",
        rows,
    )


if __name__ == "__main__":
    main()
