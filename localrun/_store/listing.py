"""Listing a project's runs fast: a per-project index that is derived, rebuildable and never the
authority (issue 8, item 4).

A run's state is its newest revision (``revisions.newest``: list ``log/``, read the highest,
parse it). Done for 10,000 runs, the listing of ``log/`` and the JSON parse cost more than the
whole of reading each run's ``manifest.json``. So each project folder keeps ``.listing.json``:
for each run, the revision number R a listing last read, that file's identity (inode, size,
mtime in ns) and the few fields a listing shows (:data:`FIELDS`).

An entry is used only when it is provably current, checked per run at every listing with two
lookups and no read: ``log/R`` still has the recorded identity, and ``log/R+1`` does not exist.
Revisions are numbered consecutively (each commit creates ``head + 1``), are immutable once in
place, and are pruned oldest first, so when R exists and R+1 does not, R is the newest revision:
the same fact ``revisions.newest`` establishes by listing ``log/`` and probing past its highest
name. Any other outcome (a newer revision, R pruned, the file replaced, a run folder made anew,
an index that is missing, damaged, foreign or of another version) reads the run the normal
way. Runs of format 1 (no ``log/``) and runs that cannot be read are never indexed.

The index is rewritten (temp file, then rename; no fsync: it is a cache) by whoever lists and
finds it out of date (a run added, removed, or changed other than by a live run's commits),
when it can: a read-only root, or a race with another lister, costs only
speed. Deleting it is always safe. It is never read on a commit path and never by a writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LocalrunError
from . import revisions
from .atomic import replace_cache
from .layout import LOG, revision_name
from .records import Revision

INDEX = ".listing.json"  # in the project folder; a dot-name is never taken for a run
INDEX_VERSION = 1
# The fields of a revision a listing shows; every other field is read from the revision itself.
FIELDS = ("project", "id", "name", "state", "created", "updated", "last_step", "attempts", "owner")
_NUMBER = (int, float)


@dataclass
class Listed:
    """One run folder of a project, as a listing found it.

    ``fields``: at least :data:`FIELDS` of revision ``rev`` (the whole revision when
    ``manifest`` is set, i.e. when it was read now). ``rev`` is None for a run of format 1.
    ``error``: why the run cannot be read (then nothing else is set).
    """

    folder: str
    rev: int | None = None
    fields: dict[str, Any] | None = None
    manifest: Revision | None = None
    error: LocalrunError | None = None

    @property
    def dir(self) -> Path:
        """The run folder (made on demand: a Path per run is a tenth of a fast listing)."""
        return Path(self.folder)


def scan(project_dir: Path) -> Iterator[Listed]:
    """Every run folder of ``project_dir`` (dot-folders skipped), by name.

    Reads ``log/`` only for runs whose index entry is not provably current, then brings the
    index up to date (best effort).
    """
    index = _load(project_dir / INDEX)
    fresh: dict[str, list[Any]] = {}
    changed = False
    base = os.fspath(project_dir)
    for name in run_names(base):
        folder = f"{base}{os.sep}{name}"
        entry = index.get(name)
        if entry is not None and _current(folder, entry):
            fresh[name] = entry
            yield Listed(folder, rev=entry[0], fields=entry[4])
            continue
        listed = _read(folder)
        if listed.manifest is not None and listed.rev is not None:
            ident = revision_identity(folder, listed.rev)
            if ident is not None:
                fresh[name] = [listed.rev, *ident, {k: listed.manifest.get(k) for k in FIELDS}]
        new = fresh.get(name)
        # A live run changes at every heartbeat: rewriting the whole index for it at every
        # listing would cost more than reading it. Its stale entry is only a miss.
        live = entry is not None and new is not None and new[4]["state"] == "running"
        changed = changed or (new != entry and not live)
        yield listed
    if (changed or len(fresh) != len(index)) and (fresh or index):
        _save(project_dir / INDEX, fresh)  # a root of format 1 only is left as it is


def run_names(folder: str | os.PathLike[str]) -> list[str]:
    """The names of the sub-folders that may be runs, sorted (no stat: the entry's type)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _rev_path(folder: str, rev: int) -> str:
    return f"{folder}{os.sep}{LOG}{os.sep}{revision_name(rev)}"


def revision_identity(folder: str, rev: int) -> tuple[int, int, int] | None:
    """``log/<rev>``'s inode, size and mtime (ns), or None when it is not there: what a cache
    of something read from revision ``rev`` records, to check it with :func:`still_newest`."""
    try:
        st = os.stat(_rev_path(folder, rev), follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _current(folder: str, entry: list[Any]) -> bool:
    """The entry's revision is still the run's newest, and still the same file."""
    return still_newest(folder, entry[0], (entry[1], entry[2], entry[3]))


def still_newest(folder: str, rev: int, identity: tuple[int, int, int]) -> bool:
    """Whether revision ``rev`` is still the run's newest and still the file ``identity``
    names: two lookups, no read (the proof in this module's docstring). For any cache keyed
    by a run's revision (the dashboard's runs list keeps config and summary so)."""
    return revision_identity(folder, rev) == identity and not os.access(
        _rev_path(folder, rev + 1), os.F_OK, follow_symlinks=False
    )


def _read(folder: str) -> Listed:
    """The run's newest revision, read the normal way (the authority)."""
    try:
        snap = revisions.newest(Path(folder))
    except LocalrunError as exc:
        return Listed(folder, error=exc)
    m = snap.manifest
    has_log = snap.rev > 0 or os.path.isdir(f"{folder}{os.sep}{LOG}")
    return Listed(folder, rev=snap.rev if has_log else None, fields=dict(m), manifest=m)


def _load(path: Path) -> dict[str, list[Any]]:
    """The index's entries, or none when it is missing, damaged, foreign or of another version."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("index") != INDEX_VERSION
        or data.get("fields") != list(FIELDS)
        or not isinstance(data.get("runs"), dict)
    ):
        return {}
    return {name: e for name, e in data["runs"].items() if _valid(e)}


def _valid(entry: object) -> bool:
    """An entry of the right shape: anything else is ignored (read the normal way)."""
    if not isinstance(entry, list) or len(entry) != 5:
        return False
    rev, ino, size, mtime, f = entry
    return (
        type(rev) is int
        and rev >= 0
        and type(ino) is int
        and type(size) is int
        and type(mtime) is int
        and type(f) is dict
        and type(f.get("project")) is str
        and type(f.get("id")) is str
        and type(f.get("state")) is str
        and type(f.get("created")) in _NUMBER
        and type(f.get("updated")) in _NUMBER
        and type(f.get("last_step")) is int
        and type(f.get("attempts")) is list
        and all(type(a) is dict for a in f["attempts"])
        and (f.get("owner") is None or type(f["owner"]) is dict)
    )


def _save(path: Path, runs: dict[str, list[Any]]) -> None:
    """Replace the index; any failure leaves the old one (or none), which is only slower."""
    payload = json.dumps(
        {"index": INDEX_VERSION, "fields": list(FIELDS), "runs": runs}, separators=(",", ":")
    ).encode()
    replace_cache(path, payload)
