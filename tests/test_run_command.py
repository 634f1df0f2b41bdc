"""`localrun run`: sets the variables, forwards signals and the exit code, retries a killed job."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import localrun
from tests.conftest import child_env, track
from tests.test_cli import EXE


def _wrapper(root: Path, args: list[str], script: str, **env: str) -> subprocess.Popen[str]:
    path = root.parent / "job.py"
    path.write_text(textwrap.dedent(script))
    return track(
        subprocess.Popen(
            [EXE, "--root", str(root), "run", *args, "--", sys.executable, str(path)],
            env=child_env(root, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def test_sets_variables_and_forwards_the_exit_code(root: Path) -> None:
    proc = _wrapper(
        root,
        ["--resume", "allow", "--id", "job-1", "--project", "vision"],
        """
        import os, sys
        print(os.environ["LOCALRUN_RESUME"], os.environ["LOCALRUN_RUN_ID"],
              os.environ["LOCALRUN_PROJECT"], os.environ["LOCALRUN_DIR"])
        sys.exit(7)
    """,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert out.split() == ["allow", "job-1", "vision", str(root)]


def test_must_without_an_id_is_refused(root: Path) -> None:
    proc = _wrapper(root, ["--resume", "must"], "print('never runs')")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "needs --id" in err and not out


def test_sigterm_reaches_the_job_which_records_preemption(root: Path) -> None:
    proc = _wrapper(
        root,
        ["--resume", "allow", "--id", "pre"],
        """
        import time, localrun
        run = localrun.init(project="p")
        print("ready", flush=True)
        i = 0
        while True:
            run.log({"x": float(i)}); i += 1; time.sleep(0.001)
    """,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # the scheduler preempts the job: it signals the wrapper
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    stored = localrun.Api(root).run("p/pre")
    assert stored.state == "preempted" and stored.history().num_rows > 0


def test_retries_relaunch_a_killed_job_and_resume_its_run(root: Path) -> None:
    proc = _wrapper(
        root,
        ["--retries", "3"],
        """
        import os, signal, localrun
        run = localrun.init(project="p", flush_interval=0.05)
        print(run.id, run.attempt, run.step, flush=True)
        for step in range(run.step, 30):
            run.log({"x": float(step)})
            if step in (9, 19) and run.attempt <= 2:
                run.flush()
                os.kill(os.getpid(), signal.SIGKILL)   # preempted without warning, twice
    """,
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = [line.split() for line in out.splitlines()]
    assert [(attempt, step) for _, attempt, step in lines] == [("1", "0"), ("2", "10"), ("3", "20")]
    assert len({run_id for run_id, _, _ in lines}) == 1
    assert err.count("relaunching") == 2
    stored = localrun.Api(root).run(f"p/{lines[0][0]}")
    assert stored.history().column("_step").to_pylist() == list(range(30))
    assert [a["state"] for a in stored.attempts] == ["crashed", "crashed", "finished"]


def test_retries_stop_at_the_limit_and_on_plain_failures(root: Path) -> None:
    killed = _wrapper(
        root, ["--retries", "1"], "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == 137 and err.count("relaunching") == 1
    failing = _wrapper(root, ["--retries", "3"], "raise SystemExit(1)")
    _, err = failing.communicate(timeout=60)
    assert failing.returncode == 1 and "relaunching" not in err  # a bug is not a preemption
