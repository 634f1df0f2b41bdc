"""Printing benchmark results as one table (shared by the benchmark scripts)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """(best, median) seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Print one table; under ``run_all.py`` also hand its rows over for the combined table."""
    out = os.environ.get("LOCALRUN_BENCH_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({"title": title, "rows": rows}) + "\n")
    width = max(len(r[0]) for r in rows)
    print(f"\n{title}")
    print(f"{'measure'.ljust(width)}  {'value':>14}  note")
    print(f"{'-' * width}  {'-' * 14}  ----")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value:>14}  {note}")
