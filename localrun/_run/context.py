"""Where an attempt ran: git state, command line, interpreter, packages, host, scheduler job.

On a cluster the question after a surprising curve is "what code was that": this records it once
per attempt, in the attempt's record of the revision (docs/format.md). It is collected on the
flush thread, not in ``init``: ``git`` is a subprocess (tens of milliseconds, or a hang on a sick
NFS mount, hence the timeout), and ``init`` must stay a few milliseconds.
"""

from __future__ import annotations

import getpass
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import TypedDict

from .._settings import scheduler_job
from .._store.identity import HOST

DIFF_LIMIT = 4 * 2**20  # bytes of `git diff` kept (in a blob of its own); the rest is cut
GIT_TIMEOUT = 5.0
# Packages whose version explains a result, recorded when the process has imported them.
WATCHED = (
    "localrun-tracker",
    "numpy",
    "pyarrow",
    "torch",
    "lightning",
    "pytorch-lightning",
    "transformers",
    "accelerate",
    "keras",
    "tensorflow",
    "jax",
    "scikit-learn",
)
_MODULE = {
    "localrun-tracker": "localrun",
    "pytorch-lightning": "pytorch_lightning",
    "scikit-learn": "sklearn",
}


class Git(TypedDict, total=False):
    commit: str
    branch: str | None  # None on a detached HEAD
    dirty: bool
    diff: str  # `git diff HEAD` when dirty, at most DIFF_LIMIT bytes (the run stores it as a blob)
    diff_truncated: bool
    diff_file: str  # where the run stored the diff: context/<sha256>.diff
    diff_bytes: int


class Context(TypedDict, total=False):
    argv: list[str]
    cwd: str
    python: str
    executable: str
    platform: str
    host: str
    user: str | None
    packages: dict[str, str]
    job: dict[str, str] | None  # {"scheduler": "slurm", "id": "123", "array_task": "4"}
    git: Git | None


def collect() -> Context:
    """This process's context. Never raises: what cannot be found is left out."""
    return {
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "host": HOST,
        "user": _user(),
        "packages": _packages(),
        "job": scheduler_job(),
        "git": git_state(os.getcwd()),
    }


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return None


def _packages() -> dict[str, str]:
    out = {}
    for dist in WATCHED:
        if _MODULE.get(dist, dist) not in sys.modules:
            continue
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return out.stdout.decode(errors="replace") if out.returncode == 0 else None


def git_state(cwd: str) -> Git | None:
    """The checkout's commit, branch and uncommitted changes; None outside a git checkout."""
    status = _git(cwd, "status", "--porcelain=v2", "--branch", "--untracked-files=no")
    if status is None:
        return None
    head: dict[str, str] = {}
    dirty = False
    for line in status.splitlines():
        if line.startswith("# branch."):
            key, _, value = line[len("# branch.") :].partition(" ")
            head[key] = value
        elif line and not line.startswith("#"):
            dirty = True
    commit = head.get("oid", "")
    if not commit or commit == "(initial)":
        return None  # a repository with no commit yet
    branch = head.get("head")
    state: Git = {"commit": commit, "branch": None if branch == "(detached)" else branch}
    state["dirty"] = dirty
    if dirty:
        diff = _git(cwd, "diff", "HEAD") or ""
        raw = diff.encode()
        state["diff"] = raw[:DIFF_LIMIT].decode(errors="ignore")
        state["diff_truncated"] = len(raw) > DIFF_LIMIT
    return state
