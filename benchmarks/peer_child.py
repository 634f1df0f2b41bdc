"""One cell of the peer comparison: log() of 10 floats with one tracker, in this interpreter.

Run by bench_peers.py, under the project's venv for localrun and under ``.venv-bench`` for the
peers (trackio and wandb are never installed into the project's venv). Prints one JSON line:
the per-call cost of ``log()`` and of the baseline (appending the same values to Python lists)
measured in this same process, so interpreters and machines cancel out of the ratio.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from importlib.metadata import version
from typing import Any

KEYS = [f"m{i}" for i in range(10)]
VALUES = [{k: float(i + j) for j, k in enumerate(KEYS)} for i in range(1000)]


def baseline(n: int) -> float:
    lists: dict[str, list[float]] = {k: [] for k in KEYS}
    t0 = time.perf_counter()
    for i in range(n):
        for k, v in VALUES[i % 1000].items():
            lists[k].append(v)
    return time.perf_counter() - t0


def timed_logs(log: Any, n: int) -> float:
    log(VALUES[0])  # the first call of a key may take a slow path in any tracker
    t0 = time.perf_counter()
    for i in range(n):
        log(VALUES[i % 1000])
    return time.perf_counter() - t0


def main() -> None:
    tracker, n = sys.argv[1], int(sys.argv[2])
    tmp = tempfile.mkdtemp(prefix=f"bench-{tracker}-")
    if tracker == "localrun":
        import localrun

        run = localrun.init(project="bench", dir=tmp)
        t = timed_logs(run.log, n)
        t1 = time.perf_counter()
        run.finish()
        ver = version("localrun-tracker")
    elif tracker == "trackio":
        os.environ["HF_HOME"] = tmp
        os.environ["TRACKIO_DIR"] = tmp
        import trackio

        trackio.init(project="bench")
        t = timed_logs(trackio.log, n)
        t1 = time.perf_counter()
        trackio.finish()
        ver = version("trackio")
    elif tracker == "wandb":
        os.environ.update(WANDB_MODE="offline", WANDB_DIR=tmp, WANDB_SILENT="true")
        import wandb

        wrun = wandb.init(project="bench", dir=tmp)
        t = timed_logs(wrun.log, n)
        t1 = time.perf_counter()
        wrun.finish()
        ver = version("wandb")
    else:
        raise SystemExit(f"unknown tracker {tracker!r}")
    finish = time.perf_counter() - t1
    out = {
        "tracker": tracker,
        "version": ver,
        "n": n,
        "log_ns": t / n * 1e9,
        "base_ns": min(baseline(n) for _ in range(3)) / n * 1e9,
        "finish_s": finish,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
