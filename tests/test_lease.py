"""One owner per run (DESIGN §5), with real processes: races, takeovers, fencing."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import localrun
from localrun._store import manifest as mf
from tests.conftest import spawn, start_at_barrier

RACER = """
try:
    run = localrun.init(project="p", id="r", resume="must")
except localrun.RunInUseError as exc:
    print("inuse", exc, flush=True)
    sys.exit(5)
print("won", run.attempt, flush=True)
# Hold the run until every loser has tried: the test removes the hold file then.
while os.path.exists(os.environ["HOLD_FILE"]):
    time.sleep(0.01)
run.finish()
"""


def race_to_resume(root: Path, tmp_path: Path, n: int, **env: str) -> list[int]:
    """``n`` processes at a real barrier resume one run at once; the winner holds the run until
    every loser has been refused. Returns their exit codes (0 won, 5 refused)."""
    go, hold = tmp_path / "go", tmp_path / "hold"
    hold.touch()
    procs = start_at_barrier(RACER, n, root, go, LOCALRUN_LEASE_TTL="5", HOLD_FILE=str(hold), **env)
    go.touch()
    deadline = time.monotonic() + 120
    while sum(p.poll() is not None for p in procs) < n - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    hold.unlink()
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    losers = [o[0] for o, c in zip(outs, codes, strict=True) if c == 5]
    assert all(
        "in use by host" in text and "pid" in text and "force=True" in text for text in losers
    ), losers
    assert codes.count(0) == 1, (codes, [o[1][-300:] for o in outs])
    return codes


def _existing(root: Path) -> None:
    with localrun.init(project="p", id="r", dir=root) as run:
        run.log({"x": 1.0})


@pytest.mark.slow
def test_twenty_processes_racing_to_resume_exactly_one_wins(root: Path, tmp_path: Path) -> None:
    _existing(root)
    codes = race_to_resume(root, tmp_path, 20)
    assert codes.count(5) == 19
    stored = localrun.Api(root).run("p/r")  # the manifest is valid JSON and tells one story
    assert [a["attempt"] for a in stored.attempts] == [1, 2]
    assert stored.state == "finished"


def test_dead_owner_on_this_host_is_taken_over_at_once(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = spawn(
        """
        import os, signal, localrun
        run = localrun.init(project="p", id="r", flush_interval=0.05)
        run.log({"x": 1.0})
        run.flush()
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """,
        root,
    )
    proc.wait()
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    assert "watching the heartbeat" not in caplog.text  # no waiting: the pid is provably gone
    assert "its owner's process is gone" in caplog.text
    assert run.attempt == 2 and run.step == 1
    run.finish()
    assert [a["state"] for a in localrun.Api(root).run("p/r").attempts] == ["crashed", "finished"]


def _fake_owner(root: Path, host: str, ttl: float) -> None:
    """Record the run as owned by a process on another host that died (its heartbeat is frozen):
    a revision committed as that process's last one would have been."""

    def owned(m: mf.Manifest) -> None:
        m["owner"] = {
            "host": host,
            "boot_id": "x",
            "pid": 1234567,
            "proc_start": "1",
            "token": "dead",
            "attempt": 1,
            "hb_seq": 41,
            "hb_time": time.time(),
            "ttl_s": ttl,
        }
        m["state"] = "running"
        m["attempts"][-1]["state"] = "running"

    mf.update(root / "p" / "r", owned)


def test_frozen_heartbeat_of_another_host_is_taken_over_after_its_ttl(root: Path) -> None:
    _existing(root)
    _fake_owner(root, "node-that-died", ttl=1.5)
    t0 = time.monotonic()
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    waited = time.monotonic() - t0
    assert 1.5 <= waited < 60.0  # the TTL on this clock; the upper bound only catches a hang
    assert run.attempt == 2
    run.finish()
    assert localrun.Api(root).run("p/r").attempts[0]["state"] == "crashed"


def test_force_takes_over_without_waiting(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    _existing(root)
    _fake_owner(root, "node-that-died", ttl=600)
    run = localrun.init(project="p", id="r", resume="must", dir=root, force=True)
    assert run.attempt == 2 and "forced" in caplog.text
    assert "watching the heartbeat" not in caplog.text


def test_live_owner_on_another_host_is_refused(root: Path) -> None:
    """A real writer whose heartbeat moves, recorded under another host name.

    The TTL is long enough that a loaded 2-core machine cannot starve the writer's heartbeat
    for all of it (a starved heartbeat is, correctly, a dead owner)."""
    TTL = 6.0
    proc = spawn(
        """
        import time, localrun._store.lease as lease
        lease.HOST = "other-node"          # this process plays a second machine
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=0.1)
        print("ready", flush=True)
        for i in range(200):
            run.log({"x": float(i)})
            time.sleep(0.05)
    """,
        root,
        LOCALRUN_LEASE_TTL=str(TTL),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    try:
        # refused because the heartbeat moved (a TTL that ran out would have taken it over)
        with pytest.raises(localrun.RunInUseError, match="host other-node.*heartbeat moved"):
            localrun.init(project="p", id="r", resume="must", dir=root)
    finally:
        proc.kill()
        proc.wait()


def _wait_stopped(pid: int) -> None:
    """SIGSTOP is delivered asynchronously: wait until the kernel reports the process stopped."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} did not stop")


def test_fencing_a_writer_that_hung_and_woke_up_commits_nothing_more(root: Path) -> None:
    proc = spawn(
        """
        import time, localrun
        run = localrun.init(project="p", id="r", flush_interval=0.05)
        print("ready", flush=True)
        i = 0
        try:
            while True:
                run.log({"who": 1.0, "i": float(i)})
                i += 1
                time.sleep(0.01)
        except localrun.RunSupersededError as exc:
            print("superseded", exc, flush=True)
            raise SystemExit(6)
    """,
        root,
        LOCALRUN_LEASE_TTL="1.0",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 30  # let A commit some rows first (slow under load)
    while localrun.Api(root).run("p/r").last_step < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # the node hangs (an NFS stall, a frozen VM)
    _wait_stopped(proc.pid)
    try:
        t0 = time.monotonic()
        run = localrun.init(project="p", id="r", resume="must", dir=root)
        assert time.monotonic() - t0 >= 1.0  # its heartbeat had to stand still for the TTL
        start = run.step
        for _ in range(5):
            run.log({"who": 2.0})
        run.flush()
    finally:
        proc.send_signal(signal.SIGCONT)  # it wakes up and carries on
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 6, err
    assert "superseded" in out
    run.log({"who": 2.0})
    run.finish()
    stored = localrun.Api(root).run("p/r")
    table = stored.history(["who"])
    steps, who = table.column("_step").to_pylist(), table.column("who").to_pylist()
    assert steps == list(range(len(steps)))
    assert set(who[:start]) == {1.0} and set(who[start:]) == {2.0}  # nothing of A after takeover
    assert [a["state"] for a in stored.attempts] == ["crashed", "finished"]
    # A's last flush may have left an uncommitted segment: verify sets it aside, never adopts it
    localrun.Api(root).verify("p/r", repair=True)
    assert localrun.Api(root).verify("p/r")[0].ok
    assert localrun.Api(root).run("p/r").history(["who"]).column("who").to_pylist() == who
