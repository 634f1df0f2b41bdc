"""The revision log (DESIGN §5): every change to a run's state is a new immutable revision.

``log/<rev:012d>.json`` holds a full snapshot of the run's state (small: segment list, attempts,
lease, files). Creating revision N+1 exclusively (``os.link`` of a fsynced temp file, which fails
with EEXIST when the name exists, on local disks and on NFS where the server decides) *is* the
commit: a compare-and-swap on the revision number. A committer that loses re-reads and re-applies
its change (or stops, if the change was a fenced one). So no update is ever lost, whatever a lock
does. ``manifest.json`` is a copy of the newest revision, replaced after each commit: a hint for
readers and people that may lag, never the authority.

Reading the newest revision is O(1): the hint names revision R; R+1 must not exist and R must
(so the hint is not a stale copy written late by a superseded process). Only when that check
fails is ``log/`` listed. A revision that cannot be read (damaged) is skipped for the one before
it; the next commit gets the number after the damaged one, so nothing ever overwrites it.

Runs of format 1 have no ``log/``: their ``manifest.json`` is revision 0, and their first commit
by this version creates ``log/000000000001.json`` (the upgrade in place, exclusive like any
commit).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import CorruptRunError, FormatVersionError, RunNotFoundError
from . import atomic
from .layout import FORMAT_VERSION, LOG, MANIFEST, parse_revision_name, revision_name
from .records import Revision

log = logging.getLogger(__name__)
Manifest = Revision
PRUNE_EVERY = 16


class Conflict(Exception):
    """Another process created revision ``rev``, which this commit wanted: re-read and retry."""

    def __init__(self, rev: int) -> None:
        super().__init__(rev)
        self.rev = rev


@dataclass
class Snapshot:
    """A run's state as of revision ``rev``; ``head`` is the highest revision number on disk
    (above ``rev`` only when newer revisions are damaged). The next commit creates ``head + 1``."""

    rev: int
    head: int
    manifest: Manifest


def rev_path(run_dir: Path, rev: int) -> Path:
    return run_dir / LOG / revision_name(rev)


def check_format(data: dict[str, Any], where: Path | str) -> None:
    """Refuse what a newer localrun wrote: never read it half, never rewrite it older."""
    found = data.get("format", 1)
    if not isinstance(found, int) or isinstance(found, bool):
        raise CorruptRunError(f"{where} has format {found!r}, which is not a version number")
    if found > FORMAT_VERSION:
        raise FormatVersionError(
            f"{where} was written by localrun format {found}; this localrun reads format "
            f"{FORMAT_VERSION} and older. Upgrade localrun on this machine; nothing was changed",
            found,
            FORMAT_VERSION,
        )


_SHAPE: dict[str, tuple[type, ...]] = {
    "project": (str,),
    "id": (str,),
    "created": (int, float),
    "last_step": (int,),
    "state": (str,),
    "segments": (list,),
    "attempts": (list,),
    "rewinds": (list,),
    "schema": (dict,),
    "summary": (dict,),
    "config": (dict,),
}
_ENTRY_SHAPE: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "attempt": (int,),
    "seq": (int,),
    "rows": (int,),
    "min_step": (int,),
    "max_step": (int,),
}


def parse(data: Any, where: Path | str) -> Manifest:
    """Check a run state's shape, so a hand-edited or foreign file is one run's clear error
    (a reader of it never fails later with a KeyError deep inside ``ls`` or ``verify``)."""
    if not isinstance(data, dict):
        raise CorruptRunError(f"{where} is not a localrun run state (not a JSON object)")
    check_format(data, where)
    for key, types in _SHAPE.items():
        value = data.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise CorruptRunError(
                f"{where} is not a localrun run state: {key!r} is {value!r}, not "
                f"{' or '.join(t.__name__ for t in types)}"
            )
    for entry in data["segments"]:
        bad = not isinstance(entry, dict) or any(
            not isinstance(entry.get(k), t) or isinstance(entry.get(k), bool)
            for k, t in _ENTRY_SHAPE.items()
        )
        if bad:
            raise CorruptRunError(f"{where} lists a segment of unexpected shape: {entry!r:.200}")
    for r in data["rewinds"]:
        if not isinstance(r, dict) or not all(
            isinstance(r.get(k), int) and not isinstance(r.get(k), bool)
            for k in ("attempt", "seq", "step")
        ):
            raise CorruptRunError(f"{where} lists a rewind of unexpected shape: {r!r:.200}")
    files = data.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(v, list)
        and all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in v)
        for v in files.values()
    ):
        raise CorruptRunError(f"{where} has a saved-files map of unexpected shape")
    for a in data["attempts"]:
        if not isinstance(a, dict) or not isinstance(a.get("attempt"), int):
            raise CorruptRunError(f"{where} lists an attempt of unexpected shape: {a!r:.200}")
    return cast(Revision, data)


def read_revision(run_dir: Path, rev: int) -> Manifest:
    path = rev_path(run_dir, rev)
    m = parse(atomic.read_json(path), path)
    if m.get("rev") != rev:
        raise CorruptRunError(f"{path} says it is revision {m.get('rev')!r}, not {rev}")
    return m


def list_revisions(run_dir: Path) -> list[int]:
    """Every revision number in ``log/``, ascending (empty for a format-1 run)."""
    try:
        names = os.listdir(run_dir / LOG)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise atomic.storage_error(exc, "list", run_dir / LOG) from exc
    return sorted(r for n in names if (r := parse_revision_name(n)) is not None)


def _hint(run_dir: Path) -> tuple[Manifest | None, Exception | None]:
    path = run_dir / MANIFEST
    try:
        return parse(atomic.read_json(path), path), None
    except FileNotFoundError:
        return None, None
    except FormatVersionError:
        raise
    except CorruptRunError as exc:
        return None, exc


def exists(run_dir: Path) -> bool:
    """Whether a run's state is on disk (any revision, or a format-1 manifest)."""
    return (run_dir / MANIFEST).is_file() or bool(list_revisions(run_dir))


