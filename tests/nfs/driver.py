"""Roles for the NFS tests (tests/nfs/suite.sh runs them on two client hosts of one export).

Python starts slowly in the emulated VM (about 10 s to import localrun), so each host imports
once and forks its racers: real, separate processes that start at once.

    driver.py kind ROOT                  print the mutex kind chosen for ROOT's mount
    driver.py create ROOT                create run p/r with 3 rows
    driver.py race ROOT N OUT GO         fork N processes that resume p/r when GO exists
    driver.py writer ROOT OUT            own p/r and log "A" rows until superseded or killed
    driver.py takeover ROOT OUT          resume p/r (waiting out the lease), log 5 "B" rows
    driver.py check-race OUT N           exactly one of N racers won, the rest got RunInUseError
    driver.py check-takeover ROOT OUT    steps contiguous, no "A" row after B's first step
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import localrun
from localrun._store.locks import lock_kind

HOST = socket.gethostname()


def _say(out: Path, name: str, data: dict[str, object]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, out / name)


def kind(root: str) -> None:
    Path(root).mkdir(parents=True, exist_ok=True)
    print(lock_kind(Path(root)))


def create(root: str) -> None:
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(3):
            run.log({"who": 0.0, "i": float(i)})


def race(root: str, n: str, out: str, go: str) -> None:
    pids = []
    for _ in range(int(n)):
        pid = os.fork()
        if pid == 0:
            while not os.path.exists(go):
                time.sleep(0.005)
            try:
                run = localrun.init(project="p", id="r", resume="must", dir=root)
            except localrun.RunInUseError as exc:
                _say(Path(out), f"{HOST}-{os.getpid()}", {"result": "inuse", "msg": str(exc)})
                os._exit(0)
            _say(Path(out), f"{HOST}-{os.getpid()}", {"result": "won", "attempt": run.attempt})
            time.sleep(float(os.environ.get("HOLD", "20")))  # hold it while the others look
            run.finish()
            os._exit(0)
        pids.append(pid)
    _say(Path(out), f"ready-{HOST}", {})
    for pid in pids:
        os.waitpid(pid, 0)


def writer(root: str, out: str) -> None:
    run = localrun.init(project="p", id="r", resume="allow", dir=root, flush_interval=0.5)
    i = 0
    try:
        while True:
            run.log({"who": 1.0, "i": float(i)})
            i += 1
            if i == 20:
                run.flush()
                _say(Path(out), "writer-ready", {"step": run.step})
            time.sleep(0.02)
    except localrun.RunSupersededError as exc:
        _say(Path(out), "writer-superseded", {"msg": str(exc)})
        sys.exit(6)


def takeover(root: str, out: str) -> None:
    t0 = time.monotonic()
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    waited = time.monotonic() - t0
    start = run.step
    for _ in range(5):
        run.log({"who": 2.0})
    run.finish()
    _say(Path(out), "takeover", {"waited": waited, "start": start, "attempt": run.attempt})
    print(f"{HOST}: took over after {waited:.1f}s at step {start}, attempt {run.attempt}")


def check_race(out: str, n: str) -> None:
    results = [
        json.loads(p.read_text())
        for p in Path(out).iterdir()
        if p.name.startswith(("hostA-", "hostB-"))
    ]
    won = [r for r in results if r["result"] == "won"]
    inuse = [r for r in results if r["result"] == "inuse"]
    assert len(results) == int(n), f"{len(results)} outcomes of {n} racers"
    assert len(won) == 1, f"{len(won)} winners: {won}"
    assert len(inuse) == int(n) - 1 and all("in use by host" in r["msg"] for r in inuse)
    print(f"race: 1 winner, {len(inuse)} RunInUseError")


def check_takeover(root: str, out: str) -> None:
    info = json.loads((Path(out) / "takeover").read_text())
    stored = localrun.Api(root).run("p/r")
    table = stored.history(["who"])
    steps, who = table.column("_step").to_pylist(), table.column("who").to_pylist()
    assert steps == list(range(len(steps))), "a hole in the committed steps"
    assert set(who[info["start"] :]) == {2.0}, "the old owner committed after the takeover"
    assert stored.attempts[-2]["state"] == "crashed", stored.attempts
    assert stored.attempts[-1]["state"] == "finished", stored.attempts
    ttl = float(os.environ["LOCALRUN_LEASE_TTL"])
    assert info["waited"] >= ttl * 0.9, f"took over after {info['waited']:.1f}s < TTL {ttl}"
    print(
        f"takeover: after {info['waited']:.1f}s (TTL {ttl}), {len(steps)} steps, old owner fenced"
    )


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    {
        "kind": kind,
        "create": create,
        "race": race,
        "writer": writer,
        "takeover": takeover,
        "check-race": check_race,
        "check-takeover": check_takeover,
    }[role](*args)
