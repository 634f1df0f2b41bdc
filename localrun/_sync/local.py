"""A local run as a push sees it: its newest revision and the immutable objects it names.

Read without any lock (DESIGN §8): a push never takes the manifest mutex, so the writer is
never slowed, locked or fenced by sync. What the writer may do meanwhile is commit newer
revisions, prune old ones and remove segments a compaction replaced; every one of those shows
up here as a file that is gone (:class:`Gone`), and the caller reads the run again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .._store import revisions
from .._store.layout import LOG, MANIFEST, MEDIA, ROOT_MARKER, TMP_TAG, inside, revision_name
from .._store.records import Revision
from ..errors import CorruptRunError, RunNotFoundError
from .remote import LocalRun, Obj

_CHUNK = 1 << 20
_TRIES = 20


class Gone(Exception):
    """A file the snapshot names was removed by the writer (pruned, compacted): read again."""


def read_run(run_dir: Path, listed: int | None = None) -> LocalRun:
    """The run's newest readable revision and its exact bytes.

    The bytes are pushed as they are (``log/<rev>.json`` on the remote is the local file), so
    they are read from the file :func:`revisions.newest` chose; a revision pruned in between
    means a newer one exists, so the run is read again.

    ``listed``: the newest revision number a listing of ``log/`` just showed (the engine's
    poll). That file is read and parsed once, without listing ``log/`` again and reading it
    twice, which was a fifth of the CPU of a push to a folder; anything unexpected about it
    (pruned since, unreadable) takes the general way below, which knows what to fall back on.
    """
    if listed:
        quick = _read_listed(run_dir, listed)
        if quick is not None:
            return quick
    for _ in range(_TRIES):
        snap = revisions.newest(run_dir)
        path = run_dir / (LOG + "/" + revision_name(snap.rev) if snap.rev else MANIFEST)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        m = _parse(data, path)
        if m.get("rev", 0) != snap.rev:
            continue  # format 1: the manifest was replaced by the upgrade in between
        return LocalRun(
            project=run_dir.parent.name,  # the remote mirrors the local layout
            run_id=run_dir.name,
            dir=run_dir,
            rev=snap.rev,
            manifest=m,
            revision_bytes=data,
        )
    raise CorruptRunError(f"run {run_dir}: its newest revision kept moving away while read")


def _read_listed(run_dir: Path, rev: int) -> LocalRun | None:
    path = run_dir / LOG / revision_name(rev)
    try:
        data = path.read_bytes()
        m = _parse(data, path)
    except (OSError, CorruptRunError):
        return None
    if m.get("rev") != rev:
        return None
    return LocalRun(run_dir.parent.name, run_dir.name, run_dir, rev, m, data)


def _parse(data: bytes, where: Path) -> Revision:
    try:
        return revisions.parse(json.loads(data), where)
    except ValueError as exc:
        raise CorruptRunError(f"{where} is not valid JSON ({exc})") from exc


def objects(run: LocalRun) -> list[Obj]:
    """Every immutable object the run's revision uses: segments, console chunks and system
    segments it lists, the attempts' git diffs, saved file versions, then the media blobs under
    ``media/``.

    Sizes come from the files (a segment entry's ``bytes`` may be absent in older runs); a
    segment's sha256 is left to the push, which computes it while reading the file once.
    Media blobs are not listed by the revision (rows refer to them), so they are found by
    listing ``media/``: a blob is written before the row that refers to it is committed, so
    every blob this revision's rows name is there by the time the folder is listed.
    """
    out: list[Obj] = []
    listed = [
        *run.manifest.get("segments", []),
        *run.manifest.get("console", []),
        *run.manifest.get("system", []),
    ]
    for entry in listed:
        out.append(Obj(entry["file"], _size(run.dir, entry["file"]), None))
    for attempt in run.manifest.get("attempts", []):  # each attempt's git diff, if it had one
        git = (attempt.get("context") or {}).get("git") or {}
        if isinstance(git.get("diff_file"), str):
            rel = git["diff_file"]
            out.append(Obj(rel, _size(run.dir, rel), Path(rel).stem))
    for versions in (run.manifest.get("files") or {}).values():
        for v in versions:
            size = v.get("size")
            if not isinstance(size, int):
                size = _size(run.dir, v["path"])
            out.append(Obj(v["path"], size, v.get("sha256")))
    out.extend(_media(run.dir))
    return out


def _media(run_dir: Path) -> list[Obj]:
    """The complete media blobs (``media/<2 hex>/<sha256><suffix>``; temp files excluded)."""
    out: list[Obj] = []
    media = run_dir / MEDIA
    try:
        folders = sorted(os.listdir(media))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for folder in folders:
        try:
            names = sorted(os.listdir(media / folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if TMP_TAG in name or not name.startswith(folder):
                continue
            rel = f"{MEDIA}/{folder}/{name}"
            try:
                out.append(Obj(rel, _size(run_dir, rel), name.split(".", 1)[0]))
            except Gone:
                continue
    return out


def _size(run_dir: Path, rel: str) -> int:
    try:
        return os.stat(inside(run_dir, rel, "object")).st_size
    except FileNotFoundError:
        raise Gone(rel) from None


def local_path(run: LocalRun, obj: Obj) -> Path:
    """The object's file, checked to stay inside the run."""
    return inside(run.dir, obj.rel, "object")


def run_dirs(root: Path, project: str | None = None) -> list[Path]:
    """Every run folder under ``root`` (or one project), without reading any of them.

    ``scandir`` (the kind of each entry comes with the listing): a pass over 10,000 runs
    must not cost a ``stat`` per run.
    """
    out: list[Path] = []
    try:
        projects = [project] if project else sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    for p in projects:
        if p.startswith("."):
            continue
        try:
            with os.scandir(os.path.join(root, p)) as it:
                names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        pdir = root / p
        out += [pdir / n for n in names]
    return out


def newest_rev(run_dir: Path) -> int | None:
    """The newest revision number from a listing of ``log/`` alone (a cheap poll, no JSON)."""
    folder = os.path.join(run_dir, LOG)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0 if os.path.isfile(os.path.join(run_dir, MANIFEST)) else None
    except NotADirectoryError:
        return None
    best = None
    for n in names:
        if n.endswith(".json") and len(n) >= 17 and n[:-5].isdigit():
            r = int(n[:-5])
            best = r if best is None or r > best else best
    return best


def root_marker(root: Path) -> bytes:
    """The local root's ``localrun.json``, copied to a replica that has none."""
    try:
        return (root / ROOT_MARKER).read_bytes()
    except FileNotFoundError:
        raise RunNotFoundError(
            f"{root} is not a localrun root (no {ROOT_MARKER}); point --root or LOCALRUN_DIR "
            "at the folder your runs are in"
        ) from None
