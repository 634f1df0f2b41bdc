"""Ownership of a run (DESIGN §5): a lease record inside the manifest, not a lock.

A lock cannot be reclaimed from a dead host on NFS, but a record can be judged: the owner is
gone if it ran on this host (same name and boot) and its pid with that start time is gone, or if
its ``(token, hb_seq)`` stood still for a full TTL on the judging process's own monotonic clock.
Wall clocks of two hosts are never compared.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

HOST = socket.gethostname()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None.

    Split after the last ')' because the command name itself may hold spaces and parentheses.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def proc_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot, '' where /proc does not say.

    Together with the pid it names one process; a reused pid has another start time.
    """
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def stopped(pid: int) -> bool:
    """True when ``pid`` is stopped (SIGSTOP, a debugger): alive, but its heartbeat is not."""
    fields = _stat(pid)
    return fields is not None and fields[0] in ("T", "t")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs on this host; a zombie (killed, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return fields is None or fields[0] != "Z"


def new_owner(attempt: int, ttl_s: float) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": HOST,
        "boot_id": BOOT_ID,
        "pid": pid,
        "proc_start": proc_start(pid),
        "token": secrets.token_hex(8),
        "attempt": attempt,
        "hb_seq": 0,
        "hb_time": time.time(),
        "ttl_s": ttl_s,
    }


def provably_dead(owner: dict[str, Any]) -> bool:
    """True only when this host can prove the owner process is gone (same host and boot)."""
    if owner.get("host") != HOST:
        return False
    if owner.get("boot_id") and BOOT_ID and owner["boot_id"] != BOOT_ID:
        return True  # this host rebooted since: every process of that boot is gone
    pid = owner.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return True
    start = owner.get("proc_start")
    return bool(start) and proc_start(pid) not in ("", start)


def heartbeat_key(owner: dict[str, Any]) -> tuple[Any, Any]:
    return owner.get("token"), owner.get("hb_seq")


def is_valid(owner: object) -> bool:
    """A lease record localrun can judge; anything else (garbage) is treated as no owner."""
    return (
        isinstance(owner, dict)
        and isinstance(owner.get("token"), str)
        and isinstance(owner.get("pid"), int)
        and isinstance(owner.get("host"), str)
    )
