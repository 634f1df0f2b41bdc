"""Console capture: stdout and stderr reach the terminal unchanged and the run, across attempts,
SIGKILL (up to the last flush) and SIGTERM; bounded in memory and on disk."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import localrun
from tests.conftest import REPO, child_env, run_py, spawn, track
from tests.test_cli import cli

WRITER = """
import os, signal, sys, localrun
run = localrun.init(project="c", id="r", resume="allow", flush_interval=3600)
print(f"out of attempt {run.attempt}")
print(f"err of attempt {run.attempt}", file=sys.stderr)
sys.stdout.flush()
run.log({"x": 1.0})
run.flush()
print("after the last flush: lost to the kill")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_output_reaches_the_terminal_and_the_run_up_to_the_last_flush(root: Path) -> None:
    for attempt in (1, 2):
        out = run_py(WRITER, root)
        assert out.returncode == -signal.SIGKILL
        assert f"out of attempt {attempt}\n" in out.stdout  # the terminal still sees it all
        assert "after the last flush" in out.stdout
        assert f"err of attempt {attempt}\n" in out.stderr
    run = localrun.Api(root).run("c/r")
    text = run.console()
    assert text.count("=== localrun: attempt 1 on ") == 1
    assert text.count("=== localrun: attempt 2 on ") == 1
    assert "out of attempt 1\nerr of attempt 1\n" in text
    assert text.index("attempt 1\n") < text.index("=== localrun: attempt 2")
    assert "lost to the kill" not in text
    assert run.console(attempt=2).startswith("=== localrun: attempt 2")
    assert "attempt 1" not in run.console(attempt=2).split("\n", 1)[1]
    shown = cli(root, "logs", "c/r", "--attempt", "1")
    assert shown.returncode == 0, shown.stderr
    assert "out of attempt 1" in shown.stdout and "attempt 2" not in shown.stdout


def test_sigterm_flushes_the_output(root: Path) -> None:
    proc = spawn(
        """
        import sys, time, localrun
        run = localrun.init(project="c", id="t", flush_interval=3600)
        print("working", flush=True)
        while True:
            time.sleep(0.01)
        """,
        root,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "working\n"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    run = localrun.Api(root).run("c/t")
    assert run.state == "preempted"
    assert "working\n" in run.console()


def test_console_off_leaves_the_streams_alone(root: Path) -> None:
    code = """
    import sys, localrun
    before = sys.stdout
    run = localrun.init(project="c", id="{id}", {arg})
    assert sys.stdout is before
    print("hello")
    run.finish()
    """
    assert run_py(code.format(id="a", arg="console=False"), root).returncode == 0
    env = {"LOCALRUN_CONSOLE": "0"}
    assert run_py(code.format(id="b", arg="dir=None"), root, **env).returncode == 0
    for rid in ("a", "b"):
        run = localrun.Api(root).run(f"c/{rid}")
        assert run.console() == "" and not (run.dir / "console").exists()


def test_rotation_keeps_the_newest_output_within_the_bound(root: Path) -> None:
    code = """
    import localrun
    run = localrun.init(project="c", id="rot", flush_interval=3600)
    for i in range(40):
        print(f"line {i:03d} " + "x" * 100)
        run.flush()
    run.finish()
    """
    out = run_py(code, root, LOCALRUN_CONSOLE_MAX_MB="0.001")  # 1,048 bytes
    assert out.returncode == 0, out.stderr
    run = localrun.Api(root).run("c/rot")
    chunks = run.console_chunks()
    assert sum(c["bytes"] for c in chunks) <= 1048
    assert "line 039" in run.console() and "line 000" not in run.console()
    on_disk = {f"console/{p.name}" for p in (run.dir / "console").iterdir()}
    assert on_disk == {c["file"] for c in chunks}, "rotated chunks were not removed"


def test_a_print_flood_between_flushes_stays_bounded(root: Path) -> None:
    code = """
    import os, sys, localrun
    run = localrun.init(project="c", id="flood", flush_interval=3600)
    with open(os.devnull, "w") as null:
        sys.stdout._inner = null  # keep the terminal out of it; the capture still sees all
        for i in range(300_000):
            print(f"{i:09d} " + "y" * 60)
    run.finish()
    """
    out = run_py(code, root, timeout=300)
    assert out.returncode == 0, out.stderr
    run = localrun.Api(root).run("c/flood")
    text = run.console()
    assert "characters of output dropped here" in text
    assert text.count("\n") < 200_000 and "000000000 " in text and "000299999 " in text
    assert sum(c["bytes"] for c in run.console_chunks()) <= 9 * 2**20


def test_logs_follow_prints_new_output_until_the_run_ends(root: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    writer = spawn(
        f"""
        import time, localrun
        from pathlib import Path
        run = localrun.init(project="c", id="live", flush_interval=0.05)
        print("first", flush=True)
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        print("second", flush=True)
        time.sleep(0.3)
        run.finish()
        """,
        root,
    )
    deadline = time.monotonic() + 60
    while (
        not localrun.Api(root).runs("c")
        or "first" not in localrun.Api(root).run("c/live").console()
    ):
        assert time.monotonic() < deadline and writer.poll() is None
        time.sleep(0.02)
    follower = track(
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "localrun"),
                "--root",
                str(root),
                "logs",
                "c/live",
                "-f",
                "--interval",
                "0.05",
            ],
            env=child_env(root),
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    assert follower.stdout is not None
    assert follower.stdout.readline().startswith("=== localrun: attempt 1")
    assert follower.stdout.readline() == "first\n"
    go.touch()
    assert follower.stdout.readline() == "second\n"
    follower.wait(timeout=60)  # it stops by itself once the run has ended
    writer.wait(timeout=60)
    assert follower.returncode == 0
    assert REPO.exists()
