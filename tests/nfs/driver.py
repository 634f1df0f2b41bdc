"""Roles for the NFS tests: ``tests/nfs/suite.sh`` runs them on two client hosts of one export.

Python starts slowly in the emulated VM (about 10 s to import localrun), so every role that is
timed imports first, says it is ready in a file under OUT (the VM's /tmp, shared by both hosts
and the server side), and waits there for a GO file: the suite releases it once everyone waits.

    create ROOT RUN                        create run p/RUN with 3 rows, finished
    race ROOT RUN N TOTAL OUT GO [make]    fork N racers that resume p/RUN when GO exists; the
                                           winner holds the run until all TOTAL racers reported;
                                           with ``make`` the parent creates p/RUN after forking
    writer ROOT RUN OUT [TRIGGER]          own p/RUN, log rows until superseded (exit 6) or
                                           killed; with TRIGGER, the first commit after TRIGGER
                                           exists stops the process (SIGSTOP) inside the mutex
    takeover ROOT RUN OUT GO               when GO exists, resume p/RUN (waiting out the lease),
                                           log 5 rows, finish; report the seconds it waited
    commit-loop ROOT RUN OUT GO SECS MODE [make]
                                           commit to p/RUN in a tight loop for SECS seconds,
                                           each commit adding 1 to a counter; MODE "mutex" (as
                                           shipped) or "cas" (no mutex at all: the CAS alone);
                                           with ``make``, create p/RUN first
    strict-commit ROOT RUN OUT [make-and-stop]
                                           one commit under the strict mutex; with
                                           make-and-stop, create p/RUN and stop (SIGSTOP)
                                           while publishing the filelock claim record
    sync-race ROOT URL OUT GO [make|again] run ``localrun sync --to URL --all`` (the CLI's own
                                           entry point, in this process) when GO exists; with
                                           ``make``, first write SYNC_RUNS runs under ROOT (one
                                           resumed: two attempts); with ``again``, once both
                                           syncers are done, sync once more without this
                                           root's sync cursors (so every run is asked of the
                                           remote), recording the remote's files around it
    check-race OUT TOTAL                   exactly one winner, TOTAL - 1 RunInUseError
    check-takeover ROOT RUN OUT MAXWAIT    B waited at most MAXWAIT s; steps contiguous; the old
                                           owner committed nothing after B took over
    check-counter ROOT RUN OUT             the counter equals the commits made, and every
                                           revision is its predecessor's counter + 1
    check-all SRV OUT STEP...              every step's check, one PASS/FAIL line per step

Exit status 1 with one ``FAIL:`` line when a check fails; a writer that is superseded exits 6.
"""

from __future__ import annotations

import faulthandler
import itertools
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import localrun
from localrun._store import atomic, layout, locks, ownership, revisions
from localrun._store import manifest as mf
from localrun._store.locks import lock_kind
from localrun._store.options import StoreOptions

HOST = socket.gethostname()
PROJECT = "p"
SUPERSEDED_EXIT = 6


class CheckFailed(Exception):
    """A property the suite checks does not hold on this NFS mount."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise CheckFailed(what)


def say(out: Path, name: str, data: dict[str, Any]) -> None:
    """Write a result file atomically (the suite waits for its name)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, out / name)


def read(out: Path, name: str) -> dict[str, Any]:
    data = json.loads((out / name).read_text())
    assert isinstance(data, dict)
    return data


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def run_dir(root: str, run: str) -> Path:
    return layout.run_dir(Path(root), PROJECT, run)


