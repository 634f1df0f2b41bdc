"""Creating a run and taking ownership of one (DESIGN §4-5), on the one lease judge.

A contender watches the lease without the mutex (revisions are immutable, so reading is safe),
and takes over only in a commit that re-judges what it saw on the newest revision. The commit
is a compare-and-swap, so of any number of processes resuming one id at once, exactly one wins,
even when the mutex is held by a stopped or hung process and everyone proceeds without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import CorruptRunError, RunExistsError, RunInUseError
from . import manifest as mf
from .atomic import storage_error
from .identity import HOST, PID_NS
from .lease import Verdict, Watch, describe, judge, new_owner
from .options import DEFAULT, StoreOptions
from .records import Attempt, Owner
from .repair import adopt_orphans, mark_crashed
from .segments import entry_from_footer

log = logging.getLogger(__name__)


@dataclass
class Claim:
    """What a writer holds after :func:`create` or :func:`take_over`."""

    manifest: mf.Manifest
    owner: Owner
    attempt: int
    resumed: bool


def _attempt_record(attempt: int, start_step: int) -> Attempt:
    return {
        "attempt": attempt,
        "host": HOST,
        "pid": os.getpid(),
        "pid_ns": PID_NS,
        "started": time.time(),
        "ended": None,
        "start_step": start_step,
        "state": "running",
        "exit_code": None,
    }


def create(
    run_dir: Path,
    project: str,
    run_id: str,
    ttl_s: float,
    fields: dict[str, Any],
    opts: StoreOptions = DEFAULT,
) -> Claim:
    """Create a new run at ``run_dir``; :class:`RunExistsError` if the folder is already there.

    ``mkdir`` is the atomic step (exclusive on every filesystem, NFS included): of two creators
    one gets the folder, the other an error and falls back to resuming or refusing.
    """
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise RunExistsError(f"run {project}/{run_id} already exists at {run_dir}") from None
    except OSError as exc:
        raise storage_error(exc, "create the run folder", run_dir) from exc
    m = mf.new(project, run_id, **fields)
    owner = new_owner(1, ttl_s)
    m["owner"] = owner
    m["attempts"].append(_attempt_record(1, 0))
    try:
        mf.create(run_dir, m, opts)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing was committed in it yet
        raise
    return Claim(m, owner, 1, resumed=False)


def wait_for_manifest(run_dir: Path, seconds: float = 5.0) -> bool:
    """A racing creator made the folder a moment ago: give it time to commit revision 1."""
    deadline = time.monotonic() + seconds
    while not mf.exists(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _in_use(run_dir: Path, owner: Owner, why: str) -> RunInUseError:
    err = RunInUseError(
        f"run {run_dir.parent.name}/{run_dir.name} is in use by {describe(owner)} ({why}). "
        "Stop that process first, or, if you are sure it is gone, pass force=True to "
        "localrun.init (or set LOCALRUN_FORCE=1) to take the run over"
    )
    err.host, err.pid, err.attempt = owner.get("host"), owner.get("pid"), owner.get("attempt")
    return err


def take_over(
    run_dir: Path,
    ttl_s: float,
    force: bool = False,
    rewind_to: int | None = None,
    prepare: Callable[[mf.Manifest], None] | None = None,
    opts: StoreOptions = DEFAULT,
) -> Claim:
    """Become the owner of an existing run, starting its next attempt.

    :func:`lease.judge` decides: take over at once when there is no owner, a garbage lease, a
    provably dead owner, or ``force``; refuse when the owner is alive where this process can see
    it; otherwise watch its heartbeat for its TTL on this process's monotonic clock. The watch
    reads revisions without any lock, so nothing a stopped or hung owner holds can stall it.

    ``prepare(manifest)`` runs inside the takeover's commit; if it raises (a refused config
    change), nothing is written and nobody owns more.
    """
    watch = Watch()
    announced = False

    def decide(m: mf.Manifest) -> Verdict | RunInUseError:
        nonlocal announced
        owner = m.get("owner")
        v = judge(owner, watch, default_ttl=ttl_s, force=force)
        if v.action == "live":
            assert isinstance(owner, dict)
            return _in_use(run_dir, owner, v.reason)
        if v.action == "wait" and not announced:
            announced = True
            log.warning("run %s is owned by another process; %s", run_dir, v.reason)
        return v

    def confirm(m: mf.Manifest) -> Claim | Verdict | RunInUseError:
        v = decide(m)  # judged again on the newest revision: a heartbeat that moved is alive
        if not isinstance(v, Verdict) or v.action != "take":
            return v
        if m.get("owner") is not None:  # a resume of a run that ended cleanly is not news
            log.warning("taking over run %s: %s", run_dir, v.reason)
        if prepare is not None:
            prepare(m)
        return _start_attempt(run_dir, m, ttl_s, rewind_to)

    while True:
        outcome: Claim | Verdict | RunInUseError = decide(mf.load(run_dir))
        if isinstance(outcome, Verdict) and outcome.action == "take":
            # The owner is gone or has stood still for a TTL: if it holds the mutex it will not
            # let go, so waiting the full bound for it only delays the takeover (the commit is
            # the compare-and-swap either way).
            short = replace(opts, mutex_wait=min(opts.mutex_wait, 1.0))
            outcome = mf.update(run_dir, confirm, commit=lambda r: isinstance(r, Claim), opts=short)
        if isinstance(outcome, Claim):
            return outcome
        if isinstance(outcome, RunInUseError):
            raise outcome
        time.sleep(outcome.wait_s)


def check_newest_segment(run_dir: Path, m: mf.Manifest) -> None:
    """O(1) consistency check at resume: the newest listed segment is there and its footer
    agrees with the manifest (rows, last step). Anything else is damage the user must see."""
    if not m["segments"]:
        return
    newest = max(m["segments"], key=lambda s: (s["attempt"], s["seq"]))
    try:
        entry = entry_from_footer(run_dir, newest["file"])
    except Exception as exc:  # missing or unreadable, whatever pyarrow raises
        raise CorruptRunError(
            f"run {run_dir}: its newest segment {newest['file']} cannot be read ({exc}); run "
            "`localrun verify --repair` and resume again"
        ) from None
    if (entry["rows"], entry["max_step"]) != (newest["rows"], newest["max_step"]):
        raise CorruptRunError(
            f"run {run_dir}: segment {newest['file']} holds {entry['rows']} rows up to step "
            f"{entry['max_step']}, the manifest says {newest['rows']} up to {newest['max_step']}; "
            "run `localrun verify --repair`"
        )


def _start_attempt(run_dir: Path, m: mf.Manifest, ttl_s: float, rewind_to: int | None) -> Claim:
    check_newest_segment(run_dir, m)
    mark_crashed(m)
    adopt_orphans(run_dir, m)
    attempt = max((a["attempt"] for a in m["attempts"]), default=0) + 1
    if rewind_to is not None:
        m["rewinds"].append({"attempt": attempt, "seq": 0, "step": rewind_to})
        m["last_step"] = rewind_to  # continue at rewind_to + 1, even past a lost flush
    owner = new_owner(attempt, ttl_s)
    m["owner"] = owner
    m["state"] = "running"
    m["attempts"].append(_attempt_record(attempt, m["last_step"] + 1))
    return Claim(m, owner, attempt, resumed=True)


def release(m: mf.Manifest, token: str, state: str, exit_code: int | None, attempt: int) -> None:
    """End this attempt in the manifest (the caller holds the mutex and checked the fence)."""
    for a in m["attempts"]:
        if a["attempt"] == attempt:
            a["state"] = state
            a["ended"] = time.time()
            a["exit_code"] = exit_code
    m["state"] = state
    if (m.get("owner") or {}).get("token") == token:
        m["owner"] = None
