"""The manifest mutex (DESIGN §5): milliseconds around each read-modify-write of manifest.json.

``filelock.FileLock`` (flock) where the root's mount arbitrates locks (local disks, NFSv4, NFSv3
with lockd); ``filelock.StrictSoftFileLock`` where it does not (an NFS mount with ``nolock`` or
``local_lock=``), because flock there only excludes processes of one host. Measured in
../shared/nfs: flock holds across hosts on v4.2 and v3, fails on ``3:nolock``.

filelock never reclaims a strict claim whose holder died (its age takeover is refused on NFS).
So this module breaks a claim itself, only on proof (same host, its pid gone) or once the same
claims have sat unchanged for a generous bound on this process's own monotonic clock, and logs
each break. The mutex is never held across training, so a bound of tens of seconds is safe.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path

import filelock

from ..errors import LockTimeout
from .atomic import storage_error
from .lease import HOST, pid_alive

log = logging.getLogger("localrun")

LOCK_TIMEOUT_S = float(os.environ.get("LOCALRUN_LOCK_TIMEOUT", "120"))
STALE_CLAIM_S = float(os.environ.get("LOCALRUN_STALE_LOCK", "30"))
_NO_FLOCK_OPTS = ("nolock", "local_lock=all", "local_lock=flock")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fstype, options)`` from /proc/self/mountinfo, longest mount point first."""
    out = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 6 or len(rfields) < 3:
            continue
        point = fields[4].encode().decode("unicode_escape")
        opts = set(fields[5].split(",")) | set(rfields[2].split(","))
        out.append((point, rfields[0], opts))
    return sorted(out, key=lambda m: len(m[0]), reverse=True)


_NETWORK_FS = ("nfs", "cifs", "smb", "fuse", "lustre", "gpfs", "beegfs", "ceph", "9p", "glusterfs")


def _mount_of(path: Path) -> tuple[str, set[str]]:
    real = os.path.realpath(path)
    for point, fstype, opts in _mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return fstype, opts
    return "", set()


def is_network_fs(path: Path) -> bool:
    """True where change events of other hosts never arrive (so file watching must poll)."""
    return _mount_of(path)[0].startswith(_NETWORK_FS)


@lru_cache(maxsize=64)
def lock_kind(path: Path) -> str:
    """``"flock"`` or ``"strict"``: which mutex the filesystem under ``path`` supports.

    ``LOCALRUN_LOCK=flock|strict`` overrides the detection (for a filesystem it gets wrong).
    """
    forced = os.environ.get("LOCALRUN_LOCK")
    if forced in ("flock", "strict"):
        return forced
    fstype, opts = _mount_of(path)
    if fstype.startswith("nfs") and any(o in opts for o in _NO_FLOCK_OPTS):
        return "strict"
    return "flock"


def _break_stale(lock: filelock.StrictSoftFileLock, seen: dict[str, float], now: float) -> None:
    """Remove claims whose holder is provably dead, or that sat unchanged past the bound."""
    claims = lock.claims
    names = {c.name for c in claims}
    for stale in set(seen) - names:
        del seen[stale]
    for claim in claims:
        first = seen.setdefault(claim.name, now)
        dead = claim.hostname == HOST and not pid_alive(claim.pid)
        if dead or now - first >= STALE_CLAIM_S:
            why = "its process is gone" if dead else f"it has not moved for {now - first:.0f}s"
            log.warning(
                "localrun: breaking the manifest lock claim of pid %s on %s (%s): %s",
                claim.pid,
                claim.hostname,
                why,
                lock.lock_file,
            )
            with suppress(FileNotFoundError):
                lock.force_break(claim.name)


@contextmanager
def manifest_mutex(lock_path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the run's manifest mutex for the duration of a ``with`` block."""
    bound = LOCK_TIMEOUT_S if timeout is None else timeout
    try:
        lock = _acquire(lock_path, bound)
    except LockTimeout:
        raise
    except OSError as exc:
        raise storage_error(exc, "take the manifest lock", lock_path) from exc
    try:
        yield
    finally:
        lock.release()


def _acquire(lock_path: Path, bound: float) -> filelock.BaseFileLock:
    if lock_kind(lock_path.parent) == "flock":
        lock: filelock.BaseFileLock = filelock.FileLock(lock_path, timeout=bound)
        try:
            lock.acquire()
        except filelock.Timeout as exc:
            raise _timeout(lock_path, bound) from exc
    else:
        lock = filelock.StrictSoftFileLock(lock_path)
        deadline = time.monotonic() + bound
        seen: dict[str, float] = {}
        while True:
            try:
                lock.acquire(timeout=0.25)
                break
            except filelock.Timeout:
                now = time.monotonic()
                if now >= deadline:
                    raise _timeout(lock_path, bound) from None
                _break_stale(lock, seen, now)
    return lock


def _timeout(lock_path: Path, bound: float) -> LockTimeout:
    return LockTimeout(
        f"could not take the manifest lock {lock_path} within {bound:.0f}s; another process "
        "holds it. If no localrun process is alive, remove that file (and any "
        f"{lock_path.name}.filelock folder) and retry; raise LOCALRUN_LOCK_TIMEOUT to wait longer"
    )