class Timers:
    """Where a role's time goes on NFS: count, total and worst seconds of a few store calls.

    Test instrumentation only (it wraps module attributes; behaviour is unchanged). Printed by
    the timed roles, so a slow takeover or commit says which step was slow.
    """

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def add(self, label: str, seconds: float) -> None:
        with self.lock:
            s = self.stats.setdefault(label, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += seconds
            s[2] = max(s[2], seconds)

    def wrap(self, module: Any, name: str, label: str) -> None:
        real = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return real(*args, **kwargs)
            finally:
                self.add(label, time.monotonic() - t0)

        setattr(module, name, timed)

    def install(self) -> None:
        self.wrap(revisions, "newest", "read newest")
        self.wrap(atomic, "publish_file", "create (link)")
        self.wrap(atomic, "replace_file", "replace hint")
        self.wrap(ownership, "check_newest_segment", "check segment")
        self.wrap(ownership, "adopt_orphans", "adopt orphans")
        real_mutex = locks.manifest_mutex

        @contextmanager
        def mutex(lock_path: Path, opts: StoreOptions) -> Iterator[bool]:
            t0 = time.monotonic()
            with real_mutex(lock_path, opts) as held:
                label = "mutex held after" if held else "mutex not held after"
                self.add(label, time.monotonic() - t0)
                yield held

        locks.manifest_mutex = mutex  # type: ignore[assignment]

    def report(self, who: str) -> str:
        parts = [
            f"{k} {int(n)}x max {mx:.2f}s total {tot:.1f}s"
            for k, (n, tot, mx) in self.stats.items()
        ]
        return f"{who} timings: " + "; ".join(parts)


# -- roles ------------------------------------------------------------------------------------
def create(root: str, run: str) -> None:
    with localrun.init(project=PROJECT, id=run, dir=root) as r:
        for i in range(3):
            r.log({"who": 0.0, "i": float(i)})


def race(root: str, run: str, n: str, total: str, out: str, go: str, make: str = "") -> None:
    """Fork the racers after the import, so they are real processes that start at once.

    With ``make`` (on one host only), the parent then creates the run the racers resume: the
    children are forked first, so no thread of that run is inherited across the fork.
    """
    print(f"{HOST}: mutex {lock_kind(Path(root))}, localrun from {Path(localrun.__file__).parent}")
    pids = []
    for _ in range(int(n)):
        pid = os.fork()
        if pid == 0:
            try:
                _racer(root, run, int(total), Path(out), Path(go))
            finally:
                os._exit(0)
        pids.append(pid)
    if make:
        create(root, run)
        say(Path(out), "created", {})
    for pid in pids:
        os.waitpid(pid, 0)


def _racer(root: str, run: str, total: int, out: Path, go: Path) -> None:
    me = f"{HOST}-{os.getpid()}"
    say(out, f"ready-{me}", {})  # imported, forked, and now waiting at the barrier
    if not wait_for(go, 600):
        return
    try:
        r = localrun.init(project=PROJECT, id=run, resume="must", dir=root)
    except localrun.RunInUseError as exc:
        say(out, f"result-{me}", {"result": "inuse", "msg": str(exc)})
        return
    except Exception as exc:  # reported, so the check names it, not a gap
        say(
            out,
            f"result-{me}",
            {"result": "error", "msg": f"{type(exc).__name__}: {exc}"},
        )
        return
    say(out, f"result-{me}", {"result": "won", "attempt": r.attempt})
    # Hold the run while the others look: until every racer reported (a loser on the other
    # host needs the heartbeat to move before it can tell this owner is alive).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if sum(p.name.startswith("result-") for p in out.iterdir()) >= total:
            break
        time.sleep(0.2)
    r.finish()


def _instrument(trigger: Path | None, out: Path, log: list[dict[str, Any]]) -> None:
    """Test instrumentation of the writer's own store calls (real signals, real files).

    Every revision this process commits is recorded. With ``trigger``, the first commit after
    the trigger file appears stops the whole process with a real SIGSTOP just before it creates
    its revision, i.e. inside ``manifest.update``'s mutex critical section (whether the mutex
    was held then is recorded too).
    """
    real_publish = revisions.publish
    real_mutex = locks.manifest_mutex
    state = threading.local()
    fired = threading.Lock()

    @contextmanager
    def mutex(lock_path: Path, opts: StoreOptions) -> Iterator[bool]:
        with real_mutex(lock_path, opts) as held:
            state.held = held
            try:
                yield held
            finally:
                state.held = False

    def publish(run_dir: Path, head: int, m: dict[str, Any]) -> int:
        woke = False
        if trigger is not None and trigger.exists() and fired.acquire(blocking=False):
            held = bool(getattr(state, "held", False))
            thread = threading.current_thread().name
            say(
                out,
                "writer-stopping",
                {"head": head, "mutex_held": held, "thread": thread},
            )
            os.kill(os.getpid(), signal.SIGSTOP)
            woke = True
        rev = real_publish(run_dir, head, m)
        log.append({"rev": rev, "after_stop": woke or fired.locked(), "t": time.time()})
        return rev

    revisions.publish = publish  # type: ignore[assignment]
    locks.manifest_mutex = mutex  # type: ignore[assignment]
    threading.Thread(target=_stall_reporter, args=(log,), daemon=True).start()


STALL_S = 6.0


def _stall_reporter(log: list[dict[str, Any]]) -> None:
    """Diagnostic: when the writer committed nothing for STALL_S seconds, print once where its
    localrun threads are (an owner that stops committing looks dead to the other host)."""
    started, reported = time.time(), 0.0
    while True:
        time.sleep(1.0)
        last = log[-1]["t"] if log else started
        if time.time() - last < STALL_S or reported == last:
            continue
        reported = last
        print(f"{HOST} writer: no commit for {time.time() - last:.0f}s; {_stacks()}", flush=True)


def _stacks() -> str:
    """Where the main and localrun threads are, innermost 4 frames each.

    Read with ``faulthandler.dump_traceback``, which walks every thread's frames in C without
    letting the GIL go. Walking them from Python (``sys._current_frames``, ``f_back``,
    ``traceback.extract_stack``, which reads source lines) lets other threads run between two
    frames, and on CPython 3.11 a frame object whose thread returned meanwhile can crash the
    process (python/cpython#99110; getsentry/sentry-python#2386). In the stop-in-mutex step
    this report fires just as the woken writer exits, and the writer exited with SIGSEGV (139)
    instead of 6 once in CI.
    """
    names = {t.ident: t.name for t in threading.enumerate()}
    with tempfile.TemporaryFile() as f:
        faulthandler.dump_traceback(f, all_threads=True)
        f.seek(0)
        text = f.read().decode(errors="replace")
    where = []
    for block in text.split("\n\n"):
        head, *frames = block.strip().splitlines() or [""]
        ident = re.search(r"Thread (0x[0-9a-f]+)", head)
        name = names.get(int(ident.group(1), 16), "") if ident else ""
        if not name.startswith(("localrun", "MainThread")):
            continue
        calls = re.findall(r"line (\d+) in (\S+)", "\n".join(frames[:4]))
        where.append(f"{name}: " + " <- ".join(f"{fn}:{line}" for line, fn in calls))
    return " | ".join(where)


def writer(root: str, run: str, out: str, trigger: str | None = None) -> None:
    o = Path(out)
    committed: list[dict[str, Any]] = []
    _instrument(Path(trigger) if trigger else None, o, committed)
    r = localrun.init(project=PROJECT, id=run, resume="allow", dir=root, flush_interval=0.5)
    i = 0
    try:
        while True:
            r.log({"who": 1.0, "i": float(i)})
            i += 1
            if i == 20:
                r.flush()
                info = {"pid": os.getpid(), "token": r._token, "attempt": r.attempt}
                say(o, "writer-ready", info | {"step": r.step})
            time.sleep(0.02)
    except localrun.RunSupersededError as exc:
        late = [c for c in committed if c["after_stop"]]
        say(o, "writer-superseded", {"msg": str(exc), "committed_after_stop": late})
        print(f"{HOST}: writer superseded at step {r.step}: {exc}", flush=True)
        sys.exit(SUPERSEDED_EXIT)


def takeover(root: str, run: str, out: str, go: str) -> None:
    o = Path(out)
    _warm_up_parquet()
    timers = Timers()
    timers.install()
    say(o, "takeover-ready", {})
    if not wait_for(Path(go), 600):
        raise SystemExit("takeover: GO never came")
    t0 = time.monotonic()
    r = localrun.init(project=PROJECT, id=run, resume="must", dir=root)
    waited = time.monotonic() - t0
    start = r.step
    for _ in range(5):
        r.log({"who": 2.0})
    r.finish()
    head = mf.snapshot(run_dir(root, run)).head
    info = {"waited": waited, "start": start, "attempt": r.attempt, "token": r._token}
    say(o, "takeover", info | {"head_after_finish": head})
    print(f"{HOST}: took over after {waited:.1f}s at step {start}, attempt {r.attempt}")
    print(timers.report(f"{HOST} takeover"), flush=True)


def _warm_up_parquet() -> None:
    """Load pyarrow's dataset machinery before the clock starts.

    A resume that adopts an orphan segment reads it with ``pq.read_table``, whose first call
    loads several shared libraries: 12 ms on this machine, 9 to 27 s in the emulated VM (over
    9p). That is the emulator, not the lease protocol this step measures.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(f"/tmp/localrun-warm-{os.getpid()}.parquet")
    pq.write_table(pa.table({"x": [1.0]}), path)
    pq.read_table(path)
    path.unlink()


def strict_commit(root: str, run: str, out: str, how: str = "") -> None:
    """One commit under filelock's StrictSoftFileLock, the mutex of ``nolock`` mounts.

    With ``how == "make-and-stop"``: create p/RUN, then stop this process (a real SIGSTOP) while
    it writes its private claim record inside ``StrictSoftFileLock.acquire``. A contender on the
    other host that scans the claims more than 2 s later removes that record (filelock's grace
    for private records); when this process continues, filelock cannot publish its claim. The
    mutex is a courtesy, so the commit must still happen (DESIGN section 5): it is reported
    either way, and the step's check wants both hosts' commits in the counter.
    """
    o, d = Path(out), run_dir(root, run)
    os.environ["LOCALRUN_LOCK"] = "strict"  # the run's own commits too, whatever the mount
    if how == "make-and-stop":
        create(root, run)
        from filelock._soft._strict import _publication

        real_write_all = _publication.write_all
        fired = threading.Lock()

        def write_all(fd: int, data: bytes) -> None:
            if fired.acquire(blocking=False):
                say(o, "strict-stopping", {"pid": os.getpid()})
                os.kill(os.getpid(), signal.SIGSTOP)
            real_write_all(fd, data)

        _publication.write_all = write_all

    def bump(m: dict[str, Any]) -> None:
        m["counter"] = int(m.get("counter", 0)) + 1

    try:
        mf.update(d, bump, opts=StoreOptions(lock_kind="strict"))
    except Exception as exc:  # whatever escapes the courtesy mutex is the finding
        say(o, f"strict-result-{HOST}-{os.getpid()}", {"result": f"{type(exc).__name__}: {exc}"})
        print(f"{HOST}: the commit raised {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    say(o, f"strict-result-{HOST}-{os.getpid()}", {"result": "committed"})
    print(f"{HOST}: committed under the strict mutex", flush=True)


def check_strict(root: str, run: str, out: str) -> None:
    o = Path(out)
    results = {
        p.name: read(o, p.name)["result"]
        for p in o.iterdir()
        if p.name.startswith("strict-result-")
    }
    print(f"strict: {results}")
    check(
        sorted(results.values()) == ["committed", "committed"],
        f"a commit failed because of the courtesy mutex: {results}",
    )
    counter = mf.load(run_dir(root, run)).get("counter")
    check(counter == 2, f"counter {counter} after 2 commits")
    print("strict: a claim record reclaimed under a stopped contender did not fail its commit")


def commit_loop(
    root: str, run: str, out: str, go: str, secs: str, mode: str, make: str = ""
) -> None:
    """Commit ``counter += 1`` to one run as fast as possible, racing the other host.

    ``cas`` replaces the courtesy mutex with nothing, so every commit relies on the server
    refusing an existing revision name (EEXIST), whatever this client's lookup cache says.
    """
    d = run_dir(root, run)
    if make:
        create(root, run)
    opts = StoreOptions(keep_revisions=10**9)  # keep every revision: the check walks them all
    if mode == "cas":
        locks.manifest_mutex = _no_mutex  # type: ignore[assignment]
    timers = Timers()
    timers.install()
    conflicts = 0
    real_publish = revisions.publish

    def publish(run_dir: Path, head: int, m: dict[str, Any]) -> int:
        nonlocal conflicts
        try:
            return real_publish(run_dir, head, m)
        except revisions.Conflict:
            conflicts += 1
            raise

    revisions.publish = publish  # type: ignore[assignment]

    def bump(m: dict[str, Any]) -> None:
        m["counter"] = int(m.get("counter", 0)) + 1
        by = m.setdefault("counter_by", {})
        by[HOST] = int(by.get(HOST, 0)) + 1

    o = Path(out)
    say(o, f"ready-{mode}-{HOST}-{os.getpid()}", {})
    if not wait_for(Path(go), 600):
        raise SystemExit("commit-loop: GO never came")
    n, t0, worst = 0, time.monotonic(), 0.0
    while time.monotonic() - t0 < float(secs):
        t1 = time.monotonic()
        mf.update(d, bump, opts=opts)
        worst = max(worst, time.monotonic() - t1)
        n += 1
    took = time.monotonic() - t0
    info = {
        "commits": n,
        "seconds": took,
        "conflicts": conflicts,
        "mode": mode,
        "worst": worst,
    }
    say(o, f"done-{mode}-{HOST}-{os.getpid()}", info)
    print(
        f"{HOST} [{mode}]: {n} commits in {took:.1f}s = {n / took:.1f}/s, "
        f"{conflicts} lost races (EEXIST from the server), slowest commit {worst:.2f}s",
        flush=True,
    )
    print(timers.report(f"{HOST} [{mode}]"), flush=True)


@contextmanager
def _no_mutex(lock_path: Path, opts: StoreOptions) -> Iterator[bool]:
    yield False


SYNC_RUNS = {"r0": 300, "r1": 200, "r2": 250}  # run id -> steps; r0 is resumed once


def sync_make(root: str) -> None:
    """The root the syncers push: a few runs on the export, one with two attempts."""
    for run_id, steps in SYNC_RUNS.items():
        with localrun.init(project=PROJECT, id=run_id, dir=root, config={"lr": 0.1}) as r:
            for i in range(steps):
                r.log({"loss": 1.0 / (i + 1), "i": float(i)})
                if i == steps // 2:
                    r.flush()  # two segments per attempt
    with localrun.init(project=PROJECT, id="r0", dir=root, resume="must") as r:
        for i in range(100):
            r.log({"loss": 0.5 / (i + 1), "i": float(i)})


def _cli_sync(root: str, url: str) -> tuple[int, str]:
    """``localrun --root ROOT sync --to URL --all`` through the CLI's entry point: its exit
    status and what it printed on stdout (the one-line summary)."""
    import io
    from contextlib import redirect_stdout

    from localrun import _cli

    buf, code = io.StringIO(), 0
    with redirect_stdout(buf):
        try:
            _cli.main(["--root", root, "sync", "--to", url, "--all"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, buf.getvalue().strip()


def _warm_up_sync() -> None:
    """Import what a sync pass loads before the barrier, so both syncers start at the GO
    (importing costs 10 to 20 s in the emulated VM)."""
    import rich.progress  # noqa: F401

    from localrun import _cli  # noqa: F401
    from localrun._sync import engine, fsstore, replica, urls  # noqa: F401

    _warm_up_parquet()


def _age() -> float:
    """Seconds since this process started (where an emulated VM's time goes: the imports)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return float(Path("/proc/uptime").read_text().split()[0]) - started


def sync_race(root: str, url: str, out: str, go: str, then: str = "") -> None:
    """One racing syncer; ``then`` is ``make`` (write the runs first) or ``again`` (after the
    race, the second sync: in this process, as an import costs 10 to 40 s in the VM)."""
    o, age, t0 = Path(out), _age(), time.monotonic()
    if then == "make":
        sync_make(root)
    t1 = time.monotonic()
    _warm_up_sync()
    me = f"{HOST}-{os.getpid()}"
    say(o, f"ready-{me}", {})
    print(
        f"{HOST}: ready (imported after {age:.0f}s, runs written in {t1 - t0:.0f}s, "
        f"warm-up {time.monotonic() - t1:.0f}s)",
        flush=True,
    )
    if not wait_for(Path(go), 600):
        raise SystemExit("sync-race: GO never came")
    t0 = time.time()
    code, line = _cli_sync(root, url)
    t1 = time.time()
    say(o, f"synced-{me}", {"rc": code, "line": line, "start": t0, "end": t1})
    print(f"{HOST}: exit {code}: {line}", flush=True)
    if code:
        sys.exit(code)
    if then == "again":
        deadline = time.monotonic() + 300
        while sum(p.name.startswith("synced-") for p in o.iterdir()) < 2:
            if time.monotonic() > deadline:
                raise SystemExit("sync-race: the other syncer never finished")
            time.sleep(0.05)
        sync_again(root, url, out)


def _files(folder: Path) -> dict[str, list[int]]:
    """Every file under ``folder``: relative path -> [size, mtime_ns]."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath, n)
            st = p.stat()
            found[p.relative_to(folder).as_posix()] = [st.st_size, st.st_mtime_ns]
    return found


def sync_again(root: str, url: str, out: str) -> None:
    """A second sync after the race, as a node with no cursors of its own would run it."""
    import shutil
    from urllib.parse import urlsplit

    remote = Path(urlsplit(url).path)
    shutil.rmtree(Path(root) / ".sync", ignore_errors=True)
    before = _files(remote)
    code, line = _cli_sync(root, url)
    after = _files(remote)
    say(Path(out), "again", {"rc": code, "line": line, "before": before, "after": after})
    print(f"{HOST} second sync: exit {code}: {line}", flush=True)


# -- checks -----------------------------------------------------------------------------------
def check_race(out: str, total: str) -> None:
    o = Path(out)
    waiting = sum(p.name.startswith("ready-") for p in o.iterdir())
    results = [read(o, p.name) for p in o.iterdir() if p.name.startswith("result-")]
    won = [r for r in results if r["result"] == "won"]
    inuse = [r for r in results if r["result"] == "inuse"]
    other = [r for r in results if r["result"] not in ("won", "inuse")]
    print(f"race: {waiting} racers were waiting at the barrier; {len(results)} reported")
    check(waiting == int(total), f"{waiting} of {total} racers reached the barrier")
    check(len(results) == int(total), f"{len(results)} outcomes of {total} racers")
    check(not other, f"racers failed otherwise: {other}")
    check(len(won) == 1, f"{len(won)} winners: {won}")
    check(all("in use by host" in r["msg"] for r in inuse), f"unclear refusals: {inuse}")
    print(f"race: 1 winner, {len(inuse)} RunInUseError")


def check_takeover(root: str, run: str, out: str, maxwait: str) -> None:
    o, d = Path(out), run_dir(root, run)
    info, wr = read(o, "takeover"), read(o, "writer-ready")
    ttl = float(os.environ["LOCALRUN_LEASE_TTL"])
    print(f"takeover: B resumed after {info['waited']:.1f}s (TTL {ttl:.0f}s)")
    # Nothing of B's (another host) can prove A dead, so B must have watched a full TTL.
    check(
        info["waited"] >= ttl * 0.9,
        f"took over after {info['waited']:.1f}s < TTL {ttl}",
    )
    check(
        info["waited"] <= float(maxwait),
        f"took over after {info['waited']:.1f}s > {maxwait}",
    )
    # The old owner committed nothing once B had taken over: B's last revision is the newest,
    # and every revision from B's takeover on is B's (or nobody's, after B finished).
    snap = mf.snapshot(d)
    check(
        snap.head == info["head_after_finish"],
        f"revisions {info['head_after_finish'] + 1}..{snap.head} were committed after B finished",
    )
    revs = {r: revisions.read_revision(d, r) for r in revisions.list_revisions(d)}
    tokens = {r: (m.get("owner") or {}).get("token") for r, m in revs.items()}
    took = min((r for r, t in tokens.items() if t == info["token"]), default=None)
    check(took is not None, f"no revision owned by B in {sorted(tokens)}")
    assert took is not None
    late = [r for r, t in tokens.items() if r >= took and t == wr["token"]]
    check(not late, f"revisions {late} were committed by the old owner after B took over")
    # Diagnostic only (both hosts share one clock in the VM): the old owner's commits before.
    a_revs = [r for r, t in tokens.items() if t == wr["token"]]
    if a_revs:
        gaps = [revs[b]["updated"] - revs[a]["updated"] for a, b in itertools.pairwise(a_revs)]
        print(
            f"takeover: old owner's last revision {a_revs[-1]} was "
            f"{revs[took]['updated'] - revs[a_revs[-1]]['updated']:.1f}s before B's revision "
            f"{took}; its longest gap between commits {max(gaps, default=0):.1f}s "
            f"({len(a_revs)} revisions kept)"
        )
    stored = localrun.Api(root).run(f"{PROJECT}/{run}")
    table = stored.history(["who"])
    steps, who = table.column("_step").to_pylist(), table.column("who").to_pylist()
    check(steps == list(range(len(steps))), f"a hole or duplicate in the steps: {steps}")
    check(who[info["start"] :] == [2.0] * 5, f"old owner's rows after the takeover: {who}")
    states = {a["attempt"]: a["state"] for a in stored.attempts}
    check(states.get(wr["attempt"]) == "crashed", f"old attempt not crashed: {states}")
    check(states.get(info["attempt"]) == "finished", f"new attempt not finished: {states}")
    sup = o / "writer-superseded"
    if sup.exists():
        late = read(o, "writer-superseded")["committed_after_stop"]
        check(not late, f"the stopped writer committed revisions after it woke: {late}")
    stop = o / "writer-stopping"
    if stop.exists():
        s = read(o, "writer-stopping")
        print(f"takeover: the writer stopped in {s['thread']}, mutex held: {s['mutex_held']}")
    print(
        f"takeover: {len(steps)} steps contiguous, B's rows from step {info['start']}, "
        f"revisions {took}..{snap.head} all B's: the old owner is fenced"
    )


def check_counter(root: str, run: str, out: str) -> None:
    o, d = Path(out), run_dir(root, run)
    done = [read(o, p.name) for p in o.iterdir() if p.name.startswith("done-")]
    total = sum(r["commits"] for r in done)
    snap = mf.snapshot(d)
    revs = revisions.list_revisions(d)
    # the loops started from the newest revision without a counter (the run as created)
    start = max(r for r in revs if "counter" not in revisions.read_revision(d, r))
    expect = list(range(revs[0], snap.head + 1)) if revs else []
    print(f"counter: {total} commits by {len(done)} processes; head revision {snap.head}")
    check(
        snap.manifest.get("counter", 0) == total,
        f"counter {snap.manifest.get('counter')}",
    )
    check(
        revs == expect,
        f"log/ numbers not contiguous: missing {sorted(set(expect) - set(revs))}",
    )
    check(snap.head - start == total, f"{snap.head - start} revisions for {total} commits")
    prev = None
    for rev in range(start + 1, snap.head + 1):
        c = int(revisions.read_revision(d, rev).get("counter", 0))
        check(
            prev is None or c == prev + 1,
            f"revision {rev} has counter {c} after {prev}",
        )
        prev = c
    print(
        f"counter: {total} == counter, revisions {start + 1}..{snap.head} each +1: no lost update"
    )


def check_sync_race(root: str, remote: str, out: str) -> None:
    """Two hosts pushed one root to one remote at once: the remote equals the root, and a
    third pass moves nothing."""
    o = Path(out)
    synced = [read(o, p.name) for p in o.iterdir() if p.name.startswith("synced-")]
    check(len(synced) == 2, f"{len(synced)} of 2 syncers reported")
    check(all(s["rc"] == 0 for s in synced), f"a syncer failed: {synced}")
    first, last = sorted(synced, key=lambda s: s["start"])
    overlap = min(first["end"], last["end"]) - last["start"]
    print(
        f"sync-race: the two passes overlapped {overlap:.1f}s (started {last['start'] - first['start']:.2f}s apart)"
    )
    for s in synced:
        print(f"sync-race: {s['line']}")
    here, there = localrun.Api(root), localrun.Api(remote)
    mine = {r.path: r for r in here.runs()}
    theirs = {r.path: r for r in there.runs()}
    want = sorted(f"{PROJECT}/{r}" for r in SYNC_RUNS)
    check(sorted(mine) == want, f"the local root holds {sorted(mine)}, not {want}")
    check(sorted(theirs) == want, f"the remote holds {sorted(theirs)}, not {want}")
    for path, a in mine.items():
        b = theirs[path]
        check(b.manifest == a.manifest, f"{path}: the manifests differ")
        ha, hb = a.history(all_attempts=True), b.history(all_attempts=True)
        check(hb.equals(ha), f"{path}: history(all_attempts=True) differs")
        la = revisions.list_revisions(a.dir)
        lb = revisions.list_revisions(b.dir)
        check(
            lb[-1:] == la[-1:], f"{path}: newest revision {lb[-1:]} on the remote, {la[-1:]} here"
        )
        check(
            revisions.read_revision(b.dir, lb[-1]) == revisions.read_revision(a.dir, la[-1]),
            f"{path}: the newest revisions differ",
        )
    r0 = mine[f"{PROJECT}/r0"]
    check(len(r0.attempts) == 2, f"r0 has {len(r0.attempts)} attempts, not 2")
    rows = {p: r.history(all_attempts=True).num_rows for p, r in theirs.items()}
    temps = [p for p in _files(Path(remote)) if ".tmp-" in p]
    check(not temps, f"temporary files left on the remote: {temps}")
    again = read(o, "again")
    check(again["rc"] == 0, f"the second sync exited {again['rc']}: {again['line']}")
    check(
        " 0 pushed" in again["line"] and f"{len(want)} already there" in again["line"],
        f"the second sync pushed something: {again['line']}",
    )
    added = sorted(set(again["after"]) - set(again["before"]))
    changed = sorted(p for p in again["before"] if again["after"].get(p) != again["before"][p])
    check(not added and not changed, f"the second sync added {added}, rewrote or removed {changed}")
    print(
        f"sync-race: the remote equals the root ({rows} rows, all attempts); a second sync "
        f"without cursors moved nothing ({len(again['after'])} files unchanged)"
    )


def check_all(srv: str, out: str, *steps: str) -> None:
    """Check every step that ran, in one process (an import costs 10 to 20 s in the VM).

    Each step's shell part left ``OUT/<step>/shell`` (its exit status and seconds); a step
    passes when that part succeeded and its check here holds. One line per step for run-all.
    """
    maxwait = os.environ.get("MAXWAIT", "60")
    checks = {
        "race": lambda o: check_race(o, "6"),
        "dead": lambda o: check_takeover(srv, "dead", o, maxwait),
        "stop-random": lambda o: check_takeover(srv, "stop-random", o, maxwait),
        "stop-in-mutex": lambda o: check_takeover(srv, "stop-in-mutex", o, maxwait),
        "fence": lambda o: check_takeover(srv, "fence", o, maxwait),
        "counter": lambda o: check_counter(srv, "counter", o),
        "strict-reclaim": lambda o: check_strict(srv, "strict-reclaim", o),
        "sync-race": lambda o: check_sync_race(
            f"{srv}/sync-race/root", f"{srv}/sync-race/remote", o
        ),
    }
    failed = 0
    for step in steps:
        o = Path(out) / step
        shell = read(o, "shell") if (o / "shell").exists() else {"rc": "none", "seconds": 0}
        print(f"-- {step}:", flush=True)
        ok = shell["rc"] == 0
        if not ok:
            print(f"FAIL: {step}: its shell part failed (exit {shell['rc']}; see above)")
        else:
            try:
                checks[step](str(o))
            except CheckFailed as exc:
                print(f"FAIL: {step}: {exc}")
                ok = False
            except Exception as exc:  # a crashed check is a failed step
                print(f"FAIL: {step}: {type(exc).__name__}: {exc}")
                ok = False
        failed += not ok
        print(
            f"== STEP {step}: {'PASS' if ok else 'FAIL'} ({shell['seconds']}s)",
            flush=True,
        )
    if failed:
        sys.exit(1)


ROLES = {
    "create": create,
    "race": race,
    "writer": writer,
    "takeover": takeover,
    "commit-loop": commit_loop,
    "strict-commit": strict_commit,
    "sync-race": sync_race,
    "check-race": check_race,
    "check-takeover": check_takeover,
    "check-counter": check_counter,
    "check-all": check_all,
}

if __name__ == "__main__":
    # A role that dies of a signal (SIGSEGV, SIGABRT) prints every thread's stack first: such a
    # crash happens once in many CI runs, and the exit status alone does not say where.
    faulthandler.enable()
    role, *args = sys.argv[1:]
    try:
        ROLES[role](*args)  # type: ignore[operator]
    except CheckFailed as exc:
        print(f"FAIL: {role}: {exc}", flush=True)
        sys.exit(1)
