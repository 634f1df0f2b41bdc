"""``localrun.restore``: get a saved file back, from the current run or any run.

With wandb, restore downloads from a server and fails offline. Here the file is already on the
shared root: by default the returned ``.name`` is the stored version itself (read-only, never
copied, however large the checkpoint); ``to=`` copies it out. This module sits above both the
writer (the current run) and the readers (any run), which never import each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, overload

from ._query import Api
from ._run import current
from ._store import manifest as mf
from ._store.files import copy_out, latest_entry, sha256_of
from ._store.records import FileVersion
from ._store.safe_io import check_regular
from .errors import CorruptRunError, RunNotFoundError, UsageError


@dataclass(frozen=True)
class RestoredFile:
    """A saved file: ``.name`` is a local path to its content (what ``keras.models.load_model``
    or ``torch.load`` take)."""

    name: str
    run_path: str
    file: str
    version: str
    sha256: str
    size: int

    @property
    def path(self) -> Path:
        return Path(self.name)

    def open(self, mode: str = "rb") -> IO[Any]:
        return open(self.name, mode)


@overload
def restore(
    name: str,
    run_path: str | None = None,
    replace: bool = False,
    root: str | os.PathLike[str] | None = None,
    to: str | os.PathLike[str] | None = None,
    missing_ok: Literal[False] = False,
) -> RestoredFile: ...


@overload
def restore(
    name: str,
    run_path: str | None = None,
    replace: bool = False,
    root: str | os.PathLike[str] | None = None,
    to: str | os.PathLike[str] | None = None,
    *,
    missing_ok: bool,
) -> RestoredFile | None: ...


def restore(
    name: str,
    run_path: str | None = None,
    replace: bool = False,
    root: str | os.PathLike[str] | None = None,
    to: str | os.PathLike[str] | None = None,
    missing_ok: bool = False,
) -> RestoredFile | None:
    """The latest saved version of ``name``: from the current run, or from ``run_path``
    ("project/run_id") under ``root``.

    ``to``: copy it to that path (a folder keeps the name); an existing different file there is
    an error unless ``replace``. Raises :class:`RunNotFoundError` naming the files the run has,
    or, with ``missing_ok=True``, returns None: the resume pattern for a run that was killed
    before its first checkpoint (``ckpt = restore("model.pt", missing_ok=True)``; train from
    scratch when it is None) never wedges a job that is relaunched again and again.
    """
    if run_path is None:
        run = current()
        if run is None:
            raise UsageError(
                f"restore({name!r}) needs a run: call it after localrun.init(...), or pass "
                "run_path='project/run_id'"
            )
        run_dir, path_text = run.dir, run.path
    else:
        stored = Api(root).run(run_path)
        run_dir, path_text = stored.dir, stored.path
    m = mf.load(run_dir)
    entry = latest_entry(m, name)
    if entry is None:
        if missing_ok:
            return None
        have = sorted(m.get("files") or {})
        raise RunNotFoundError(
            f"run {path_text} has no saved file {name!r}; its files: {', '.join(have) or 'none'}"
        )
    source = _stored_version(run_dir, path_text, entry)
    target = source
    if to is not None:
        target = Path(to)
        if target.is_dir():
            target = target / Path(name).name
        if target.exists() and not replace and sha256_of(target) != entry["sha256"]:
            raise UsageError(
                f"{target} exists and differs from {path_text}:{name}; pass replace=True to "
                "overwrite it"
            )
        copy_out(source, target)
    return RestoredFile(
        str(target.absolute()), path_text, name, entry["version"], entry["sha256"], entry["size"]
    )


def _stored_version(run_dir: Path, path_text: str, entry: FileVersion) -> Path:
    """The stored version a manifest entry names, checked: inside the run, never through a
    symbolic link, a regular file (a FIFO would block whoever opens ``.name``), of the size
    the manifest records."""
    rel = entry.get("path")
    try:
        source = check_regular(run_dir, rel, "saved file version")
    except FileNotFoundError:
        raise CorruptRunError(f"run {path_text}: the stored version {rel} is missing") from None
    size = source.stat().st_size
    if size != entry.get("size"):
        raise CorruptRunError(
            f"run {path_text}: {rel} has {size} bytes, the manifest says {entry.get('size')}"
        )
    return source
