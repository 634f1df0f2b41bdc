"""Resume time for runs of 1e3, 1e5 and 1e7 steps, against a fresh init, in the same run.

Run: .venv/bin/python benchmarks/bench_resume.py
The long runs are made directly with the store's own segment writer (100,000 rows a segment,
as LOCALRUN_FLUSH_ROWS=100000 would give), so the benchmark does not spend minutes logging.
Resume must stay flat: it reads the manifest and one segment footer, never the history.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pyarrow as pa
from _table import print_table

import localrun
from localrun._store import manifest as mf
from localrun._store import segments

ROWS_PER_SEGMENT = 100_000


def make_run(root: Path, run_id: str, steps: int) -> None:
    mf.ensure_root(root)
    run_dir = root / "bench" / run_id
    run_dir.mkdir(parents=True)
    m = mf.new("bench", run_id)
    m["schema"] = {"loss": "number", "acc": "number"}
    m["attempts"] = [
        {
            "attempt": 1,
            "host": "h",
            "pid": 1,
            "started": 0.0,
            "ended": 1.0,
            "start_step": 0,
            "state": "crashed",
            "exit_code": None,
        }
    ]
    for seq, start in enumerate(range(0, steps, ROWS_PER_SEGMENT)):
        n = min(ROWS_PER_SEGMENT, steps - start)
        step = pa.array(range(start, start + n), pa.int64())
        value = pa.array([float(i) for i in range(n)], pa.float64())
        table = pa.table(
            {"_step": step, "_timestamp": value, "_runtime": value, "acc": value, "loss": value}
        )
        m["segments"].append(segments.write(run_dir, 1, seq, table, {"config": {}}))
    m["last_step"] = steps - 1
    mf.create(run_dir, m)


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counter = iter(range(10**9))

        def fresh() -> None:
            localrun.init(project="bench", id=f"new{next(counter)}", dir=root).finish()

        base = timed(fresh)
        rows.append(("baseline: init + finish of a new run", f"{base * 1e3:.1f} ms", "best of 5"))
        for steps in (1_000, 100_000, 10_000_000):
            make_run(root, f"s{steps}", steps)
            segs = -(-steps // ROWS_PER_SEGMENT)

            def resume(steps: int = steps) -> None:
                run = localrun.init(project="bench", id=f"s{steps}", resume="must", dir=root)
                assert run.step == steps
                run.finish()

            t = timed(resume)
            rows.append(
                (
                    f"resume + finish, {steps:,} steps ({segs} segments)",
                    f"{t * 1e3:.1f} ms",
                    f"{t / base:.2f}x baseline",
                )
            )
        # a run made by the real writer with 2,000 flushes: compaction keeps its manifest short
        run = localrun.init(project="bench", id="flushed", dir=root, flush_interval=3600)
        for i in range(2_000):
            run.log({"loss": float(i)})
            run.flush()
        run.finish()
        segs = len(localrun.Api(root).run("bench/flushed").manifest["segments"])

        def resume_flushed() -> None:
            localrun.init(project="bench", id="flushed", resume="must", dir=root).finish()

        t = timed(resume_flushed)
        rows.append(
            (
                f"resume + finish after 2,000 flushes ({segs} segments after compaction)",
                f"{t * 1e3:.1f} ms",
                f"{t / base:.2f}x baseline",
            )
        )
    print_table("localrun resume benchmark", rows)


if __name__ == "__main__":
    main()
