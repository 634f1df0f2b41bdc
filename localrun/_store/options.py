"""The store's knobs, passed in by whoever opened the store (``init``, ``Api``, the CLI).

The store never reads the environment: ``localrun._settings`` reads and validates every
``LOCALRUN_*`` variable once per entry point and hands the result down as a :class:`StoreOptions`.
That way a bad value is one clear error at ``init``/``Api``, never an import-time traceback, and a
process serving several roots can give each its own options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LockKind = Literal["auto", "flock", "strict"]


@dataclass(frozen=True)
class StoreOptions:
    """How the store takes its courtesy mutex and how many old revisions it keeps."""

    #: Seconds a commit waits for the mutex before it proceeds without it (the commit itself is
    #: a compare-and-swap, so proceeding is safe; the bound only caps how long anyone waits).
    mutex_wait: float = 5.0
    #: Seconds a strict-mutex claim may sit unchanged before it is broken as stale.
    stale_claim: float = 30.0
    #: Which mutex: detect from the mount ("auto"), flock, or filelock's StrictSoftFileLock.
    lock_kind: LockKind = "auto"
    #: Old revisions kept in ``log/`` besides the newest (a bound on the log's size).
    keep_revisions: int = 64


DEFAULT = StoreOptions()
