"""log()'s hot path and the writer's row conversion, in instructions (callgrind), against lists.

Wall-clock figures move with whatever else the machine runs; instruction counts do not, so this
is the figure to compare two versions of the code by. Each case runs in a fresh interpreter under
callgrind (fixed hash seed, no heartbeat, no flush), minus the same script doing nothing:

    .venv/bin/python benchmarks/bench_log_callgrind.py [--calls 100000] [--code PATH ...]

``--code`` puts another checkout first on PYTHONPATH (a git worktree of an older commit), so
two versions are measured in the same run. Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _table import print_table

CASE = r"""
import os, sys, tempfile
import localrun
mode, n = sys.argv[1], int(sys.argv[2])
keys = [f"m{i}" for i in range(10)]
values = [{k: float(i + j) for j, k in enumerate(keys)} for i in range(1000)]
run = localrun.init(project="b", dir=tempfile.mkdtemp(), flush_interval=3600)
run.log(values[0])  # the first log of a key takes the slow path once
if mode == "log":
    log = run.log
    for i in range(n):
        log(values[i % 1000])
elif mode == "lists":
    lists = {k: [] for k in keys}
    for i in range(n):
        for k, v in values[i % 1000].items():
            lists[k].append(v)
elif mode in ("rows", "convert"):  # the rows as log() buffers them; "convert": then the
    # writer's conversion of them into Arrow (Run._SLICE rows a call), as a log() waiting for
    # room does it in a tight loop. "rows" alone is subtracted: only the conversion counts.
    from localrun._run.buffer import Batch, batch_table, cells
    rows = [{**values[i % 1000], "_timestamp": 1.7e9 + i} for i in range(n)]
    kinds = dict.fromkeys(keys, "number")
    for s in range(0, n if mode == "convert" else 0, 2048):
        part = rows[s : s + 2048]
        batch_table(Batch(range(s, s + len(part)), part, cells(part)), kinds, 0.0, 1.7e9)
os._exit(0)  # no finish, no atexit flush: only the loop is counted
"""


def instructions(code: Path, mode: str, calls: int) -> int:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(code),
        PYTHONHASHSEED="0",
        LOCALRUN_FLUSH_ROWS=str(10 * calls + 10),
        LOCALRUN_LEASE_TTL="1000000",
    )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "case.py"
        script.write_text(CASE)
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/cg.out",
                sys.executable,
                str(script),
                mode,
                str(calls),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    assert found, out.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--code", action="append", default=[], help="another checkout to measure")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    here = Path(__file__).resolve().parents[1]
    rows = []
    for code in [here, *map(Path, args.code)]:
        idle = instructions(code, "none", 0)
        lists = (instructions(code, "lists", args.calls) - idle) / args.calls
        log = (instructions(code, "log", args.calls) - idle) / args.calls
        made = (instructions(code, "rows", args.calls) - idle) / args.calls
        convert = (instructions(code, "convert", args.calls) - idle) / args.calls - made
        name = "this checkout" if code == here else str(code)
        rows.append((f"{name}: baseline, append 10 floats to lists", f"{lists:,.0f}", "instr/call"))
        rows.append((f"{name}: log() of 10 floats, hot path", f"{log:,.0f}", f"{log / lists:.2f}x"))
        rows.append((f"{name}: converting the rows to Arrow", f"{convert:,.0f}", "instr/row"))
    print_table(f"log() in instructions (callgrind, {args.calls:,} calls per case)", rows)


if __name__ == "__main__":
    main()
