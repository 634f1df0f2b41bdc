"""The end of a process: exit never loses rows, finish() is retryable, a forked child never
writes its parent's run, and liveness is judged right across pid namespaces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import localrun
from tests.conftest import child_env, run_py, spawn, track
from tests.test_bad_input import needs_root

ROWS = 300_000

BIG_FINAL_FLUSH = f"""
import localrun
run = localrun.init(project="p", id="r", flush_interval=3600)
for i in range({ROWS}):
    run.log({{"x": float(i), "y": float(i), "z": float(i)}})
print("ready", flush=True)
import time
while True:
    time.sleep(1)
"""


@pytest.mark.slow
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_repeated_signals_during_the_exit_flush_lose_nothing(
    root: Path, second: signal.Signals
) -> None:
    """What scancel and systemctl stop do: TERM, and TERM (or Ctrl-C) again while exiting."""
    proc = spawn(BIG_FINAL_FLUSH, root, LOCALRUN_FLUSH_ROWS=str(10 * ROWS))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    sent = 0
    while proc.poll() is None and sent < 400:  # keep signalling while it flushes
        time.sleep(0.005)
        proc.send_signal(second)
        sent += 1
    proc.communicate(timeout=120)
    assert sent > 0, "the process exited before a second signal could be sent"
    stored = localrun.Api(root).run("p/r")
    assert stored.history(["x"]).num_rows == ROWS
    assert stored.state == "preempted"
    # 143 from the first SIGTERM; or, once the flush is done and Python has put its default
    # handlers back while shutting down, one of the signals still being sent ends it
    assert proc.returncode in (128 + signal.SIGTERM, -second), proc.returncode


@needs_root
def test_finish_is_retryable_after_a_full_disk(tmpfs: Path) -> None:
    run = localrun.init(project="p", id="r", dir=tmpfs, flush_interval=3600)
    run.log({"x": 0.0})
    run.flush()
    for i in range(1, 2000):
        run.log({"x": float(i), "pad": "y" * 100})
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(localrun.StorageError):
        run.finish()
    assert localrun.Api(tmpfs).run("p/r").state == "running"  # not recorded as ended
    filler.unlink()
    run.finish()  # the retry commits everything
    run.finish()  # and a third call does nothing
    stored = localrun.Api(tmpfs).run("p/r")
    assert stored.state == "finished"
    assert stored.history(["x"]).column("x").to_pylist() == [float(i) for i in range(2000)]
    assert localrun.run is None


FORKING = """
import os, sys, localrun
run = localrun.init(project="p", id="r", flush_interval=0.05)
for i in range(100):
    run.log({"x": float(i)})
