"""The runs page's records kept between server starts: ``<project>/.runs-page.json``.

Why: a server's first runs page reads every run's newest revision (config, summary, tags,
notes): 1.4 s for 10,000 runs on a warm local disk, 3.6 s with a cold page cache, minutes on a
slow NFS server, where the page must be up within a second. This file keeps what the last
server read, keyed as the listing index is (``_store/listing.py``): the revision number and
that file's identity (inode, size, mtime). An entry is used only when
``listing.still_newest`` proves it current (two lookups, no read), so it is never stale.

Derived, rebuildable and never the authority: delete it and the next server reads every run
again; a damaged, foreign or other-version file is ignored whole, and a wrong entry only makes
that run read the normal way. Written (temp file, then rename; no fsync: it is a cache) when a
fill read many runs; a read-only root only costs speed. Writers never read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

from .._store.atomic import replace_cache
from .._store.records import Owner
from .run_records import Details, RunRecord

FILE = ".runs-page.json"  # in the project folder; a dot-name is never taken for a run
VERSION = 2  # 2: the search text is saved too


class Saved(NamedTuple):
    """One run as the index read it: the revision, its file's identity, and what it showed."""

    rev: int
    identity: tuple[int, int, int]
    stored_state: str  # the revision's state ("running" shows as crashed once its owner died)
    owner: Owner | None
    record: RunRecord


def load(project_dir: str) -> dict[str, Saved]:
    """The saved runs of a project by folder name; none when the file is missing, damaged,
    foreign or of another version."""
    try:
        with open(os.path.join(project_dir, FILE), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    runs = data.get("runs")
    if not isinstance(runs, dict):
        return {}
    out: dict[str, Saved] = {}
    for name, raw in runs.items():
        saved = _decode(raw)
        if saved is not None:
            out[name] = saved
    return out


def save(project_dir: str, runs: Mapping[str, Saved]) -> None:
    """Replace the project's file; any failure leaves the old one (or none): only slower."""
    payload = json.dumps(
        {"version": VERSION, "runs": {name: _encode(s) for name, s in runs.items()}},
        separators=(",", ":"),
        allow_nan=False,  # flatten() made non-finite floats strings; anything else is a bug
    ).encode()
    replace_cache(Path(project_dir, FILE), payload)


def _encode(s: Saved) -> list[Any]:
    r, d = s.record, s.record.details
    assert d is not None  # only runs read whole are saved
    record = [r.project, r.id, r.created, r.updated, r.last_step, r.attempts]
    shown = [d.name, list(d.tags), d.group, d.job_type, d.notes, d.host, d.config, d.summary]
    return [s.rev, *s.identity, s.stored_state, s.owner, record, shown, d.haystack]


_INT = frozenset({int})
_STR = frozenset({str})
_NUMBER_OR_NONE = frozenset({int, float, type(None)})
_STR_OR_NONE = frozenset({str, type(None)})
_DICT_OR_NONE = frozenset({dict, type(None)})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _decode(raw: object) -> Saved | None:
    """A saved entry, or None for anything not of the shape :func:`_encode` writes.

    The type checks are set look-ups over ``map(type, ...)`` (C-level): 10,000 entries are
    decoded at a server's start, where the page waits."""
    if not (isinstance(raw, list) and len(raw) == 9):
        return None
    fields: list[Any] = raw
    rev, ino, size, mtime, stored_state, owner, record, shown, text = fields
    if not (isinstance(record, list) and len(record) == 6 and isinstance(shown, list)):
        return None
    if len(shown) != 8:
        return None
    project, id_, created, updated, last_step, attempts = record
    name, tags, group, job_type, notes, host, config, summary = shown
    if not (
        _INT.issuperset(map(type, (rev, ino, size, mtime, attempts)))
        and _STR.issuperset(map(type, (stored_state, project, id_, name, notes, text)))
        and type(owner) in _DICT_OR_NONE
        and _NUMBER_OR_NONE.issuperset(map(type, (created, updated)))
        and (last_step is None or type(last_step) is int)
        and type(tags) is list
        and _STR.issuperset(map(type, tags))
        and _STR_OR_NONE.issuperset(map(type, (group, job_type, host)))
        and type(config) is dict
        and type(summary) is dict
        and _SCALARS.issuperset(map(type, config.values()))
        and _SCALARS.issuperset(map(type, summary.values()))
    ):
        return None
    details = Details(name, tuple(tags), group, job_type, notes, host, config, summary, text)
    # The state as stored: the index derives the state shown again at every request.
    shown_record = RunRecord(
        project, id_, stored_state, created, updated, last_step, attempts, rev, details
    )
    return Saved(rev, (ino, size, mtime), stored_state, cast("Owner | None", owner), shown_record)
