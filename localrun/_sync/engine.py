"""One sync pass: push the chosen runs of a root to one remote, and say what happened.

What the command line and the daemon share. A run whose newest revision number (a listing of
its ``log/``, no JSON and no Parquet read) is not above its cursor's is skipped without asking
the remote anything, which is what makes a no-op pass over thousands of runs cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .._store.layout import sanitize_id
from ..errors import LocalrunError, RemoteUnavailableError, RunNotFoundError
from . import cursor, local
from .remote import Progress, Remote

log = logging.getLogger(__name__)


class NoProgress:
    def advance(self, nbytes: int) -> None:
        pass


@dataclass
class Summary:
    """What one pass did, for the one-line summary and the exit code."""

    remote: str
    runs: int = 0
    pushed: int = 0
    current: int = 0  # already held by the remote
    nbytes: int = 0
    failed: list[tuple[str, LocalrunError]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        text = (
            f"{self.remote}: {self.runs} run{'s' if self.runs != 1 else ''}, "
            f"{self.pushed} pushed ({_size(self.nbytes)}), {self.current} already there"
        )
        if self.failed:
            text += f", {len(self.failed)} failed"
        return f"{text} in {self.seconds:.1f} s"

    @property
    def exit_code(self) -> int:
        return max((e.exit_code for _, e in self.failed), default=0)


class Counting:
    """Counts the bytes a push sends and hands them on to the caller's progress."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self.nbytes = 0

    def advance(self, nbytes: int) -> None:
        self.nbytes += nbytes
        self.inner.advance(nbytes)


def select(root: Path, target: str | None) -> list[Path]:
    """The run folders ``target`` names: ``project/run_id``, ``project``, or all (None)."""
    if not target:
        return local.run_dirs(root)
    project, _, run_id = target.partition("/")
    project = sanitize_id(project, "project name")
    if run_id:
        rdir = root / project / sanitize_id(run_id)
        if local.newest_rev(rdir) is None:
            raise RunNotFoundError(f"no run {project}/{run_id} under {root}")
        return [rdir]
    if not (root / project).is_dir():
        raise RunNotFoundError(f"no project {project!r} under {root}")
    return local.run_dirs(root, project)


def push_run(root: Path, remote: Remote, rdir: Path, progress: Progress) -> bool:
    """Push one run if the remote may lack its newest revision; True when something moved.

    :class:`SyncError` and the run's own errors (damaged, a newer format) pass to the caller.
    """
    listed = local.newest_rev(rdir)
    if listed is None:
        return False  # not a run (yet): a folder being created
    old = cursor.load(root, remote.url, rdir.parent.name, rdir.name)
    if old is not None and old.rev >= listed:
        return False
    run = local.read_run(rdir, listed)
    puts = getattr(remote, "puts", None)
    new = remote.push(run, old, progress)
    if new != old:
        cursor.save(root, new)
    if isinstance(puts, int):  # a replica counts what it wrote
        return int(getattr(remote, "puts", 0)) > puts
    return old is None or old.rev != new.rev or old.uid != new.uid


def sync_pass(
    root: Path,
    remote: Remote,
    rdirs: list[Path],
    progress: Progress | None = None,
    on_run: Callable[[Path], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Summary:
    """Push each of ``rdirs`` to ``remote``; a run's failure is recorded, not raised, except
    that an unavailable remote ends the pass (every other run would fail the same way)."""
    started = time.monotonic()
    counting = Counting(progress or NoProgress())
    summary = Summary(remote.url)
    for rdir in rdirs:
        if stop is not None and stop():
            break
        summary.runs += 1
        label = f"{rdir.parent.name}/{rdir.name}"
        try:
            if push_run(root, remote, rdir, counting):
                summary.pushed += 1
            else:
                summary.current += 1
        except RemoteUnavailableError as exc:
            summary.failed.append((label, exc))
            break
        except LocalrunError as exc:  # this run only (damaged, newer format, conflict, ...)
            log.warning("%s: %s", label, exc)
            summary.failed.append((label, exc))
        finally:
            if on_run is not None:
                on_run(rdir)
    summary.nbytes = counting.nbytes
    summary.seconds = time.monotonic() - started
    return summary


@dataclass(frozen=True)
class Status:
    """One run's place on one remote, from the cursor alone (no remote asked)."""

    remote: str
    run: str
    local_rev: int | None
    pushed_rev: int | None

    @property
    def state(self) -> str:
        if self.pushed_rev is None:
            return "never pushed"
        if self.local_rev is None or self.pushed_rev >= self.local_rev:
            return "up to date"
        return "pending"


def status(root: Path, url: str, rdirs: list[Path]) -> list[Status]:
    cursors = cursor.all_for(root, url)
    out = []
    for rdir in rdirs:
        c = cursors.get((rdir.parent.name, rdir.name))
        out.append(
            Status(
                url,
                f"{rdir.parent.name}/{rdir.name}",
                local.newest_rev(rdir),
                c.rev if c else None,
            )
        )
    return out


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
