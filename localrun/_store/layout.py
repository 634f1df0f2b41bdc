"""Names and paths: the one place where a user's string may become part of a path.

Run ids follow wandb's documented rule (at most 64 characters, every character outside
``[A-Za-z0-9_-]`` becomes ``-``). Project names follow the same rule. File names saved into a run
are relative paths whose every part passes :func:`check_file_name`. Anything that would be empty,
hidden, ``.``/``..``-like or too long is refused rather than silently changed further, because a
second silent rewrite would make two different inputs collide.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ..errors import InvalidIdError

FORMAT_VERSION = 2
ROOT_MARKER = "localrun.json"
LOG = "log"
MANIFEST = "manifest.json"
MANIFEST_LOCK = "manifest.lock"
HISTORY = "history"
FILES = "files"
QUARANTINE = "quarantine"
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
