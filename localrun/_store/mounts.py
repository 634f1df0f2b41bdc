"""What the filesystem under a path is, from /proc/self/mountinfo.

Two decisions depend on it: which mutex works there (flock is only host-local on an NFS mount
with ``nolock``), and whether file-change events can arrive at all (on network mounts another
host's writes raise no inotify event, so watchers must poll).
"""

from __future__ import annotations

import os
from pathlib import Path

_NO_FLOCK_OPTS = ("nolock", "local_lock=all", "local_lock=flock")
_NETWORK_FS = ("nfs", "cifs", "smb", "fuse", "lustre", "gpfs", "beegfs", "ceph", "9p", "glusterfs")


def _mounts() -> list[tuple[str, str, set[str]]]:
    """``(mount point, fstype, options)``, longest mount point first."""
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


def mount_of(path: Path) -> tuple[str, set[str]]:
    """``(fstype, options)`` of the mount holding ``path`` ('' when unknown)."""
    real = os.path.realpath(path)
    for point, fstype, opts in _mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return fstype, opts
    return "", set()


def is_network_fs(path: Path) -> bool:
    """True where change events of other hosts never arrive (so file watching must poll)."""
    return mount_of(path)[0].startswith(_NETWORK_FS)


def flock_works(path: Path) -> bool:
    """False on NFS mounts whose flock only excludes processes of one host."""
    fstype, opts = mount_of(path)
    return not (fstype.startswith("nfs") and any(o in opts for o in _NO_FLOCK_OPTS))
