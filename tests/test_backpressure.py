"""log()'s buffer is bounded: when the writer falls behind, log() waits for it (docs/logging.md).

Real threads, locks, signals and a real full disk; no timing asserts. The bound is made tiny
(LOCALRUN_BUFFER_ROWS / LOCALRUN_BUFFER_MB) so a few thousand rows exercise it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from pathlib import Path

import pytest

import localrun
from localrun._run.buffer import CELL_BYTES
from tests.conftest import run_py, spawn

THREADS = 4
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _steps(root: Path, key: str = "x") -> list[int]:
    table = localrun.Api(root).run("p/r").history([key])
    return table.column("_step").to_pylist()


class Watch:
    """Samples the rows and cells held (logged, not yet written) while the test logs."""

    def __init__(self, run: localrun.Run) -> None:
        self.run = run
        self.rows = 0
        self.cells = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop)

    def _loop(self) -> None:
        run = self.run
        while not self.done.is_set():
            with run._room:  # a consistent view: flushes take rows under _room
                run._measure()
                self.rows = max(self.rows, len(run._rows) + run._backlog_rows)
                self.cells = max(self.cells, run._row_cells + run._backlog_cells)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def _log_from_threads(run: localrun.Run, rows: int, width: int) -> None:
    """THREADS threads, released at one barrier, each log ``rows`` rows of ``width`` floats."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for i in range(rows):
                run.log({"x": float(i), **{f"k{j}": float(t) for j in range(width - 1)}})
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors[:3]


def test_the_buffer_never_holds_more_rows_than_its_bound(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "50")
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "200")
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    with Watch(run) as watch:
        _log_from_threads(run, 600, 2)
    run.finish()
    # Each thread may append one row past a check point before it looks at the buffer.
    assert watch.rows <= 200 + THREADS, watch.rows
    assert run._waits > 0  # log() did wait for the writer: the flushes alone never keep up here
    assert _steps(root) == list(range(THREADS * 600))  # nothing lost, nothing twice


def test_the_buffer_never_holds_more_bytes_than_its_bound(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Wide rows: the bytes bound binds long before the rows bound."""
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "1000000")
    monkeypatch.setenv("LOCALRUN_BUFFER_MB", "0.1")  # about 1,600 cells: about 30 rows of 50
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"x": 0.0, **{f"k{j}": 0.0 for j in range(49)}})  # the keys become known
    bound = run._max_cells
    assert bound == int(0.1 * 2**20) // CELL_BYTES
    with Watch(run) as watch:
        _log_from_threads(run, 200, 50)
    run.finish()
    assert watch.cells <= bound + THREADS * 52, (watch.cells, bound)
    assert _steps(root) == list(range(1 + THREADS * 200))


def test_a_waiting_log_and_finish_from_another_thread_both_end(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is held up (a real lock held by the test); log() fills the buffer and waits;
    finish() from another thread must then end both, with every row written."""
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "10")
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "40")
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run._flush_lock.acquire()

    def logger() -> None:
        try:
            for i in range(10**6):
                run.log({"x": float(i)})
        except localrun.UsageError:  # "run is finished": the end of this thread's logging
            pass

    th = threading.Thread(target=logger)
    th.start()
    deadline = time.monotonic() + 60
    while run._waits == 0 and time.monotonic() < deadline:  # until log() waits for room
        time.sleep(0.01)
    finisher = threading.Thread(target=run.finish)
    finisher.start()
    run._flush_lock.release()
    finisher.join(timeout=120)
    th.join(timeout=120)
    assert not finisher.is_alive() and not th.is_alive()
    assert run._waits > 0
    steps = _steps(root)
    assert steps == list(range(len(steps))) and len(steps) >= 40
    assert localrun.Api(root).run("p/r").state == "finished"


