"""``run.save``: copy files into the run now, at finish, or every time they change.

``"now"`` copies and commits before returning, because the usual caller is about to be killed
(a checkpoint before a preemption). ``"live"`` watches with watchdog: native events on local
disks, polling where events from other hosts never arrive (NFS and other network mounts), and
saves a file once it has stopped changing, so a checkpoint being written is never copied half
way. A version whose content equals the latest one is not stored again.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .._store.files import latest_entry, publish_version, sha256_of
from .._store.layout import check_file_name
from .._store.mounts import is_network_fs
from .._store.records import FileVersion, Revision
from ..errors import UsageError

log = logging.getLogger("localrun")
POLICIES = ("now", "end", "live")
_GLOB_CHARS = set("*?[")
SETTLE_S = 0.3  # a live file is saved once its size and mtime stood still this long


def _glob_base(pattern: str) -> str:
    """The folder part of ``pattern`` before its first glob character (wandb's default)."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            return str(Path(*fixed)) if fixed else "."
        fixed.append(part)
    return os.path.dirname(pattern) or "."


def resolve(pattern: str, base_path: str | None) -> list[tuple[Path, str]]:
    """Every existing file matching ``pattern``, with the name it gets inside the run."""
    absolute = os.path.abspath(pattern)
    base = os.path.abspath(base_path if base_path is not None else _glob_base(pattern))
    if not _GLOB_CHARS & set(pattern) and os.path.isdir(absolute):
        raise UsageError(f"{pattern!r} is a folder; save its files with a glob like '{pattern}/**'")
    out = []
    for match in sorted(glob.glob(absolute, recursive=True)):
        if os.path.isfile(match):
            out.append((Path(match), check_file_name(os.path.relpath(match, base))))
    return out


class FileSaver:
    """The saved-file side of one ``Run``: its policies, its watcher, its version numbers."""

    def __init__(
        self,
        commit: Callable[[list[tuple[str, FileVersion]]], None],
        manifest: Callable[[], Revision],
        run_dir: Path,
        attempt: int,
        watch: str = "auto",
    ) -> None:
        self._commit = commit
        self._manifest = manifest
        self._run_dir = run_dir
        self._attempt = attempt
        self._watch_kind = watch  # "auto", "native" or "poll" (LOCALRUN_WATCH, via the settings)
        self._seq = 0
        self._lock = threading.Lock()
        self._end: list[tuple[str, str | None]] = []
        self._live: list[tuple[str, str | None]] = []
        self._observer: BaseObserver | None = None
        self._pending: dict[str, float] = {}  # live paths that changed, and when
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    def save(
        self, pattern: str | os.PathLike[str], base_path: str | os.PathLike[str] | None, policy: str
    ) -> list[str]:
        if policy not in POLICIES:
            raise UsageError(f"policy={policy!r} is not one of {', '.join(POLICIES)}")
        pattern = os.fspath(pattern)
        base = os.fspath(base_path) if base_path is not None else None
        matches = resolve(pattern, base)
        if policy == "now":
            if not matches:
                raise UsageError(f"no file matches {pattern!r} (from {os.getcwd()})")
            return self._store(matches)
        if policy == "end":
            self._end.append((pattern, base))
            return [name for _, name in matches]
        self._live.append((pattern, base))
        self._watch(pattern)
        names = self._store(matches) if matches else []
        return names or [name for _, name in matches]

    def _store(self, matches: list[tuple[Path, str]]) -> list[str]:
        """Publish a version of each file whose content changed; commit them in one update."""
        with self._lock:
            m = self._manifest()
            entries = []
            for src, name in matches:
                latest = latest_entry(m, name)
                if (
                    latest is not None
                    and latest["size"] == src.stat().st_size
                    and latest["sha256"] == sha256_of(src)
                ):
                    continue
                entries.append(
                    (name, publish_version(self._run_dir, src, name, self._attempt, self._seq))
                )
                self._seq += 1
            if entries:
                self._commit(entries)
            return [name for name, _ in entries]

    # -- live -------------------------------------------------------------------------------
    def _watch(self, pattern: str) -> None:
        folder = os.path.abspath(_glob_base(pattern))
        os.makedirs(folder, exist_ok=True)
        if self._observer is None:
            forced = self._watch_kind
            polling = forced == "poll" or (forced != "native" and is_network_fs(Path(folder)))
            self._observer = PollingObserver(timeout=0.5) if polling else Observer()
            self._observer.daemon = True
            self._observer.start()
            self._worker = threading.Thread(
                target=self._settle_loop, daemon=True, name="localrun-live-files"
            )
            self._worker.start()
        self._observer.schedule(_Changed(self), folder, recursive=True)

    def _changed(self, path: str) -> None:
        for pattern, _ in self._live:
            if fnmatch.fnmatch(path, os.path.abspath(pattern)):
                self._pending[path] = time.monotonic()

    def _settle_loop(self) -> None:
        seen: dict[str, tuple[int, int]] = {}
        while not self._stop.wait(0.1):
            self._flush_settled(seen, final=False)

    def _flush_settled(self, seen: dict[str, tuple[int, int]], final: bool) -> None:
        for path, when in list(self._pending.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._pending.pop(path, None)
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if not final and (seen.get(path) != sig or time.monotonic() - when < SETTLE_S):
                seen[path] = sig
                continue
            self._pending.pop(path, None)
            try:
                for pattern, base in self._live:
                    matches = [m for m in resolve(pattern, base) if str(m[0]) == path]
                    if matches:
                        self._store(matches)
                        break
            except Exception as exc:  # a failed live save must not stop the watcher
                log.warning("localrun: could not save %s: %s", path, exc)

    def close(self) -> None:
        """At finish: stop watching, save what changed since, then the ``"end"`` files."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._stop.set()
            if self._worker is not None:
                self._worker.join(timeout=5)
            for pattern, base in self._live:
                for path, _ in resolve(pattern, base):
                    self._pending.setdefault(str(path), 0.0)
            self._flush_settled({}, final=True)
        for pattern, base in self._end:
            matches = resolve(pattern, base)
            if matches:
                self._store(matches)
            else:
                log.warning(
                    "localrun: run.save(%r, policy='end'): no file matched at finish", pattern
                )


class _Changed(FileSystemEventHandler):
    def __init__(self, saver: FileSaver) -> None:
        self._saver = saver

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self._saver._changed(os.fsdecode(path))
