"""The manifest mutex (DESIGN §5): a courtesy that keeps well-behaved writers from retrying.

The commit itself is a compare-and-swap on the revision number (``revisions.py``), so the mutex
is not needed for correctness, only to make concurrent committers take turns. Hence every wait on
it is bounded: past ``StoreOptions.mutex_wait`` a committer proceeds without it. No process
state (stopped by SIGSTOP inside its critical section, hung on a dead NFS server, a reader that
took the lock and never let go) can hold up another process for longer than that bound. After
a wait ran out, the next waits on the same lock are short until it is taken again normally, so a
holder that never lets go costs the writer one bound, not one bound per flush.

``filelock.FileLock`` (flock) where the mount arbitrates locks (local disks, NFSv4, NFSv3 with
lockd); ``filelock.StrictSoftFileLock`` where it does not (an NFS mount with ``nolock`` or
``local_lock=``). filelock never reclaims a strict claim whose holder died (its takeover is
refused on NFS), so this module breaks a claim itself, on proof (this machine, pid gone) or once
it sat unchanged past ``stale_claim`` seconds on this process's monotonic clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import filelock

from .identity import HOST, pid_alive
from .mounts import flock_works
from .options import DEFAULT, StoreOptions

__all__ = ["lock_kind", "manifest_mutex"]

log = logging.getLogger(__name__)
_SHORT_WAIT_S = 0.2
_contended: set[str] = set()  # lock files whose last wait ran out
_contended_lock = threading.Lock()
# Strict claims seen per lock file, kept across acquisitions: a dead host's claim is broken once
# it sat unchanged for ``stale_claim`` seconds in total, even though each wait is short.
_claims_seen: dict[str, dict[str, float]] = {}


def lock_kind(path: Path, opts: StoreOptions = DEFAULT) -> str:
    """``"flock"`` or ``"strict"``: which mutex the filesystem under ``path`` supports."""
    if opts.lock_kind != "auto":
        return opts.lock_kind
    return "flock" if flock_works(path) else "strict"


def _break_stale(
    lock: filelock.StrictSoftFileLock, seen: dict[str, float], now: float, bound: float
) -> None:
    """Remove claims whose holder is provably dead, or that sat unchanged past the bound."""
    claims = lock.claims
    names = {c.name for c in claims}
    for stale in set(seen) - names:
        del seen[stale]
    for claim in claims:
        first = seen.setdefault(claim.name, now)
        dead = claim.hostname == HOST and not pid_alive(claim.pid)
        if dead or now - first >= bound:
            why = "its process is gone" if dead else f"it has not moved for {now - first:.0f}s"
            log.warning(
                "breaking the manifest lock claim of pid %s on %s (%s): %s",
                claim.pid,
                claim.hostname,
                why,
                lock.lock_file,
            )
            with suppress(FileNotFoundError):
                lock.force_break(claim.name)


@contextmanager
def manifest_mutex(lock_path: Path, opts: StoreOptions = DEFAULT) -> Iterator[bool]:
    """Hold the run's mutex for a ``with`` block if it can be had within the bound.

    Yields whether it is held. Never raises for a busy or unusable lock: the caller's commit is
    a compare-and-swap and stays correct without it.
    """
    key = str(lock_path)
    with _contended_lock:
        bound = min(opts.mutex_wait, _SHORT_WAIT_S) if key in _contended else opts.mutex_wait
    lock = None
    try:
        lock = _acquire(lock_path, bound, opts)
    except filelock.Timeout:
        with _contended_lock:
            _contended.add(key)
        log.info(
            "the manifest lock %s stayed busy for %.1fs; committing without it (the commit is "
            "a compare-and-swap, so this is safe)",
            lock_path,
            bound,
        )
    except Exception as exc:
        # A courtesy must never fail a commit: an unusable lock file (permissions, read-only,
        # gone), or filelock's strict claim bookkeeping
        # failing on NFS (an ExceptionGroup when a claim it published was broken under it)
        log.debug("cannot take the manifest lock %s (%s); committing without it", lock_path, exc)
    if lock is not None:
        with _contended_lock:
            _contended.discard(key)
    try:
        yield lock is not None
    finally:
        if lock is not None:
            try:
                lock.release()
            except Exception as exc:  # the commit is done; a claim left behind is broken later
                log.debug("could not release the manifest lock %s: %s", lock_path, exc)


def _acquire(lock_path: Path, bound: float, opts: StoreOptions) -> filelock.BaseFileLock:
    if lock_kind(lock_path.parent, opts) == "flock":
        lock: filelock.BaseFileLock = filelock.FileLock(lock_path, timeout=bound)
        lock.acquire()
        return lock
    strict = filelock.StrictSoftFileLock(lock_path)
    deadline = time.monotonic() + bound
    with _contended_lock:
        seen = _claims_seen.setdefault(str(lock_path), {})
    while True:
        try:
            strict.acquire(timeout=min(0.25, max(bound, 0.01)))
            return strict
        except filelock.Timeout:
            now = time.monotonic()
            _break_stale(strict, seen, now, opts.stale_claim)
            if now >= deadline:
                raise
