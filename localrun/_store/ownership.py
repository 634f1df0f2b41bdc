"""Creating a run and taking ownership of one (DESIGN §4-5): the lease rules in one place.

A contender never holds the mutex while it waits: it looks at the lease under the mutex, lets go,
watches, and takes over only in a later critical section that re-checks what it saw. So of any
number of processes resuming one id at once, exactly one wins.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import CorruptRunError, RunExistsError, RunInUseError
from . import manifest as mf
from .atomic import storage_error
from .layout import HISTORY, QUARANTINE, segment_name
from .lease import HOST, heartbeat_key, is_valid, new_owner, pid_alive, provably_dead, stopped
from .schema import NUMBER, kind_of_arrow
from .segments import entry_from_footer

log = logging.getLogger("localrun")


@dataclass
class Claim:
    """What a writer holds after :func:`create` or :func:`take_over`."""

    manifest: mf.Manifest
    owner: dict[str, Any]
    attempt: int
    resumed: bool


def _attempt_record(attempt: int, start_step: int) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "host": HOST,
        "pid": os.getpid(),
        "started": time.time(),
        "ended": None,
        "start_step": start_step,
        "state": "running",
        "exit_code": None,
    }


def create(run_dir: Path, project: str, run_id: str, ttl_s: float, fields: dict[str, Any]) -> Claim:
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
        mf.save(run_dir, m)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing was committed in it yet
        raise
    return Claim(m, owner, 1, resumed=False)


def wait_for_manifest(run_dir: Path, seconds: float = 5.0) -> bool:
    """A racing creator made the folder a moment ago: give it time to write the manifest."""
    deadline = time.monotonic() + seconds
    while not mf.exists(run_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _owner_text(owner: dict[str, Any]) -> str:
    age = time.time() - float(owner.get("hb_time", 0) or 0)
    clock = "" if owner.get("host") == HOST else " by that host's clock"
    return (
        f"host {owner.get('host')}, pid {owner.get('pid')}, attempt {owner.get('attempt')}, "
        f"last heartbeat {age:.1f}s ago{clock}"
    )


def _in_use(run_dir: Path, owner: dict[str, Any], why: str) -> RunInUseError:
    return RunInUseError(
        f"run {run_dir.parent.name}/{run_dir.name} is in use by {_owner_text(owner)} ({why}). "
        "Stop that process first, or, if you are sure it is gone, pass force=True to "
        "localrun.init (or set LOCALRUN_FORCE=1) to take the run over"
    )


def take_over(
    run_dir: Path,
    ttl_s: float,
    force: bool = False,
    rewind_to: int | None = None,
    poll_s: float | None = None,
    prepare: Callable[[mf.Manifest], None] | None = None,
) -> Claim:
    """Become the owner of an existing run, starting its next attempt.

    Takes over at once when there is no owner, a garbage lease, a provably dead owner, or
    ``force``; refuses at once when the owner runs on this host and is not stopped; otherwise
    watches the owner's heartbeat for its TTL on this process's monotonic clock: a move means
    alive (:class:`RunInUseError`), stillness means gone (take over, attempt marked crashed).

    ``prepare(manifest)`` runs in the same critical section just before the takeover is
    committed; if it raises (a refused config change), nothing is written and nobody owns more.
    """
    seen: tuple[Any, Any] | None = None
    seen_at = 0.0
    poll = poll_s

    def judge(m: mf.Manifest) -> str | float | RunInUseError:
        """Take (a reason), wait (seconds), or refuse; pure but for what it has seen."""
        nonlocal seen, seen_at, poll
        owner = m.get("owner")
        now = time.monotonic()
        if owner is None:
            return "nobody owns it"
        if not is_valid(owner):
            return f"it has an unreadable lease ({owner!r})"
        if force:
            return f"forced, from {_owner_text(owner)}"
        if provably_dead(owner):
            return f"its owner's process is gone ({_owner_text(owner)})"
        ttl = float(owner.get("ttl_s") or ttl_s)
        poll = min(ttl / 10, 1.0) if poll_s is None else poll_s
        if owner["host"] == HOST and pid_alive(owner["pid"]) and not stopped(owner["pid"]):
            return _in_use(run_dir, owner, "its process is alive on this host")
        key = heartbeat_key(owner)
        if seen is None:
            seen, seen_at = key, now
            log.warning(
                "localrun: run %s is owned by %s; watching its heartbeat for up to %.0fs to see "
                "whether it is alive",
                run_dir,
                _owner_text(owner),
                ttl,
            )
            return poll
        if key != seen:
            return _in_use(run_dir, owner, "its heartbeat moved while this process watched")
        if now - seen_at < ttl:
            return poll
        return f"the heartbeat of {_owner_text(owner)} stood still for {now - seen_at:.0f}s"

    def confirm(m: mf.Manifest) -> Claim | float | RunInUseError:
        verdict = judge(m)
        if not isinstance(verdict, str):
            return verdict
        log.warning("localrun: taking over run %s: %s", run_dir, verdict)
        if prepare is not None:
            prepare(m)
        return _start_attempt(run_dir, m, ttl_s, rewind_to)

    while True:
        # Watch without the mutex (the manifest is replaced atomically): watchers must never
        # starve the owner's heartbeat commits, or a live owner would look dead.
        verdict = judge(mf.load(run_dir))
        if isinstance(verdict, str):  # confirm under the mutex: nothing moves while we decide
            outcome = mf.update(run_dir, confirm, commit=lambda r: isinstance(r, Claim))
            if isinstance(outcome, Claim):
                return outcome
            verdict = outcome
        if isinstance(verdict, RunInUseError):
            raise verdict
        time.sleep(verdict)


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
    for a in m["attempts"]:
        if a.get("state") == "running":
            a["state"] = "crashed"
            a["ended"] = a.get("ended") or m.get("updated")
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


def adopt_orphans(run_dir: Path, m: mf.Manifest) -> list[str]:
    """Adopt the segments a crashed writer published but never committed (DESIGN §3.2).

    O(orphans), not O(history): a writer numbers its segments consecutively, so the orphans of
    an attempt are exactly the names after its last listed one. Only the newest attempt's
    orphans that continue the step sequence are adopted; anything else (a superseded writer's
    late flush, an unreadable file) is moved to ``quarantine/``, never deleted.
    """
    listed = {s["file"] for s in m["segments"]}
    newest = max((a["attempt"] for a in m["attempts"]), default=0)
    adopted: list[str] = []
    for attempt in sorted({a["attempt"] for a in m["attempts"]}):
        seqs = [s["seq"] for s in m["segments"] if s["attempt"] == attempt]
        seq = max(seqs, default=-1) + 1
        while True:
            rel = f"{HISTORY}/{segment_name(attempt, seq)}"
            if not (run_dir / rel).exists():
                break
            seq += 1
            if rel in listed:
                continue
            try:
                entry = entry_from_footer(run_dir, rel)
            except Exception as exc:  # any unreadable file is quarantined, whatever pyarrow says
                quarantine(run_dir, rel, f"unreadable: {exc}")
                continue
            if attempt != newest or entry["min_step"] <= m["last_step"]:
                quarantine(run_dir, rel, "it does not continue the run's committed steps")
                continue
            _adopt(run_dir, m, entry)
            adopted.append(rel)
    return adopted


def _adopt(run_dir: Path, m: mf.Manifest, entry: dict[str, Any]) -> None:
    table = pq.read_table(run_dir / entry["file"])
    for field in table.schema:
        if field.name.startswith("_"):
            continue
        kind = kind_of_arrow(field.type) or NUMBER
        m["schema"].setdefault(field.name, kind)
        col = table.column(field.name).drop_null()
        if len(col):
            m["summary"][field.name] = mf.encode_value(col[-1].as_py())
    m["segments"].append(entry)
    m["last_step"] = entry["max_step"]
    log.warning(
        "localrun: adopted orphan segment %s of run %s (%d rows up to step %d)",
        entry["file"],
        run_dir,
        entry["rows"],
        entry["max_step"],
    )


def quarantine(run_dir: Path, rel: str, why: str) -> None:
    dest = run_dir / QUARANTINE / rel.replace("/", "__")
    dest.parent.mkdir(exist_ok=True)
    os.replace(run_dir / rel, dest)
    log.warning("localrun: moved %s of run %s to %s: %s", rel, run_dir, dest, why)


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
