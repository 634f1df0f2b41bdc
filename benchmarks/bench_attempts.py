"""A run resumed 100 times against the same run written once: history() and resume.

Run: .venv/bin/python benchmarks/bench_attempts.py [--attempts 100] [--steps 1000]

Three runs of the same length, made by the real writer, each flushing every 100 steps (a run
flushing every few seconds does the same):
  * once:    one attempt of attempts x steps steps;
  * resumed: `attempts` attempts of `steps` steps, each a fresh process, `init(resume="must")`;
  * rewound: the same, but every attempt resumes from a checkpoint 100 steps back
             (`rewind_to`), so every attempt hides rows of the one before;
  * resumed, no merging: as `resumed` with LOCALRUN_COMPACT_FANOUT=1024 (nothing is ever due):
             what the run was before compaction merged across attempts (one segment a flush).
Measured, in a fresh process per cell (median of the processes, each the median of 3 calls
after one warm-up): `history(["loss"])` of the whole run, and resume (`init(resume="must")`
until it returns; each process resumes its own copy of the run, so the runs stay as made).
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
PROCESSES = 5
FLUSH_EVERY = 100


def child(code: str, root: Path, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with the root in its environment; its stdout."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LOCALRUN_")}
    full.update(LOCALRUN_DIR=str(root), PYTHONPATH=os.pathsep.join([str(HERE.parent), str(HERE)]))
    full.update(env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return out.stdout


WRITE = """
    import localrun
    kw = {kw}
    run = localrun.init(project="bench", id="{rid}", flush_interval=3600, **kw)
    start = run.step
    for i in range(start, start + {steps}):
        run.log({{"loss": 1.0 / (i + 1), "acc": i * 1e-6}})
        if (i - start + 1) % {flush} == 0:
            run.flush()
    run.finish()
"""


def make(root: Path, rid: str, attempts: int, steps: int, rewind: bool, **env: str) -> None:
    for k in range(attempts):
        if k == 0:
            kw = "{}"
        elif rewind:
            kw = f"dict(resume='must', rewind_to=run_step - {FLUSH_EVERY} - 1)"
        else:
            kw = "dict(resume='must')"
        code = WRITE.format(kw=kw, rid=rid, steps=steps, flush=FLUSH_EVERY)
        if rewind and k:
            code = code.replace(
                "    import localrun\n",
                "    import localrun\n"
                f"    run_step = localrun.Api().run('bench/{rid}').last_step + 1\n",
            )
        child(code, root, **env)


HISTORY = """
    import statistics, time, localrun
    run = localrun.Api().run("bench/{rid}")
    run.history(["loss"])
    times = []
    for _ in range(3):
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


def cell(root: Path, code: str, rid: str, copy: bool) -> tuple[float, list[str]]:
    times, extra = [], []
    for _ in range(PROCESSES):
        where = root
        if copy:
            where = Path(tempfile.mkdtemp(dir=root.parent))
            shutil.copytree(root, where, dirs_exist_ok=True)
        out = child(code.format(rid=rid), where).split()
        times.append(float(out[0]))
        extra = out[1:]
        if copy:
            shutil.rmtree(where)
    return statistics.median(times), extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attempts", type=int, default=100)
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    n = args.attempts * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        runs = [
            ("once", f"written once: 1 attempt x {n:,} steps", 1, n, False, {}),
            (
                "resumed",
                f"resumed: {args.attempts} attempts x {args.steps:,}",
                args.attempts,
                args.steps,
                False,
                {},
            ),
            (
                "rewound",
                f"rewound: {args.attempts} attempts, each rewinds {FLUSH_EVERY}",
                args.attempts,
                args.steps,
                True,
                {},
            ),
            (
                "nomerge",
                f"resumed, no merging (before): {args.attempts} x {args.steps:,}",
                args.attempts,
                args.steps,
                False,
                {"LOCALRUN_COMPACT_FANOUT": "1024"},
            ),
        ]
        for rid, _, attempts, steps, rewind, env in runs:
            make(root, rid, attempts, steps, rewind, **env)
        rows = []
        base_h = base_r = 0.0
        for rid, label, *_ in runs:
            h, (nrows, nsegs) = cell(root, HISTORY, rid, copy=False)
            r, _ = cell(root, RESUME, rid, copy=True)
            if rid == "once":
                base_h, base_r = h, r
            rows.append(
                (
                    f"{label}: history(['loss']), {nrows} rows, {nsegs} segments",
                    f"{h * 1e3:.1f} ms",
                    f"{h / base_h:.2f}x written once",
                )
            )
            rows.append(
                (f"{label}: resume", f"{r * 1e3:.1f} ms", f"{r / base_r:.2f}x written once")
            )
    print_table(
        f"localrun: a run resumed {args.attempts} times vs written once (median of "
        f"{PROCESSES} fresh processes per cell; a flush every {FLUSH_EVERY} steps)",
        rows,
    )


if __name__ == "__main__":
    main()
