"""Ownership of a run (DESIGN §5): a lease record inside the newest revision, and its one judge.

A lock cannot be reclaimed from a dead host on NFS, but a record can be judged. :func:`judge` is
the only place that decides whether an owner is alive; takeover, repair and the readers' "crashed"
state all ask it. The owner is gone if this process can see its pid (same machine, boot and pid
namespace) and that pid with that start time is gone, or if its ``(token, hb_seq)`` stood still
for a full TTL on the judging process's own monotonic clock. Wall clocks of two hosts are never
compared: a host whose clock is minutes off judges exactly like one whose clock is right.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from .identity import BOOT_ID, HOST, PID_NS, pid_alive, proc_start, same_machine, stopped
from .records import Owner


def new_owner(attempt: int, ttl_s: float) -> Owner:
    pid = os.getpid()
    return {
        "host": HOST,
        "boot_id": BOOT_ID,
        "pid_ns": PID_NS,
        "pid": pid,
        "proc_start": proc_start(pid),
        "token": secrets.token_hex(8),
        "attempt": attempt,
        "hb_seq": 0,
        "hb_time": time.time(),  # for people reading the record; never compared across hosts
        "ttl_s": ttl_s,
    }


def beat(owner: Owner) -> None:
    """Move the heartbeat: what a watcher on another host looks for."""
    owner["hb_seq"] = int(owner.get("hb_seq", 0)) + 1
    owner["hb_time"] = time.time()


def is_valid(owner: object) -> bool:
    """A lease record localrun can judge; anything else (garbage) is treated as no owner."""
    return (
        isinstance(owner, dict)
        and isinstance(owner.get("token"), str)
        and isinstance(owner.get("pid"), int)
        and not isinstance(owner.get("pid"), bool)
        and isinstance(owner.get("host"), str)
    )


def _visible_here(owner: Owner) -> bool:
    return same_machine(owner.get("host"), owner.get("boot_id"), owner.get("pid_ns"))


def provably_dead(owner: Owner) -> bool:
    """True only when this process can see the owner's pid space and the owner is not in it."""
    if not _visible_here(owner):
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return True
    start = owner.get("proc_start")
    return bool(start) and proc_start(pid) not in ("", start)


def alive_here(owner: Owner) -> bool:
    """The owner runs where this process can see it, and is not stopped: certainly alive."""
    pid = owner.get("pid")
    return (
        _visible_here(owner)
        and isinstance(pid, int)
        and not provably_dead(owner)
        and not stopped(pid)
    )


def heartbeat_key(owner: Owner) -> tuple[Any, Any]:
    return owner.get("token"), owner.get("hb_seq")


def ttl_of(owner: Owner, default: float) -> float:
    ttl = owner.get("ttl_s")
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > 0:
        return float(ttl)
    return default


def describe(owner: Owner) -> str:
    """For messages: who owns it, and how old its heartbeat looks (display only)."""
    age = time.time() - float(owner.get("hb_time", 0) or 0)
    clock = "" if owner.get("host") == HOST else " by that host's clock"
    return (
        f"host {owner.get('host')}, pid {owner.get('pid')}, attempt {owner.get('attempt')}, "
        f"last heartbeat {age:.1f}s ago{clock}"
    )


@dataclass
class Watch:
    """What a judge has seen of one owner, on its own monotonic clock."""

    key: tuple[Any, Any] | None = None
    since: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """``take`` (the owner is gone or there is none), ``wait`` (watch again in ``wait_s``), or
    ``live`` (the owner is alive: leave it alone)."""

    action: Literal["take", "wait", "live"]
    reason: str
    wait_s: float = 0.0


def judge(
    owner: object,
    watch: Watch,
    *,
    default_ttl: float,
    force: bool = False,
    now: float | None = None,
) -> Verdict:
    """The one liveness rule (DESIGN §5). Pure but for ``watch``, which it updates.

    Call it again after ``wait_s`` with the owner read afresh; a verdict of ``take`` after a
    watch means the same heartbeat stood still for a full TTL on this process's clock.
    """
    now = time.monotonic() if now is None else now
    if owner is None:
        return Verdict("take", "nobody owns it")
    if not is_valid(owner):
        return Verdict("take", f"it has an unreadable lease ({owner!r})")
    owner = cast(Owner, owner)
    if force:
        return Verdict("take", f"forced, from {describe(owner)}")
    if provably_dead(owner):
        return Verdict("take", f"its owner's process is gone ({describe(owner)})")
    if alive_here(owner):
        return Verdict("live", "its process is alive on this host")
    ttl = ttl_of(owner, default_ttl)
    poll = min(ttl / 10, 1.0)
    key = heartbeat_key(owner)
    if watch.key is None:
        watch.key, watch.since = key, now
        return Verdict(
            "wait", f"watching the heartbeat of {describe(owner)} for up to {ttl:.0f}s", poll
        )
    if key != watch.key:
        return Verdict("live", "its heartbeat moved while this process watched")
    if now - watch.since < ttl:
        return Verdict("wait", "its heartbeat has not moved yet", poll)
    return Verdict(
        "take", f"the heartbeat of {describe(owner)} stood still for {now - watch.since:.0f}s"
    )
