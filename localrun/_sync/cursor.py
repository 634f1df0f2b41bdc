"""Sync cursors: how far each remote holds each run, under ``<root>/.sync/``.

``<root>/.sync/<remote key>/<project>/<run_id>.json``, one small JSON file per remote and run,
replaced atomically. The remote key is readable and unique per URL (a slug plus a hash), and
``<root>/.sync/<remote key>/remote.json`` records the URL it stands for.

For a replica a cursor is only an optimisation: it lets a pass skip a run whose newest
revision is already pushed without asking the remote anything. A lost, stale or foreign
cursor costs a few remote look-ups, never a wrong push. A root where cursors cannot be written
(read-only) still syncs, just without skipping.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from .._store import atomic
from .._store.layout import is_temp
from .remote import Cursor

log = logging.getLogger(__name__)
SYNC_DIR = ".sync"


@functools.lru_cache(maxsize=64)
def remote_key(url: str) -> str:
    """A folder name for ``url``: readable, and unique per URL."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", url.split("://", 1)[-1]).strip("-")[:40]
    return f"{slug or 'remote'}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


def _path(root: Path, url: str, project: str, run_id: str) -> str:
    # a string, not a Path: built once per run by every pass, where pathlib's parsing showed
    return f"{root}/{SYNC_DIR}/{remote_key(url)}/{project}/{run_id}.json"


def load(root: Path, url: str, project: str, run_id: str) -> Cursor | None:
    """The cursor of ``url`` for the run, or None (absent, unreadable or another remote's)."""
    path = _path(root, url, project, run_id)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the sync cursor %s: %s", path, exc)
        return None
    return _cursor(data, url, project, run_id)


def _cursor(data: Any, url: str, project: str, run_id: str) -> Cursor | None:
    if not isinstance(data, dict) or data.get("remote") != url:
        return None
    uid, rev, extra = data.get("uid"), data.get("rev"), data.get("extra", {})
    if not isinstance(uid, str) or not isinstance(rev, int) or not isinstance(extra, dict):
        return None
    return Cursor(url, project, run_id, uid, rev, extra)


def save(root: Path, cursor: Cursor) -> None:
    """Record ``cursor`` (best effort: a cursor is never needed for correctness)."""
    folder = root / SYNC_DIR / remote_key(cursor.remote)
    path = folder / cursor.project / f"{cursor.run_id}.json"
    data = {
        "remote": cursor.remote,
        "project": cursor.project,
        "id": cursor.run_id,
        "uid": cursor.uid,
        "rev": cursor.rev,
        "extra": cursor.extra,
    }
    try:
        register(root, cursor.remote)
        path.parent.mkdir(parents=True, exist_ok=True)
        # No indent: json's C encoder (indent takes the pure-Python one, 4x slower).
        _replace_quickly(path, json.dumps(data, sort_keys=True).encode())
    except OSError as exc:
        log.warning("could not record the sync cursor %s: %s", path, exc)


def _replace_quickly(path: Path, payload: bytes) -> None:
    """Atomic (readers see the old or the new cursor) but not fsynced: after a power cut a
    cursor may be old or unreadable, which only makes the next sync ask the remote again."""
    tmp = atomic.temp_path(path)
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def register(root: Path, url: str) -> Path:
    """The folder of ``url`` under ``.sync/``, with the ``remote.json`` that names it."""
    folder = root / SYNC_DIR / remote_key(url)
    if not (folder / "remote.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_json(folder / "remote.json", {"remote": url})
    return folder


def all_for(root: Path, url: str) -> dict[tuple[str, str], Cursor]:
    """Every cursor of ``url``: (project, run_id) -> cursor."""
    folder = root / SYNC_DIR / remote_key(url)
    out: dict[tuple[str, str], Cursor] = {}
    try:
        projects = os.listdir(folder)
    except FileNotFoundError:
        return out
    for project in projects:
        pdir = folder / project
        if not pdir.is_dir():
            continue
        for name in os.listdir(pdir):
            if name.endswith(".json") and not is_temp(name):
                run_id = name[: -len(".json")]
                c = load(root, url, project, run_id)
                if c is not None:
                    out[(project, run_id)] = c
    return out


def remotes_with_cursors(root: Path) -> list[str]:
    """The URLs that have cursors under this root (what ``sync --status`` reports on)."""
    out = []
    try:
        keys = sorted(os.listdir(root / SYNC_DIR))
    except FileNotFoundError:
        return []
    for key in keys:
        try:
            data = json.loads((root / SYNC_DIR / key / "remote.json").read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("remote"), str):
            out.append(data["remote"])
    return out
