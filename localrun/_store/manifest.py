"""A run's state: made, loaded and changed through the revision log (``revisions.py``).

The state is plain JSON (docs/format.md) so that anything can read it without localrun. Every
change is :func:`update`: read the newest revision, apply a change, commit the next revision
(a compare-and-swap), under the mutex as a courtesy.
"""

from __future__ import annotations

import bisect
import math
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import CorruptRunError, LockTimeout, RunExistsError
from . import atomic, revisions
from .layout import FORMAT_VERSION, MANIFEST, MANIFEST_LOCK, ROOT_MARKER
from .options import DEFAULT, StoreOptions
from .records import Revision

T = TypeVar("T")
Manifest = Revision
_MAX_TRIES = 1000
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def new(project: str, run_id: str, **fields: Any) -> Manifest:
    now = time.time()
    m: Manifest = {
        "format": FORMAT_VERSION,
        "rev": 0,
        "uid": secrets.token_hex(16),
        "project": project,
        "id": run_id,
        "name": run_id,
        "notes": None,
        "tags": [],
        "group": None,
        "job_type": None,
        "config": {},
        "summary": {},
        "state": "running",
        "created": now,
        "updated": now,
        "runtime": 0.0,
        "last_step": -1,
        "dropped_steps": 0,
        "attempts": [],
        "segments": [],
        "rewinds": [],
        "schema": {},
        "files": {},
        "owner": None,
    }
    m.update(cast(Revision, {k: v for k, v in fields.items() if v is not None}))
    return m


def path(run_dir: Path) -> Path:
    return run_dir / MANIFEST


def exists(run_dir: Path) -> bool:
    return revisions.exists(run_dir)


def load(run_dir: Path) -> Manifest:
    """The newest readable revision of a run; :class:`RunNotFoundError` if there is none."""
    return revisions.newest(run_dir).manifest


def snapshot(run_dir: Path) -> revisions.Snapshot:
    return revisions.newest(run_dir)


def create(run_dir: Path, m: Manifest, opts: StoreOptions = DEFAULT) -> None:
    """Commit the first revision of a new run (the caller made the folder exclusively)."""
    try:
        revisions.publish(run_dir, 0, m)
    except revisions.Conflict:
        raise RunExistsError(f"run {run_dir} was created by another process") from None
    revisions.write_copy(run_dir, m)


def update(
    run_dir: Path,
    fn: Callable[[Manifest], T],
    commit: Callable[[T], bool] | None = None,
    opts: StoreOptions = DEFAULT,
    copy: bool = True,
) -> T:
    """Apply ``fn`` to the newest revision and commit the result as the next one.

    The commit is a compare-and-swap: when another process committed first, ``fn`` runs again
    on the newer state (so it must compute its change from ``m``, as every caller does, and may
    raise to abort, as the writer's fence does). The mutex only makes committers take turns.
    ``commit(result)`` may say False (a look that changed nothing): nothing is written then.
    ``copy``: refresh ``manifest.json`` afterwards (the heartbeat skips it: a copy that differs
    only in the heartbeat tells people nothing, and the heartbeat must never wait on a file).
    """
    from .locks import manifest_mutex  # here: readers (ls) never need filelock's import

    committed: Manifest | None = None
    with manifest_mutex(run_dir / MANIFEST_LOCK, opts):
        delay = 0.001
        taken = 0  # a revision number found taken: read it by name on the next try
        for _ in range(_MAX_TRIES):
            try:
                snap = revisions.newest(run_dir, at_least=taken, committing=True)
            except revisions.Conflict:  # taken, but not visible to this client yet: wait
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            result = fn(snap.manifest)
            if commit is not None and not commit(result):
                return result
            try:
                rev = revisions.publish(run_dir, snap.head, snap.manifest)
            except revisions.Conflict as lost:
                taken = lost.rev  # another committer won: take its state, then apply again
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            revisions.prune(run_dir, rev, opts.keep_revisions)
            committed = snap.manifest
            break
        else:
            raise LockTimeout(
                f"run {run_dir}: {_MAX_TRIES} commits in a row lost to other processes; is some "
                "process committing in a loop? Nothing of this change was written"
            )
    if copy:
        revisions.write_copy(run_dir, committed)
    return result


def ensure_root(root: Path) -> None:
    """Create the root and its format marker, or bring an older marker up to this format."""
    marker = root / ROOT_MARKER
    if marker.is_file():
        try:
            info = atomic.read_json(marker)
        except CorruptRunError:
            info = None
        if isinstance(info, dict):
            revisions.check_format(info, marker)
            if info.get("format", 1) == FORMAT_VERSION:
                return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise atomic.storage_error(exc, "create the root", root) from exc
    atomic.write_json(marker, {"format": FORMAT_VERSION, "created": time.time()})


def check_root(root: Path) -> None:
    """Readers: refuse a root of a newer format (never write to it)."""
    marker = root / ROOT_MARKER
    if not marker.is_file():
        return  # not a root (yet): the caller says so when it matters
    try:
        info = atomic.read_json(marker)
    except (FileNotFoundError, CorruptRunError):
        return
    if isinstance(info, dict):
        revisions.check_format(info, marker)


def encode_value(v: Any) -> Any:
    """Summary values in JSON: non-finite floats become the strings NaN/Infinity/-Infinity."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return [encode_value(x) for x in v]
    return v


def decode_value(v: Any) -> Any:
    if isinstance(v, str) and v in _NONFINITE:
        return _NONFINITE[v]
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    return v


def visible_bound(m: Manifest, attempt: int, seq: int) -> int | None:
    """The highest step readers see of segment ``(attempt, seq)``, or None for all of it.

    A rewind ``{attempt, seq, step}`` hides, in every segment written before it (a smaller
    ``(attempt, seq)``), the rows whose step is above ``step``.
    """
    return visible_bounds(m)(attempt, seq)


def visible_bounds(m: Manifest) -> Callable[[int, int], int | None]:
    """:func:`visible_bound` for many segments of one state: O(log rewinds) per segment.

    A run resumed from checkpoints hundreds of times holds hundreds of rewinds, and readers and
    the compaction planner ask for the bound of every listed segment; the naive scan would be
    O(segments x rewinds) on every ``history()`` call.
    """
    rewinds = sorted((r["attempt"], r["seq"], r["step"]) for r in m.get("rewinds", []))
    keys = [(a, s) for a, s, _ in rewinds]
    suffix: list[int | None] = [None] * (len(rewinds) + 1)  # min step of rewinds[i:]
    for i in range(len(rewinds) - 1, -1, -1):
        after = suffix[i + 1]
        step = rewinds[i][2]
        suffix[i] = step if after is None else min(step, after)

    def bound(attempt: int, seq: int) -> int | None:
        return suffix[bisect.bisect_right(keys, (attempt, seq))]

    return bound
