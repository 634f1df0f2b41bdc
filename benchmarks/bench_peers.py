"""log() of 10 floats: localrun against trackio and wandb (offline), each against its baseline.

Run: make bench (it creates .venv-bench with the peers, which never enter the project's venv,
then runs every benchmark), or this script alone once .venv-bench exists:
.venv/bin/python benchmarks/bench_peers.py [--bench-python .venv-bench/bin/python]

Each cell is a fresh process that measures its tracker and the baseline (appending the same
values to Python lists) in the same process; the table shows medians of 3 cells.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from _table import print_table

HERE = Path(__file__).parent
CALLS = {"localrun": 200_000, "trackio": 20_000, "wandb": 5_000}


class CellFailed(Exception):
    """A tracker's cell exited with an error: its row says so, the other trackers still run."""


def cell(python: str, tracker: str, n: int) -> dict[str, float | str]:
    out = subprocess.run(
        [python, str(HERE / "peer_child.py"), tracker, str(n)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0:
        print(f"{tracker} cell failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise CellFailed(f"exit {out.returncode}: {last[:120]}")
    line = out.stdout.strip().splitlines()[-1]
    return dict(json.loads(line))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bench-python", default=str(HERE.parent / ".venv-bench" / "bin" / "python"))
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rows = []
    for tracker, n in CALLS.items():
        python = sys.executable if tracker == "localrun" else args.bench_python
        if not Path(python).exists():
            rows.append((f"{tracker}: log() of 10 floats", "n/a", f"{python} missing"))
            continue
        try:
            cells = [cell(python, tracker, n) for _ in range(args.repeat)]
        except CellFailed as exc:
            rows.append((f"{tracker}: log() of 10 floats", "failed", str(exc)))
            continue
        log_ns = statistics.median(float(c["log_ns"]) for c in cells)
        base_ns = statistics.median(float(c["base_ns"]) for c in cells)
        fin = statistics.median(float(c["finish_s"]) for c in cells)
        whole = (log_ns * n / 1e9 + fin) / n * 1e9  # the finish flushes what log() buffered
        rows.append(
            (
                f"{tracker} {cells[0]['version']}: log() of 10 floats",
                f"{log_ns / 1000:,.2f} us",
                f"{log_ns / base_ns:.1f}x its baseline ({base_ns:,.0f} ns); "
                f"with finish {whole / 1000:,.2f} us/call; {n:,} calls, median of {args.repeat}",
            )
        )
    print_table("Peers: log() per call, same machine, fresh process per cell", rows)


if __name__ == "__main__":
    main()
