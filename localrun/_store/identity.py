"""Who this process is, and whether a recorded process is still alive: from /proc, on Linux.

One copy of the host identity for every record localrun writes (temp names, attempts, leases,
lock claims). A process is named by ``(host, boot_id, pid namespace, pid, start time)``: the pid
alone is reused, and a host name alone is shared by containers of one machine and by clones.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HOST = socket.gethostname()


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    """``pid:[inode]`` of this process's pid namespace ('' where /proc does not say).

    Two containers of one machine can share a host name and a boot id (docker with host
    networking) and still not see each other's pids: a pid is only proof within one namespace.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


BOOT_ID = _read("/proc/sys/kernel/random/boot_id")
PID_NS = _pid_namespace()


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


def same_machine(host: object, boot_id: object, pid_ns: object) -> bool:
    """True only when a record's process lives where this one can see its pid.

    Same host name, same boot and same pid namespace. A record that lacks the boot id or the
    namespace (older format) counts as this machine only when its host name matches and this
    process cannot tell otherwise.
    """
    if host != HOST:
        return False
    if boot_id and BOOT_ID and boot_id != BOOT_ID:
        return False  # another machine with this name, or this one before a reboot: unprovable
    return not (pid_ns and PID_NS and pid_ns != PID_NS)
