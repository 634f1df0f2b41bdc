"""A tight loop of 10 floats per step: peak memory, the slowest single call, and the whole loop.

Run: PYTHONPATH=. .venv/bin/python benchmarks/bench_memory.py [--steps 10000000] [--repeat 3]

Every cell runs in a fresh process (peak RSS is per process), medians of ``--repeat`` rounds
of one cell of each kind (interleaved; the loop's ratio is the median of the rounds' ratios):

- ``none``: the loop builds each step's dict of 10 fresh floats and drops it (the RSS baseline);
- ``lists``: the same loop appends the 10 values to 10 Python lists (the time baseline);
- ``localrun``: the same loop calls ``run.log(d)``, then ``run.finish()`` (every row on disk).

Wall time and CPU time (``time.process_time``, all threads: the flush thread included) are both
printed: the machine may be shared, and CPU is what the loop itself costs. "max call" is the
slowest single ``log()`` (or append); "waits" counts the calls that waited for the writer
(backpressure), taken from the run's own counter.

Compaction runs on a thread of its own (flusher.Compactor) and streams each merge a row group
at a time (a second-level merge is 16 segments of 16 segments: 2.56 million rows), so its
memory in the peak RSS is a row group's. Set LOCALRUN_COMPACT_FANOUT to see the buffer alone.

"max call warm" is the slowest call after the first ``WARM`` steps. The writer used to make
pyarrow import pandas at its first conversion (0.3 s quiet, over a second loaded), which a
tight loop waited for; it builds its columns without ``pa.array`` now (``_store/arrays.py``),
so both rows should be alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table

KEYS = [f"m{i}" for i in range(10)]
WARM = 200_000  # steps after which "max call warm" counts


def cell(kind: str, steps: int, root: str) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    perf = time.perf_counter
    keys = KEYS
    worst = 0.0
    warm = 0.0
    waits = 0
    arrow = 0.0  # the peak of Arrow's memory pool (buffer conversions, segment writes, merges)
    if kind == "lists":
        lists: dict[str, list[float]] = {k: [] for k in keys}
    run = None
    if kind == "localrun":
        import localrun

        run = localrun.init(project="bench", dir=root)
        run.log({k: 0.0 for k in keys})  # the first log of new keys takes the slow path once
        log = run.log
    c0, t0 = time.process_time(), perf()
    for i in range(steps):
        x = i * 0.001
        d = {
            "m0": x,
            "m1": x + 1.0,
            "m2": x + 2.0,
            "m3": x + 3.0,
            "m4": x + 4.0,
            "m5": x + 5.0,
            "m6": x + 6.0,
            "m7": x + 7.0,
            "m8": x + 8.0,
            "m9": x + 9.0,
        }
        s = perf()
        if kind == "localrun":
            log(d)
        elif kind == "lists":
            for k, v in d.items():
                lists[k].append(v)
        e = perf() - s
        if e > worst:
            worst = e
        if e > warm and i >= WARM:
            warm = e
    if run is not None:
        run.finish()
        waits = getattr(run, "_waits", 0)  # 0 for versions without backpressure
        import pyarrow as pa

        arrow = pa.default_memory_pool().max_memory() / 2**20
    wall, cpu = perf() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    return {
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "arrow": arrow,
        "worst": worst,
        "warm": warm,
        "waits": waits,
    }


def run_cell(kind: str, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--cell", kind, "--steps", str(steps), "--root", tmp],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cell")
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(args.cell, args.steps, args.root)))
        return
    # Rounds of one cell of each kind, interleaved: this machine's speed drifts by a third
    # from one minute to the next (the same loop took 5.1 to 6.8 s in five processes in a
    # row), so a ratio is taken within a round and the rounds' median is printed.
    rounds = [
        {kind: run_cell(kind, args.steps) for kind in ("none", "lists", "localrun")}
        for _ in range(args.repeat)
    ]
    med = {
        kind: {k: statistics.median(r[kind][k] for r in rounds) for k in rounds[0][kind]}
        for kind in ("none", "lists", "localrun")
    }
    ratio = {
        k: statistics.median(r["localrun"][k] / r["lists"][k] for r in rounds)
        for k in ("wall", "cpu")
    }
    spread = sorted(r["localrun"]["wall"] / r["lists"]["wall"] for r in rounds)
    n = args.steps
    none, lists, lr = med["none"], med["lists"], med["localrun"]
    rows = [
        ("peak RSS: loop, no tracker", f"{none['rss']:,.0f} MiB", "the memory baseline"),
        ("peak RSS: appending to lists", f"{lists['rss']:,.0f} MiB", ""),
        (
            "peak RSS: log()",
            f"{lr['rss']:,.0f} MiB",
            f"+{lr['rss'] - none['rss']:,.0f} MiB over no tracker (target <= 256)",
        ),
        ("  of which Arrow's memory pool, at its peak", f"{lr['arrow']:,.0f} MiB", ""),
        ("slowest single append to lists", f"{lists['worst'] * 1e3:,.2f} ms", ""),
        (
            "slowest single log()",
            f"{lr['worst'] * 1e3:,.2f} ms",
            f"target <= 50 ms; {lr['waits']:,.0f} calls waited for the writer",
        ),
        (
            f"slowest single log() after {WARM:,} steps",
            f"{lr['warm'] * 1e3:,.2f} ms",
            "",
        ),
        (
            "whole loop: appending to lists",
            f"{lists['wall']:,.2f} s",
            f"wall; CPU {lists['cpu']:,.2f} s ({lists['cpu'] / n * 1e6:,.2f} us/step)",
        ),
        (
            "whole loop: log() + finish()",
            f"{lr['wall']:,.2f} s",
            f"{ratio['wall']:.2f}x lists wall (target <= 2.5x; rounds "
            f"{spread[0]:.2f}x to {spread[-1]:.2f}x); CPU {lr['cpu']:,.2f} s = "
            f"{ratio['cpu']:.2f}x lists CPU",
        ),
    ]
    import pyarrow as pa

    print_table(
        f"localrun tight loop, {n:,} steps x 10 floats (medians of {args.repeat} rounds of fresh "
        f"processes; python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
        f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f})",
        rows,
    )


if __name__ == "__main__":
    if "--cell" not in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
