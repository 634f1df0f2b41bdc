"""Names and paths: the one place where a user's string may become part of a path.

Run ids follow wandb's documented rule (at most 64 characters, every character outside
``[A-Za-z0-9_-]`` becomes ``-``). Project names follow the same rule. File names saved into a run
are relative paths whose every part passes :func:`check_file_name`. Anything that would be empty,
hidden, ``.``/``..``-like or too long is refused rather than silently changed further, because a
second silent rewrite would make two different inputs collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path, PurePosixPath

from ..errors import CorruptRunError, InvalidIdError

FORMAT_VERSION = 2
ROOT_MARKER = "localrun.json"
LOG = "log"
MANIFEST = "manifest.json"
MANIFEST_LOCK = "manifest.lock"
HISTORY = "history"
FILES = "files"
QUARANTINE = "quarantine"
MEDIA = "media"
RESUME_DIR = ".resume"
MAX_ID = 64
_NON_WORD = re.compile(r"[^A-Za-z0-9_-]")
_SEGMENT = re.compile(r"^(\d{4,})-(\d{6,})\.parquet$")
_REVISION = re.compile(r"^(\d{12,})\.json$")
TMP_TAG = ".tmp-"


def sanitize_id(value: object, what: str = "run id") -> str:
    """Return ``value`` under the id rule, or raise :class:`InvalidIdError` saying why."""
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if len(value) > MAX_ID:
        raise InvalidIdError(
            f"{what} {value[:20]!r}... is {len(value)} characters long; the limit is {MAX_ID}. "
            "Pass a shorter id (localrun.util.generate_id() makes one)."
        )
    clean = _NON_WORD.sub("-", value)
    if not clean or set(clean) <= {"-"} or clean.startswith("."):
        raise InvalidIdError(
            f"{what} {value!r} is empty or has no letter, digit or underscore; "
            "pass an id made of [A-Za-z0-9_-]."
        )
    return clean


def check_file_name(name: str | os.PathLike[str]) -> str:
    """Validate a run file name (a relative POSIX path) and return its normal form.

    Refuses absolute paths, ``..`` parts and temp-file names, which are the ways a name could
    escape ``files/`` or be mistaken for localrun's own bookkeeping.
    """
    text = os.fspath(name).replace("\\", "/")
    path = PurePosixPath(text)
    parts = [p for p in path.parts if p not in ("", ".")]
    if not text or path.is_absolute() or not parts:
        raise InvalidIdError(
            f"file name {text!r} must be a relative path inside the run (like 'ckpt/model.pt')"
        )
    for part in parts:
        if part == ".." or TMP_TAG in part or "\x00" in part:
            raise InvalidIdError(
                f"file name {text!r} has the part {part!r}, which could escape the run's files/ "
                "folder or clash with temp files; use a plain relative path"
            )
    return "/".join(parts)


def resolve_root(dir: str | os.PathLike[str] | None = None) -> Path:
    """``dir`` (the settings pass ``LOCALRUN_DIR`` in), else ``./localruns``, made absolute once.

    Absolute so that a later ``chdir`` in the training script cannot move the run.
    """
    chosen = dir if dir is not None and os.fspath(dir) != "" else "localruns"
    return Path(chosen).expanduser().absolute()


def project_dir(root: Path, project: str) -> Path:
    return root / sanitize_id(project, "project name")


def run_dir(root: Path, project: str, run_id: str) -> Path:
    return project_dir(root, project) / sanitize_id(run_id)


def revision_name(rev: int) -> str:
    return f"{rev:012d}.json"


def parse_revision_name(name: str) -> int | None:
    """The number of a revision file name (``000000000042.json``), or None for anything else."""
    m = _REVISION.match(name)
    return int(m.group(1)) if m else None


def segment_name(attempt: int, seq: int) -> str:
    return f"{attempt:04d}-{seq:06d}.parquet"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """``(attempt, seq)`` of a segment file name, or None for anything else."""
    m = _SEGMENT.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_temp(name: str) -> bool:
    return TMP_TAG in name


# -- staying inside a run ------------------------------------------------------------------
# A run folder is data another process (or user) can change: a manifest edited by hand, a
# folder replaced by a symbolic link. Every path localrun reads, writes or moves inside a run
# is built by one of the two functions below, so none of that can reach outside the run.


def run_label(run_dir: Path) -> str:
    """``project/run_id`` of a run folder, for messages."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def _escape(run_dir: Path, what: str, rel: object, why: str) -> CorruptRunError:
    return CorruptRunError(
        f"run {run_label(run_dir)}: the {what} path {rel!r} {why}; localrun never reads or "
        f"writes outside a run folder ({run_dir}). The run was changed by hand or by another "
        "tool: put back the real folder or file (or remove the entry), then run "
        "`localrun verify --repair`"
    )


def inside(run_dir: Path, rel: object, what: str) -> Path:
    """``run_dir / rel``, refused (:class:`CorruptRunError`) unless it stays inside the run.

    ``rel`` comes from a manifest, so it is checked as untrusted: it must be a relative path
    without ``..`` or NUL, and no part of it that exists may be a symbolic link (a link could
    point anywhere, ``/etc`` or another user's run). Parts that do not exist yet are fine: a
    reader then gets ``FileNotFoundError``, a writer creates them with :func:`safe_dir`.
    The check is ``lstat`` per part; :func:`localrun._store.safe_io.open_inside` also opens
    without following links, so a link swapped in after the check is refused too.
    """
    if not isinstance(rel, str) or not rel:
        raise _escape(run_dir, what, rel, "is not a relative path")
    if "\x00" in rel:
        raise _escape(run_dir, what, rel, "contains a NUL byte")
    path = PurePosixPath(rel)
    if path.is_absolute():
        raise _escape(run_dir, what, rel, "is absolute")
    parts = [p for p in path.parts if p != "."]
    if ".." in parts:
        raise _escape(run_dir, what, rel, "climbs out with '..'")
    if not parts:
        raise _escape(run_dir, what, rel, "names the run folder itself")
    current = run_dir
    for part in parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(mode):
            raise _escape(run_dir, what, rel, f"goes through {_link_text(run_dir, current)}")
    return run_dir.joinpath(*parts)


def safe_dir(run_dir: Path, name: str, create: bool = True) -> Path:
    """The folder ``run_dir / name`` (``history``, ``files/.versions/0001-000000``, ...), each
    part created if missing (with ``create``) and refused if it is a symbolic link or not a
    folder. What writers use before putting anything into a run.

    Without ``create``, a missing part returns the path as is (the caller sees it missing).
    Raises :class:`CorruptRunError`, or the ``OSError`` of a failed ``mkdir``.
    """
    path = inside(run_dir, name, "folder")
    current = run_dir
    for part in path.relative_to(run_dir).parts:
        current = current / part
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            if create:
                raise
            return path
        if stat.S_ISLNK(mode):
            raise _escape(run_dir, "folder", name, f"goes through {_link_text(run_dir, current)}")
        if not stat.S_ISDIR(mode):
            raise CorruptRunError(
                f"run {run_label(run_dir)}: {current.relative_to(run_dir)} is a "
                f"{file_kind(mode)}, not a folder; move it away, then run "
                "`localrun verify --repair`"
            )
    return path


def _link_text(run_dir: Path, link: Path) -> str:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return f"{link.relative_to(run_dir)}, a symbolic link (to {target})"


def file_kind(mode: int) -> str:
    """What a file is, in words, for an error about a file that should be a regular file."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"