def newest(run_dir: Path, at_least: int = 0, committing: bool = False) -> Snapshot:
    """The newest readable revision; :class:`RunNotFoundError` when there is none at all.

    Found from ``log/`` alone: never from ``manifest.json``, which other clients may hold open
    (on NFSv4 a reader of a file holds a delegation that every replace of it must recall, which
    stalled commits for seconds when the commit path read the copy). ``at_least``: a revision
    number a commit just found taken (EEXIST comes from the server): it exists, so it is read by
    name even where this client's directory listing and name lookups still lag.
    ``committing``: the caller will commit on top of the result, so a head that is listed but
    cannot be opened yet is :class:`Conflict` too. Falling back to an older revision there would
    commit the head's number + 1 on older state and drop the head's change; a reader may fall
    back (it sees a slightly older state), a committer must wait for the head.
    """
    revs = list_revisions(run_dir)
    if at_least and (not revs or revs[-1] < at_least):
        revs.append(at_least)
    if revs:
        head = revs[-1]
        while rev_path(run_dir, head + 1).exists():  # a directory listing may lag on NFS
            head += 1
            revs.append(head)
        errors: list[str] = []
        for rev in sorted(set(revs), reverse=True):
            try:
                m = read_revision(run_dir, rev)
            except FileNotFoundError:
                if rev == at_least or (committing and rev == head):
                    raise Conflict(rev) from None  # it exists: this client cannot open it yet
                continue  # pruned between the listing and the read
            except CorruptRunError as exc:
                errors.append(str(exc))
                log.warning(
                    "revision %d of %s cannot be read (%s); using an older one", rev, run_dir, exc
                )
                continue
            return Snapshot(rev, head, m)
        raise CorruptRunError(
            f"run {run_dir}: no revision in {LOG}/ can be read ({'; '.join(errors[:3])}); run "
            "`localrun verify --repair`"
        )
    hint, hint_error = _hint(run_dir)  # only a run of format 1 has no log/
    if hint is not None and hint.get("format", 1) == 1:
        return Snapshot(0, 0, hint)  # format 1: manifest.json is the state
    if hint_error is not None:
        raise CorruptRunError(
            f"{hint_error}; run `localrun verify --repair` to rebuild the run from its segments"
        )
    raise RunNotFoundError(f"no run at {run_dir} (no {LOG}/ and no {MANIFEST})")


def encode(m: Manifest) -> bytes:
    """A revision's bytes: compact JSON. ``indent`` would make ``json`` use its pure-Python
    encoder, 4x slower: a run resumed 100 times holds 100 attempts, and every commit (each
    flush, heartbeat and resume) encodes the whole state twice (the revision and its copy).
    ``python -m json.tool manifest.json`` shows it indented."""
    return json.dumps(m, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()


def publish(run_dir: Path, head: int, m: Manifest) -> int:
    """Commit ``m`` as revision ``head + 1``; :class:`Conflict` if another process got there.

    The commit has happened once the link succeeds. The ``manifest.json`` copy is written apart
    (:func:`write_copy`), after the mutex is let go.
    """
    rev = head + 1
    m["rev"] = rev
    m["format"] = FORMAT_VERSION
    m["updated"] = time.time()
    payload = encode(m)

    def write(path: Path) -> None:
        path.write_bytes(payload)

    folder = run_dir / LOG
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise atomic.storage_error(exc, "create", folder) from exc
    try:
        atomic.publish_file(rev_path(run_dir, rev), write)
    except FileExistsError:
        raise Conflict(rev) from None
    return rev


def write_copy(run_dir: Path, m: Manifest) -> None:
    """Refresh ``manifest.json``, the copy of a committed revision for people and other tools.

    Best effort and outside every lock: the revision is committed already, and localrun itself
    never reads the copy of a format-2 run. A replace that stalls (another client holding the
    file open on NFSv4) or fails delays nobody's commit and loses nothing.
    """
    payload = encode(m)

    def write(path: Path) -> None:
        path.write_bytes(payload)

    try:
        atomic.replace_file(run_dir / MANIFEST, write)
    except OSError as exc:
        log.warning("could not refresh %s of %s: %s", MANIFEST, run_dir, exc)


def copy_lists(run_dir: Path, files: set[str]) -> bool:
    """Does ``manifest.json`` (the copy) still list one of the segment ``files``?

    Why: tools that read the copy (docs/format.md's DuckDB query) join it with the files on
    disk. A merge removes its parts once a revision replaces them; if refreshing the copy
    failed (``write_copy`` only logs), a part removed now would be a part the copy lists and
    a tool cannot find, while the merged file is one it does not list: rows gone for that
    tool. A copy that is missing or does not parse is one no tool can use: False.
    """
    try:
        copy = json.loads((run_dir / MANIFEST).read_bytes())
        listed = {s.get("file") for s in copy.get("segments") or [] if isinstance(s, dict)}
    except (OSError, ValueError, AttributeError):
        return False
    return not listed.isdisjoint(files)


def prune(run_dir: Path, rev: int, keep: int) -> None:
    """Remove revisions older than the newest ``keep`` (every PRUNE_EVERY commits).

    The newest is never removed; a reader holding an older number re-reads the newest.
    """
    if keep <= 0 or rev % PRUNE_EVERY:
        return
    for old in list_revisions(run_dir):
        if old >= rev - keep:
            break
        try:
            rev_path(run_dir, old).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("could not prune revision %d of %s: %s", old, run_dir, exc)
            return
