"""log() from many threads at once: every committed step exactly once, in order, no gap."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun
from localrun._store import manifest as mf

THREADS = 8
CALLS = 50_000


def _hammer(run: localrun.Run, body: Callable[[localrun.Run, int, int], None]) -> int:
    """THREADS threads wait at one barrier, then each makes CALLS calls of ``body``."""
    barrier = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for i in range(CALLS):
                body(run, t, i)
                if i % 10_000 == 9_999:
                    run.flush()  # flushes taking rows while the other threads log
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    while barrier.n_waiting < THREADS:  # every thread started and waiting
        time.sleep(0.001)
    waiting = barrier.n_waiting
    barrier.wait()  # release them all at once
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors[:3]
    print(f"barrier: {waiting} of {THREADS} threads were waiting when released")
    return waiting


def _plain(run: localrun.Run, t: int, i: int) -> None:
    run.log({"x": float(i), "t": float(t)})


def _mixed(run: localrun.Run, t: int, i: int) -> None:
    kind = i % 3
    if kind == 0:
        run.log({"x": float(i)})
    elif kind == 1:
        run.log({"s": f"thread {t}"})
    else:
        run.log({"v": [float(t), float(i)], "x": i})  # an int into a number key, too


def _uncommitted(run: localrun.Run, t: int, i: int) -> None:
    if i % 2 == 0:
        run.log({"a": float(i)}, commit=False)
    else:
        run.log({"b": float(t)})


def _explicit(run: localrun.Run, t: int, i: int) -> None:
    run.log({f"t{t}": float(i)}, step=i // 4)


CASES: dict[str, tuple[Callable[[localrun.Run, int, int], None], int | None]] = {
    "plain floats": (_plain, THREADS * CALLS),
    "mixed kinds": (_mixed, THREADS * CALLS),
    "commit=False": (_uncommitted, THREADS * CALLS // 2),
    "explicit step=": (_explicit, None),  # lower steps are dropped by design
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.filterwarnings("ignore:localrun. step .* is lower:localrun.LocalrunWarning")
def test_threads_logging_at_once_commit_every_step_once(root: Path, case: str) -> None:
    body, expected_rows = CASES[case]
    run = localrun.init(project="p", id="r", dir=root, flush_interval=0.02)
    assert _hammer(run, body) == THREADS
    run.finish()
    stored = localrun.Api(root).run("p/r")
    steps = stored.history().column("_step").to_pylist()
    if expected_rows is not None:
        assert steps == list(range(expected_rows))  # each step once, in order, no gap
    else:
        assert steps == list(range(len(steps))) and steps[-1] == CALLS // 4 - 1
    for path in stored.segment_paths():  # and inside every segment on its own
        seg = pq.read_table(path, columns=["_step"]).column("_step").to_pylist()
        assert all(b > a for a, b in itertools.pairwise(seg)), path
    assert stored.manifest["rev"] > THREADS * 4  # flushes ran while the other threads logged
    report = localrun.Api(root).verify("p/r")[0]
    assert report.ok, report.problems


def _add_segment(root: Path, steps: list[int]) -> None:
    run_dir = root / "p" / "r"
    rel = "history/0001-000900.parquet"
    table = pa.table(
        {
            "_step": pa.array(steps, pa.int64()),
            "_timestamp": [0.0] * len(steps),
            "_runtime": [0.0] * len(steps),
            "x": [1.0] * len(steps),
        }
    )
    pq.write_table(table, run_dir / rel)
    entry = {
        "file": rel,
        "attempt": 1,
        "seq": 900,
        "rows": len(steps),
        "min_step": min(steps),
        "max_step": max(steps),
        "bytes": (run_dir / rel).stat().st_size,
    }

    def add(m: mf.Manifest) -> None:
        m["segments"].append(entry)

    mf.update(run_dir, add)


@pytest.mark.parametrize(
    ("steps", "word"),
    [([10, 11, 11, 12], "duplicate"), ([10, 12, 11], "non-increasing"), ([1, 2], "starts at")],
)
def test_verify_finds_duplicate_and_non_increasing_steps(
    root: Path, steps: list[int], word: str
) -> None:
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(5):
            run.log({"x": float(i)})
    assert localrun.Api(root).verify("p/r")[0].ok
    _add_segment(root, steps)
    report = localrun.Api(root).verify("p/r")[0]
    assert any(word in p and "0001-000900" in p for p in report.problems), report.problems


REWINDS = 10


def test_a_rewind_while_another_thread_logs_keeps_every_step_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread logs (tens of thousands of rows a second) while the main thread rewinds,
    again and again, with the writer flushing every 500 rows meanwhile. Each row logged around a rewind lands on one
    side of it, with steps that agree: the visible steps are 0, 1, 2, ... with none twice, and
    every row logged after the last rewind returned is visible, in order."""
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "500")
    run = localrun.init(project="p", id="r", dir=root, flush_interval=0.001, console=False)
    barrier = threading.Barrier(2)
    done = threading.Event()
    logged = itertools.count()
    errors: list[BaseException] = []

    def logger() -> None:
        barrier.wait()
        try:
            while not done.is_set():
                i = next(logged)
                run.log({"x": float(i)})
                if i % 20 == 0:
                    time.sleep(0.0005)  # a training loop's pace, not a flood of the buffer
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    thread = threading.Thread(target=logger)
    thread.start()
    while barrier.n_waiting < 1:
        time.sleep(0.001)
    waiting = barrier.n_waiting
    barrier.wait()
    print(f"barrier: {waiting} of 1 logging thread was waiting when released")
    for _ in range(REWINDS):
        time.sleep(0.02)  # let it log a few hundred rows, some of them flushed
        run.rewind(max(0, run.step - 100))
    after = run.step  # every row from here on comes after the last rewind
    time.sleep(0.05)
    done.set()
    thread.join(timeout=120)
    assert not errors, errors[:3]
    run.finish()
    table = localrun.Api(root).run("p/r").history(["x"])
    steps = table["_step"].to_pylist()
    assert steps == list(range(len(steps)))  # every visible step once, none missing
    xs = table["x"].to_pylist()
    tail = xs[after:]
    assert tail and tail == sorted(tail)  # after the last rewind: every row, in logged order
    assert tail[-1] == max(xs)  # the last row logged is visible