def test_sigterm_while_log_waits_for_the_writer_keeps_every_row(root: Path) -> None:
    """A preemption arrives while the main thread waits in log(): the process still unwinds,
    flushes and records the attempt preempted, with every row it logged."""
    proc = spawn(
        """
        import os, threading, time
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)

        def hold_the_writer():
            with run._flush_lock:  # the writer cannot write until the preemption arrives
                while not run._preempted:
                    time.sleep(0.01)

        threading.Thread(target=hold_the_writer, daemon=True).start()

        def report():
            while run._waits == 0:
                time.sleep(0.01)
            print("waiting", flush=True)

        threading.Thread(target=report, daemon=True).start()
        with run:
            for i in range(10**7):
                run.log({"x": float(i)})
        """,
        root,
        LOCALRUN_FLUSH_ROWS="10",
        LOCALRUN_BUFFER_ROWS="50",
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "waiting"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    stored = localrun.Api(root).run("p/r")
    assert stored.state == "preempted"
    steps = _steps(root)
    assert steps == list(range(len(steps))) and len(steps) >= 50


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:  # to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


@needs_root
def test_a_full_disk_never_blocks_log_and_refuses_rows_past_the_hard_cap(
    tmpfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer fails (ENOSPC): log() does not wait for it, warns once, buffers up to four
    times the bound, then raises StorageError for each further row; once space is freed every
    buffered row is written and log() works again."""
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "10")
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "50")
    run = localrun.init(project="p", id="r", dir=tmpfs, flush_interval=3600)
    run.log({"x": 0.0})
    run.flush()
    _fill(tmpfs / "filler")
    logged = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(localrun.StorageError, match="refused") as info:
            for i in range(1, 10_000):
                run.log({"x": float(i)})
                logged += 1
    assert "disk is full" in str(info.value) or "No space" in str(info.value)
    # The hard cap: 4 x 50 rows, plus the one batch (10 rows) the failed flush had already
    # converted into a table, which counts by its (much smaller) bytes.
    assert 4 * 50 <= logged <= 4 * 50 + 10 + 1
    cannot = [w for w in caught if "cannot keep up" in str(w.message)]
    assert len(cannot) == 1 and issubclass(cannot[0].category, localrun.LocalrunWarning)
    with pytest.raises(localrun.StorageError, match="refused"):
        run.log({"x": -1.0})  # still refused: nothing was written meanwhile
    (tmpfs / "filler").unlink()
    run.flush()  # the storage works again: every buffered row is written
    for i in range(logged, logged + 100):
        run.log({"x": float(i)})  # and log() takes rows again
    run.finish()
    assert _steps(tmpfs) == list(range(logged + 100))


def test_log_makes_room_itself_while_the_writer_is_held(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer is held (the flush lock taken, as a compaction's commit or a slow fsync
    holds it): a full buffer does not wait for it, log() converts the rows itself, so the rows
    bound holds, no call gives up on the writer (no "cannot keep up"), and every row is written
    once the writer goes on. Up to four times the rows bound in all (converted or not):
    past that, log() waits for the writer like any full buffer."""
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "50")
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "300")
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run._flush_lock.acquire()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Watch(run) as watch:
                _log_from_threads(run, 250, 2)  # 1,000 rows: under 4 x 300
    finally:
        run._flush_lock.release()
    assert run._waits > 0  # the buffer was full: each time, log() made the room itself
    assert watch.rows <= 300 + THREADS, watch.rows
    assert not [w for w in caught if "cannot keep up" in str(w.message)]
    assert run._converted_rows > 0 and not run._pending  # converted, nothing written yet
    run.finish()
    assert _steps(root) == list(range(THREADS * 250))


def test_a_loop_logging_faster_than_the_disk_still_commits(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each segment takes 10 ms to write, and one thread logs as fast as it can: the rows
    logged before a flush began are committed, not held back until the logging pauses
    (which a tight loop never does). Before the fix the writer wrote segment after segment
    for the rows a waiting log() kept adding and committed nothing: a crash lost it all."""
    from localrun._store import segments

    write = segments.write

    def slow_write(*args: object, **kwargs: object) -> object:
        time.sleep(0.01)
        return write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(segments, "write", slow_write)
    monkeypatch.setenv("LOCALRUN_FLUSH_ROWS", "1000")
    monkeypatch.setenv("LOCALRUN_BUFFER_ROWS", "4000")
    monkeypatch.setenv("LOCALRUN_BUFFER_MB", "1")  # a flush holds about 40,000 rows at most
    run = localrun.init(project="p", id="r", dir=root, flush_interval=0.05)
    seen: list[int] = []  # the committed steps a reader sees while the loop goes on
    deadline = time.monotonic() + 120  # generous: three commits take well under a second
    i = 0
    while len(seen) < 3 and time.monotonic() < deadline:
        run.log({"x": float(i)})
        i += 1
        if i % 5_000 == 0:
            steps = len(_steps(root)) if localrun.Api(root).run("p/r").rev > 1 else 0
            if steps and (not seen or steps > seen[-1]):
                seen.append(steps)
    assert len(seen) == 3, f"a reader saw commits at {seen} after {i:,} rows"
    run.finish()
    assert _steps(root) == list(range(i))


def test_the_writer_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow's ``pa.array`` imports pandas on its first call (0.3 s quiet, over 1 s loaded,
    holding the GIL and pyarrow's import lock); in the writer that import landed in the first
    flush of a tight loop, and a ``log()`` waiting for room waited for it. Flushes, sparse keys,
    system samples, compaction, a resume and a rewind must all build their columns without it.
    """
    import importlib.util

    assert importlib.util.find_spec("pandas") is not None, "the dev extra installs pandas"
    code = """
        import sys, localrun
        run = localrun.init(project="p", id="r")
        for i in range(3000):
            run.log({"a": float(i), "b": i} if i % 3 else {"a": None, "c": 1.5})
        run.finish()
        run = localrun.init(project="p", id="r", resume="must", rewind_to=1999)
        for i in range(3000):
            run.log({"a": 0.5, "b": None})
        run.finish()
        run = localrun.init(project="p", id="r", resume="must")  # compacts what is left
        run.finish()
        print("pandas imported" if "pandas" in sys.modules else "no pandas")
    """
    env = {
        "LOCALRUN_FLUSH_ROWS": "100",
        "LOCALRUN_BUFFER_ROWS": "200",
        "LOCALRUN_COMPACT_FANOUT": "2",
        "LOCALRUN_SYSTEM_INTERVAL": "0.01",
    }
    done = run_py(code, tmp_path, timeout=120, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no pandas"
    table = localrun.Api(tmp_path).run("p/r").history(["a", "b", "c"])
    a, b, c = (table.column(k).to_pylist() for k in "abc")
    steps = table.column("_step").to_pylist()
    assert steps == list(range(5000))
    # Attempt 1's rows below the rewind point, with their nulls where a key was absent or None.
    assert (a[3], b[3], c[3]) == (None, None, 1.5)
    assert (a[4], b[4], c[4]) == (4.0, 4.0, None)
    assert a[-1] == 0.5 and b[-1] is None
    assert localrun.Api(tmp_path).run("p/r").history(stream="system").num_rows > 0
