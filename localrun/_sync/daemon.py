"""``localrun sync --watch``: keep remotes up to date with a root while runs are written.

Finding changes: a run changes only by a new revision in its ``log/``. On a local disk,
watchdog (inotify) reports those at once; on a network mount (NFS, Lustre, ...) other hosts'
writes raise no event, so every ``poll`` seconds each run's ``log/`` is listed and its newest
revision number compared with the one last seen (no JSON, no Parquet read). Both run: events
make pushes prompt where they work, the poll makes them certain everywhere.

Each remote has its own queue of runs to push and its own backoff: a remote that is down,
slow, full or refuses the token (:class:`RemoteUnavailableError`) is retried after 1, 2, 4, ...
up to 300 s, while the others go on. A run the remote refuses for good (another run under the
same id, a damaged local run) is reported once and tried again only when it changes. SIGTERM
or SIGINT stops the daemon within one chunk of a push (a push cut anywhere is safe: the next
one completes it). The daemon never writes to a run: only cursors and its status file under
``<root>/.sync/``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .. import _settings
from .._store import atomic
from .._store.layout import LOG, is_temp
from .._store.mounts import is_network_fs
from ..errors import LocalrunError, RemoteUnavailableError
from . import cursor, engine, local
from .remote import Remote

log = logging.getLogger(__name__)
MIN_BACKOFF = 1.0
MAX_BACKOFF = 300.0
STATUS_FILE = "daemon.json"


class Stopped(Exception):
    """Raised inside a push when the daemon was told to stop (SIGTERM): the push is cut."""


@dataclass
class _Target:
    """One remote and what is owed to it."""

    remote: Remote
    pending: set[Path] = field(default_factory=set)
    delay: float = 0.0
    retry_at: float = 0.0  # monotonic
    last_error: str | None = None
    pushed: int = 0


class _StopCheck:
    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def advance(self, nbytes: int) -> None:
        if self.stop.is_set():
            raise Stopped


class Daemon:
    """Watch ``root`` (or the runs ``select`` picks) and push changes to ``remotes``."""

    def __init__(
        self,
        root: Path,
        remotes: list[Remote],
        select: Callable[[], list[Path]],
        poll: float = 2.0,
        watch: str | None = None,
        say: Callable[[str], None] = print,
    ) -> None:
        self.root, self.select, self.poll, self.say = root, select, poll, say
        self.targets = [_Target(r) for r in remotes]
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.seen: dict[Path, int | None] = {}
        # LOCALRUN_WATCH: "poll" where inotify is known not to deliver (or is not allowed)
        watch = watch or _settings.watch_kind()
        self.use_events = watch == "native" or (watch == "auto" and not is_network_fs(root))
        self._events: set[Path] = set()
        self._lock = threading.Lock()

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (or :meth:`request_stop`)."""
        self._install_signals()
        observer = self._start_observer() if self.use_events else None
        how = "file events and a poll" if observer is not None else "polling"
        self.say(
            f"watching {self.root} ({how} every {self.poll:g} s), pushing to "
            + ", ".join(t.remote.url for t in self.targets)
        )
        next_scan = 0.0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_scan:
                    self._scan()
                    next_scan = now + self.poll
                self._take_events()
                for target in self.targets:
                    if not self.stop.is_set():
                        self._serve(target)
                self._write_status()
                self.wake.wait(self._sleep_for(next_scan))
                self.wake.clear()
        except Stopped:
            pass
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            for t in self.targets:
                t.remote.close()
            self._write_status(stopped=True)
        self.say("stopped")

    def request_stop(self, *_: Any) -> None:
        self.stop.set()
        self.wake.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(_signum: int, _frame: FrameType | None) -> None:
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _sleep_for(self, next_scan: float) -> float:
        now = time.monotonic()
        until = next_scan
        for t in self.targets:
            if t.pending and t.retry_at > now:
                until = min(until, t.retry_at)
        return max(0.01, until - now)

    # -- finding changes ----------------------------------------------------------------

    def _scan(self) -> None:
        """Mark every run whose newest revision number changed since it was last seen."""
        try:
            for rdir in self.select():
                self._check(rdir)
        except (LocalrunError, OSError) as exc:  # the root unmounted for a moment, ...
            self.say(f"cannot look for changes under {self.root}: {exc}")

    def _check(self, rdir: Path) -> None:
        rev = local.newest_rev(rdir)
        if rev is None or self.seen.get(rdir, -1) == rev:
            return
        self.seen[rdir] = rev
        for t in self.targets:
            t.pending.add(rdir)

    def _take_events(self) -> None:
        with self._lock:
            events, self._events = self._events, set()
        if not events:
            return
        try:
            chosen = set(self.select())
        except (LocalrunError, OSError):
            return  # the next scan says why
        for rdir in events & chosen:
            self._check(rdir)

    def _start_observer(self) -> Any:
        try:
            from watchdog.events import FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return None
        daemon = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                daemon._on_event(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))

        observer = Observer()
        try:
            observer.schedule(Handler(), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:  # no inotify watches left, ...: the poll does it all
            log.warning("cannot watch %s for changes (%s); polling only", self.root, exc)
            return None
        return observer

    def _on_event(self, path: str) -> None:
        try:
            rel = Path(path).relative_to(self.root).parts
        except ValueError:
            return
        # <project>/<run>/log/<rev>.json: a commit; everything else follows from one
        if len(rel) < 4 or rel[2] != LOG or rel[0].startswith(".") or is_temp(rel[-1]):
            return
        with self._lock:
            self._events.add(self.root / rel[0] / rel[1])
        self.wake.set()

    # -- pushing ------------------------------------------------------------------------

    def _serve(self, target: _Target) -> None:
        if not target.pending or time.monotonic() < target.retry_at:
            return
        progress = _StopCheck(self.stop)
        for rdir in sorted(target.pending):
            if self.stop.is_set():
                return
            label = f"{rdir.parent.name}/{rdir.name}"
            try:
                if engine.push_run(self.root, target.remote, rdir, progress):
                    target.pushed += 1
                    self.say(f"pushed {label} to {target.remote.url}")
            except RemoteUnavailableError as exc:
                self._back_off(target, exc)
                return
            except (LocalrunError, OSError) as exc:  # this run only: the others go on
                self.say(f"cannot push {label} to {target.remote.url}: {exc}")
            except Exception as exc:  # a bug must not end the daemon of a whole cluster
                log.exception("pushing %s to %s failed", label, target.remote.url)
                self.say(f"cannot push {label} to {target.remote.url}: {exc!r}")
            target.pending.discard(rdir)
        if target.delay:
            self.say(f"{target.remote.url} is reachable again")
        target.delay, target.last_error = 0.0, None

    def _back_off(self, target: _Target, exc: RemoteUnavailableError) -> None:
        target.delay = min(MAX_BACKOFF, max(MIN_BACKOFF, target.delay * 2))
        target.retry_at = time.monotonic() + target.delay
        target.last_error = str(exc)
        self.say(f"{exc} (retrying in {target.delay:g} s)")

    def _write_status(self, stopped: bool = False) -> None:
        """``<root>/.sync/<remote>/daemon.json``: what ``sync --status`` shows of a daemon."""
        for t in self.targets:
            folder = self.root / cursor.SYNC_DIR / cursor.remote_key(t.remote.url)
            now = time.monotonic()
            data = {
                "remote": t.remote.url,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "state": "stopped" if stopped else "backing off" if t.last_error else "watching",
                "pending": len(t.pending),
                "last_error": t.last_error,
                "retry_in": round(max(0.0, t.retry_at - now), 1) if t.last_error else None,
                "updated": time.time(),
            }
            path = folder / STATUS_FILE
            try:
                old = json.loads(path.read_bytes()) if path.is_file() else None
            except (OSError, ValueError):
                old = None
            if isinstance(old, dict) and _same(old, data):
                continue
            try:
                cursor.register(self.root, t.remote.url)
                atomic.write_json(path, data)
            except OSError as exc:
                log.debug("cannot write %s: %s", path, exc)


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("state", "pending", "last_error", "pid")
    return all(old.get(k) == new.get(k) for k in keys)


def read_status(root: Path, url: str) -> dict[str, Any] | None:
    path = root / cursor.SYNC_DIR / cursor.remote_key(url) / STATUS_FILE
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
