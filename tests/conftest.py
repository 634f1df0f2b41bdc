"""Shared fixtures: an isolated root per test, and helpers to run real Python subprocesses."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import localrun

# Property tests check what is true, never how fast: no per-example deadline (a loaded 2-core CI
# machine would turn the default 200 ms into a flaky failure).
settings.register_profile("localrun", deadline=None)
settings.load_profile("localrun")

REPO = Path(__file__).resolve().parents[1]

# pytest imports this file as the module "conftest"; the tests import its helpers as
# "tests.conftest". Without this line those are two modules with two reaper lists: every process
# a test handed to track() (or spawn()) was never reaped, and each browser test left its
# `localrun ui` server running after the session.
sys.modules.setdefault("tests.conftest", sys.modules[__name__])

# Real servers started by the tests themselves (session fixtures): swift_s3.
pytest_plugins = ["tests.servers.swift"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOCALRUN_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("LOCALRUN_") or name in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_JOB_ID",
            "PBS_JOBID",
            "LSB_JOBID",
            "TORCHELASTIC_RUN_ID",
        ):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _finish_current():
    yield
    run = localrun.run
    if run is not None:
        with contextlib.suppress(localrun.LocalrunError, OSError):
            run.finish()
        if localrun.run is run:  # its finish failed for good (a test broke its folder)
            from localrun._run import hooks

            hooks.release(run)


_children: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_children():
    """A test that fails half way must not leave a writer looping forever behind it."""
    yield
    while _children:
        proc = _children.pop()
        if proc.poll() is None:
            proc.terminate()  # `localrun run` forwards it to its own child
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def track(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """Have the reaper end ``proc`` if the test leaves it running."""
    _children.append(proc)
    return proc


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 512 KiB filesystem of the test's own (needs root): to fill up, really."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def child_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALRUN_")}
    env["LOCALRUN_DIR"] = str(root)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def spawn(code: str, root: Path, **extra: str) -> subprocess.Popen[str]:
    """Start a real Python process running ``code`` (dedented) with the root in its env."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(root, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return track(proc)


def run_py(
    code: str, root: Path, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(root, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BARRIER = """
import os, sys, time
print("ready", flush=True)
while not os.path.exists(os.environ["GO_FILE"]):
    time.sleep(0.001)
"""


def start_at_barrier(
    code: str, n: int, root: Path, go: Path, timeout: float = 120, **extra: str
) -> list[subprocess.Popen[str]]:
    """Start ``n`` processes running ``code``; each imports, prints ``ready`` and waits for
    ``go`` to exist. Returns once every one of them is waiting (a real barrier, not a sleep), and
    prints how many were: the caller then releases them all at once with ``go.touch()``."""
    import selectors

    body = "import localrun\n" + BARRIER + textwrap.dedent(code)
    procs = [spawn(body, root, GO_FILE=str(go), **extra) for _ in range(n)]
    sel = selectors.DefaultSelector()
    for proc in procs:
        assert proc.stdout is not None
        sel.register(proc.stdout, selectors.EVENT_READ, proc)
    waiting = 0
    deadline = time.monotonic() + timeout
    while waiting < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only {waiting} of {n} contenders reached the barrier"
        for key, _ in sel.select(timeout=left):
            line = key.fileobj.readline()  # type: ignore[union-attr]
            assert line, f"a contender died before the barrier: {key.data.stderr.read()[-500:]}"
            assert line.strip() == "ready", line
            sel.unregister(key.fileobj)
            waiting += 1
    sel.close()
    print(f"barrier: {waiting} of {n} contenders were waiting when released")
    return procs