run.flush()
pid = os.fork()
if pid == 0:  # a DataLoader worker, say
    try:
        run.log({"x": -1.0})
        run.flush()
    except localrun.UsageError as exc:
        print("child refused:", exc, flush=True)
        os._exit(0)
    os._exit(1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
for i in range(100, 200):
    run.log({"x": float(i)})
run.finish()
print("parent finished", flush=True)
"""


def test_a_forked_child_never_writes_its_parents_run(root: Path) -> None:
    result = run_py(FORKING, root, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "child refused:" in result.stdout and "forked" in result.stdout
    assert "parent finished" in result.stdout
    stored = localrun.Api(root).run("p/r")
    assert stored.history(["x"]).column("x").to_pylist() == [float(i) for i in range(200)]
    assert stored.state == "finished" and len(stored.attempts) == 1


OWNER_IN_NAMESPACE = """
import os, time, localrun
run = localrun.init(project="p", id="r", flush_interval=0.05)
print("ready", os.getpid(), flush=True)
while not os.path.exists(os.environ["STOP_FILE"]):
    run.log({"x": 1.0})
    time.sleep(0.01)
run.finish()
"""


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_a_live_owner_in_another_pid_namespace_is_not_taken_over(
    root: Path, tmp_path: Path
) -> None:
    """docker with host networking: same host name, same boot, other pids."""
    stop = tmp_path / "stop"
    code = "import localrun\n" + textwrap.dedent(OWNER_IN_NAMESPACE)
    env = child_env(root, STOP_FILE=str(stop), LOCALRUN_LEASE_TTL="3")
    proc = track(
        subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[0] == "ready", proc.stderr.read() if proc.stderr else ""
    assert int(line[1]) < 10  # it is pid 1 or so in its own namespace
    owner = localrun.Api(root).run("p/r").manifest["owner"]
    assert owner["pid_ns"] != os.readlink("/proc/self/ns/pid")
    started = time.monotonic()
    with pytest.raises(localrun.RunInUseError, match="heartbeat moved"):
        localrun.init(project="p", id="r", resume="must", dir=root, flush_interval=0.05)
    assert time.monotonic() - started > 0.3  # it watched the heartbeat; it did not judge a pid
    stop.touch()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert localrun.Api(root).run("p/r").state == "finished"


def test_resume_auto_after_a_failed_attempt_names_the_way_out(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALRUN_RESUME_KEY", "job-7")
    run = localrun.init(project="p", resume=True, dir=root, config={"lr": 0.1})
    run.finish(1)  # the attempt failed: the marker stays, the next start resumes
    with pytest.raises(localrun.UsageError) as info:
        localrun.init(project="p", resume=True, dir=root, config={"lr": 0.2})
    text = str(info.value)
    assert "localrun markers clear key-job-7 --project p" in text
    assert "LOCALRUN_RESUME_KEY=<new key>" in text
    from tests.test_cli import cli

    cleared = cli(root, "markers", "clear", "key-job-7", "--project", "p")
    assert cleared.returncode == 0, cleared.stderr
    fresh = localrun.init(project="p", resume=True, dir=root, config={"lr": 0.2})
    assert not fresh.resumed and fresh.id != run.id
    fresh.finish()


def test_resume_allow_without_an_id_warns_it_can_never_resume(root: Path) -> None:
    with pytest.warns(localrun.LocalrunWarning, match="can never resume"):
        run = localrun.init(project="p", resume="allow", dir=root)
    run.finish()


def test_writing_and_reading_runs_start_no_arrow_thread_pool(tmp_path: Path) -> None:
    """A process in which Arrow started one of its thread pools aborts at exit now and then,
    "terminate called without an active exception" (apache/arrow#34314; seen here in the
    demo's process and a resumed job's): exit code 134, a failed job to its scheduler. So
    writing (flushes, system samples, compaction, a resume with a rewind) and reading (history,
    every attempt, system samples, verify) start no native thread: once the run's own threads
    end, the process has the threads it had after ``import pyarrow``. The same count sees the
    pools pyarrow's dataset reader starts, so it would see ours."""
    code = """
        import os, threading, time
        import pyarrow.parquet as pq
        import localrun

        def native_threads():
            while threading.active_count() > 1:  # the run's own threads, ending after finish
                time.sleep(0.01)
            return len(os.listdir("/proc/self/task"))

        before = native_threads()
        for attempt, rewind in ((1, None), (2, None), (3, 1500)):
            with localrun.init(project="p", id="r", resume="allow", rewind_to=rewind,
                               system_metrics=0.01) as run:
                for i in range(1000):
                    run.log({"a": float(i), "b": i} if i % 5 else {"c": 1.0})
        written = native_threads()
        stored = localrun.Api().run("p/r")
        stored.history(), stored.history(all_attempts=True), stored.history(stream="system")
        (report,) = localrun.Api().verify("p/r")
        read = native_threads()
        pq.read_table(os.path.join(os.environ["LOCALRUN_DIR"], "p", "r", "history"))
        print(before, written, read, native_threads(), report.ok)
    """
    env = {"LOCALRUN_COMPACT_FANOUT": "2", "LOCALRUN_FLUSH_ROWS": "200"}
    done = run_py(code, tmp_path, timeout=120, **env)
    assert done.returncode == 0, done.stderr
    before, written, read, control, ok = done.stdout.split()
    assert ok == "True"
    assert (written, read) == (before, before)
    assert int(control) > int(before), "the count must see a pool when one is started"
