"""A run resumed 100 times against the same run written once: history() and resume.

Run: .venv/bin/python benchmarks/bench_attempts.py [--attempts 100] [--steps 1000]

Four runs of the same length, made by the real writer, each flushing every 100 steps (as a run
flushing every few seconds does):
  * written once: one attempt of attempts x steps steps;
  * resumed: `attempts` attempts of `steps` steps, each `init(resume="must")` ... `finish()`;
  * resumed with rewind_to: the same, every attempt resuming from a checkpoint 100 steps back,
    so every attempt hides rows of the one before (the rows it shows are fewer);
  * nothing merged (before): as `resumed` with LOCALRUN_COMPACT_FANOUT=1024 (no merge is ever
    due): one segment a flush, what a resumed run was before compaction merged across attempts.
Measured in a fresh process per cell, interleaved (median over the processes): the median of
5 `history(["loss"])` calls after one warm-up, and resume: `init(resume="must")` until it
returns, each process on its own copy of the run (so every resume finds the run as made).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from _table import print_table

HERE = Path(__file__).resolve().parent
PROCESSES = 9
FLUSH_EVERY = 100


def child(code: str, root: Path, *args: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with the root in its environment; its stdout."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOCALRUN_")}
    full.update(LOCALRUN_DIR=str(root), PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=full,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout


WRITE = """
    import logging, sys, localrun
    logging.disable(logging.WARNING)  # "taking over run ...: nobody owns it", once per attempt
    rid, attempts, steps, rewind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for k in range(attempts):
        kw = {}
        if k:
            kw["resume"] = "must"
            if rewind == "1":  # resume from a checkpoint FLUSH steps back
                kw["rewind_to"] = localrun.Api().run(f"bench/{rid}").last_step - FLUSH
        run = localrun.init(project="bench", id=rid, flush_interval=3600, **kw)
        start = run.step
        for i in range(start, start + steps):
            run.log({"loss": 1.0 / (i + 1), "acc": i * 1e-6})
            if (i - start + 1) % FLUSH == 0:
                run.flush()
        run.finish()
"""


def make(root: Path, rid: str, attempts: int, steps: int, rewind: bool, **env: str) -> None:
    """The run, made by the real writer: every attempt an init, logging, flushes, finish (one
    process for all attempts of a run: a fresh process per attempt only adds interpreter starts
    to the making, and the measured cells below are fresh processes)."""
    code = textwrap.dedent(WRITE).replace("FLUSH", str(FLUSH_EVERY))
    child(code, root, *[rid, str(attempts), str(steps), "1" if rewind else "0"], **env)


HISTORY = """
    import statistics, time, localrun
    run = localrun.Api().run("bench/{rid}")
    run.history(["loss"])
    times = []
    for _ in range(5):
        t0 = time.perf_counter(); table = run.history(["loss"]); times.append(time.perf_counter() - t0)
    print(statistics.median(times), table.num_rows, len(run.manifest["segments"]))
"""

RESUME = """
    import time, localrun
    import pyarrow.parquet  # what any resume of a run with history has imported already
    t0 = time.perf_counter()
    run = localrun.init(project="bench", id="{rid}", resume="must")
    t = time.perf_counter() - t0
    run.finish()
    print(t)
"""


def measure(root: Path, code: str, rid: str, copy: bool) -> tuple[float, list[str]]:
    """One fresh process's measure of ``code`` on run ``rid`` (on a copy of the root when the
    measure changes the run, as a resume does)."""
    where = root
    if copy:
        where = Path(tempfile.mkdtemp(dir=root.parent))
        shutil.copytree(root, where, dirs_exist_ok=True)
    try:
        out = child(code.format(rid=rid), where).split()
    finally:
        if copy:
            shutil.rmtree(where)
    return float(out[0]), out[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    n = args.attempts * args.steps
    a, s = args.attempts, args.steps
    runs = [
        ("once", f"written once, 1 x {n:,} steps", 1, n, False, {}),
        ("resumed", f"resumed, {a} x {s:,} steps", a, s, False, {}),
        ("rewound", f"resumed with rewind_to, {a} x {s:,} steps", a, s, True, {}),
        (
            "nomerge",
            f"resumed, nothing merged (before), {a} x {s:,}",
            a,
            s,
            False,
            {"LOCALRUN_COMPACT_FANOUT": "1024"},
        ),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for rid, _, attempts, steps, rewind, env in runs:
            make(root, rid, attempts, steps, rewind, **env)
        hist: dict[str, list[float]] = {r[0]: [] for r in runs}
        res: dict[str, list[float]] = {r[0]: [] for r in runs}
        info: dict[str, list[str]] = {}
        for _ in range(PROCESSES):  # interleaved: a load spike hits every run alike
            for rid, *_ in runs:
                t, info[rid] = measure(root, HISTORY, rid, copy=False)
                hist[rid].append(t)
                res[rid].append(measure(root, RESUME, rid, copy=True)[0])
    base_h, base_r = statistics.median(hist["once"]), statistics.median(res["once"])
    rows = []
    for rid, label, *_ in runs:
        h, r = statistics.median(hist[rid]), statistics.median(res[rid])
        nrows, nsegs = info[rid]
        rows.append(
            (
                f"history(['loss']): {label} ({nrows} rows, {nsegs} segments)",
                f"{h * 1e3:.1f} ms",
                f"{h / base_h:.2f}x written once",
            )
        )
        rows.append((f"resume: {label}", f"{r * 1e3:.1f} ms", f"{r / base_r:.2f}x written once"))
    print_table(
        f"localrun: a run resumed {a} times vs the same run written once (median of "
        f"{PROCESSES} fresh processes per cell; a flush every {FLUSH_EVERY} steps)",
        rows,
    )


if __name__ == "__main__":
    main()
