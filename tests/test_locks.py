"""The courtesy mutex on local disk: the strict fallback (NFS nolock's) and the bounds on waits.

The NFS suite (make test-nfs) runs these on real NFS; here they run on every `make test`, with
``LOCALRUN_LOCK=strict`` forcing filelock's StrictSoftFileLock where flock would be chosen.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from pathlib import Path

import pytest

import localrun
from localrun._store.locks import manifest_mutex
from localrun._store.options import StoreOptions
from tests.conftest import run_py, spawn
from tests.test_lease import _existing, race_to_resume


@pytest.mark.slow
def test_strict_mutex_races_have_one_winner(root: Path, tmp_path: Path) -> None:
    _existing(root)
    codes = race_to_resume(root, tmp_path, 12, LOCALRUN_LOCK="strict")
    assert codes.count(5) == 11, codes
    assert [a["attempt"] for a in localrun.Api(root).run("p/r").attempts] == [1, 2]


DIES_HOLDING_THE_STRICT_CLAIM = """
import os, signal
from pathlib import Path
from localrun._store.locks import manifest_mutex
from localrun._store.options import StoreOptions
with manifest_mutex(Path(os.environ["LOCK"]), StoreOptions(lock_kind="strict")) as held:
    assert held
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dies inside: its claim stays on disk
"""


def test_a_dead_holders_strict_claim_is_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock = tmp_path / "manifest.lock"
    child = run_py(DIES_HOLDING_THE_STRICT_CLAIM, tmp_path, LOCK=str(lock))
    assert child.returncode == -signal.SIGKILL and "holding" in child.stdout
    assert list((tmp_path / "manifest.lock.filelock").iterdir())  # the claim is left behind
    opts = StoreOptions(lock_kind="strict", mutex_wait=30.0)
    caplog.set_level(logging.WARNING, logger="localrun")
    with manifest_mutex(lock, opts) as held:
        assert held  # broken on proof (this host, its pid gone), not after the wait ran out
    assert "breaking the manifest lock claim" in caplog.text and "process is gone" in caplog.text


STOPS_HOLDING_THE_STRICT_CLAIM = DIES_HOLDING_THE_STRICT_CLAIM.replace("SIGKILL", "SIGSTOP")


def test_a_stopped_holders_strict_claim_is_broken_after_the_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Alive but stopped (SIGSTOP, or a hung host): no proof it is gone, so its claim is broken
    once it sat unchanged for ``stale_claim`` seconds on this process's monotonic clock."""
    lock = tmp_path / "manifest.lock"
    child = spawn(STOPS_HOLDING_THE_STRICT_CLAIM, tmp_path, LOCK=str(lock))
    assert child.stdout is not None and child.stdout.readline().strip() == "holding"
    opts = StoreOptions(lock_kind="strict", mutex_wait=30.0, stale_claim=0.5)
    caplog.set_level(logging.WARNING, logger="localrun")
    try:
        with manifest_mutex(lock, opts) as held:
            assert held
        assert "it has not moved for" in caplog.text
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait()


HOLDS_THE_FLOCK = """
import fcntl, os, time
fd = os.open(os.environ["LOCK"], os.O_RDONLY)  # a reader that can only read the run
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(3600)
"""


@pytest.mark.slow
def test_a_reader_holding_the_flock_cannot_stall_the_writer(root: Path) -> None:
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"x": 0.0})
    run.flush()
    lock = run.dir / "manifest.lock"
    holder = spawn(HOLDS_THE_FLOCK, root, LOCK=str(lock))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    for i in range(1, 21):  # twenty commits with the lock held by someone else all along
        run.log({"x": float(i)})
        run.flush()
    elapsed = time.monotonic() - started
    run.finish()
    holder.kill()
    holder.wait()
    # the first commit waits the bound (5 s by default), the others a short one each: never
    # a wait per commit of the full bound, never forever (generous bound for a loaded machine)
    assert elapsed < 5.0 + 20 * 1.0 + 30.0, elapsed
    assert localrun.Api(root).run("p/r").history(["x"]).num_rows == 21


def test_lock_wait_is_bounded_and_the_commit_still_lands(tmp_path: Path) -> None:
    lock = tmp_path / "manifest.lock"
    lock.touch()
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held by this very process through another descriptor
    try:
        with manifest_mutex(lock, StoreOptions(lock_kind="flock", mutex_wait=0.3)) as held:
            assert not held  # the wait ran out: proceed without it
    finally:
        os.close(fd)
    with manifest_mutex(lock, StoreOptions(lock_kind="flock", mutex_wait=0.3)) as held:
        assert held
