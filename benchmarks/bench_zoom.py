"""Zooming a chart of a long run: the dashboard server's kept tables against reading the run.

Run: .venv/bin/python benchmarks/bench_zoom.py [--steps 1000000] [--zooms 9]

One run of ``--steps`` steps x 5 metrics (written through the store as bench_ui.py writes its
runs). A chart first asks for every metric over the whole run (width 1200), then zooms: the
same metrics over ``--zooms`` x ranges, each a tenth of the run at another place, and a resize
(width 900). The server keeps the history table its first answer read (``_server/tables.py``),
so each later answer only downsamples. The baseline, in the same process on the same run: the
same answers, each reading the run again (how the server answered before it kept tables).
Values are medians over the zooms; the first answer is timed once for each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import print_table
from bench_ui import METRICS, write_run

from localrun import Api
from localrun._query_series import read_history, run_series
from localrun._server.tables import Tables
from localrun._store import manifest as mf


def answers(
    run: Any, steps: int, zooms: int, read: Callable[..., Any]
) -> tuple[float, list[float]]:
    """Seconds of the whole-run answer, then of each zoom and the resize."""
    t0 = time.perf_counter()
    run_series(run, METRICS, width=1200, read=read)
    first = time.perf_counter() - t0
    later = []
    for i in range(zooms):
        lo = (i + 0.5) * steps / (zooms + 1)
        t0 = time.perf_counter()
        run_series(run, METRICS, width=1200, xmin=lo, xmax=lo + steps / 10, read=read)
        later.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run_series(run, METRICS, width=900, read=read)
    later.append(time.perf_counter() - t0)
    return first, later


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--zooms", type=int, default=9)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-zoom-"))
    try:
        root = work / "root"
        mf.ensure_root(root)
        write_run(root, "big", "r1", opts.steps)
        run = Api(root).run("big/r1")
        base_first, base = answers(run, opts.steps, opts.zooms, read_history)
        kept_first, kept = answers(run, opts.steps, opts.zooms, Tables().history)
        b, k = statistics.median(base), statistics.median(kept)
        rows = [
            (
                "zoom or resize, reading the run again (baseline)",
                f"{b * 1000:.0f} ms",
                f"median of {len(base)}; the whole run's answer {base_first * 1000:.0f} ms",
            ),
            (
                "zoom or resize, the table kept",
                f"{k * 1000:.0f} ms",
                f"median of {len(kept)}; {k / b:.2f}x the baseline; the whole run's answer "
                f"{kept_first * 1000:.0f} ms (it reads the table)",
            ),
        ]
        print_table(
            f"A chart of {opts.steps:,} steps x {len(METRICS)} metrics zoomed (bench_zoom.py)",
            rows,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
