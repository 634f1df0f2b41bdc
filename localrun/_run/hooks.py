"""Process-wide hooks, and the only process-global state of the writer side.

The current run (``localrun.run``), SIGTERM (preemption: record it, unwind to the final
flush), ``atexit`` (finish what the script did not), ``sys.excepthook`` (a crash is recorded
as failed) and fork (a child never writes its parent's run).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import LocalrunError, UsageError

if TYPE_CHECKING:
    from .run import Run

_current: Run | None = None
_all_runs: weakref.WeakSet[Run] = weakref.WeakSet()


def register(run: Run) -> None:
    """A new run: SIGTERM marks every live run of the process preempted."""
    _all_runs.add(run)


def set_current(run: Run) -> None:
    global _current
    _current = run
    install()


def release(run: Run) -> None:
    """``run`` ended: it is no longer the process's current run."""
    global _current
    if _current is run:
        _current = None


_handlers_installed = False
_previous_sigterm: Any = None
_uncaught: BaseException | None = None


_stopping = False  # a SIGTERM is already unwinding this process towards its final flush


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Preemption: mark the run preempted and leave the way Python leaves on SystemExit.

    The flush happens on the way out (``with`` blocks, atexit), in the main thread, so a
    handler that interrupted ``log()`` mid-row never deadlocks on the buffer lock. A second
    SIGTERM (scancel, systemctl stop) while the first unwinds does not raise again: it would
    cut the final flush short.
    """
    global _stopping
    for run in list(_all_runs):
        run._preempted = True
    if _stopping:
        return
    prev = _previous_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    _stopping = True
    raise SystemExit(128 + signum)


_deferring = False
_deferred: list[int] = []


def _defer(signum: int, frame: FrameType | None) -> None:
    """During the final flush: note the signal and carry on (the process is ending anyway)."""
    _deferred.append(signum)
    if signum == signal.SIGTERM:
        for run in list(_all_runs):
            run._preempted = True


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Let a second SIGTERM or Ctrl-C (scancel, systemctl stop) not cut the final flush short.

    Only the main thread can swap handlers; elsewhere the flush runs as it is. A deferred
    SIGINT is raised as KeyboardInterrupt once the flush is done, unless Python is exiting.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring = True
    saved = {sig: signal.signal(sig, _defer) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        _deferring = False
        got = list(_deferred)
        _deferred.clear()
        if signal.SIGINT in got and not _exiting:
            raise KeyboardInterrupt


_exiting = False


def _excepthook(et: type[BaseException], ev: BaseException, tb: TracebackType | None) -> None:
    global _uncaught
    _uncaught = ev
    _previous_excepthook(et, ev, tb)


_previous_excepthook = sys.excepthook


def _at_exit() -> None:
    global _exiting
    _exiting = True
    run = _current
    if run is None or run._ended or run._pid != os.getpid():
        return
    try:
        if run._preempted:
            run._end("preempted", 128 + signal.SIGTERM)
        elif _uncaught is not None:
            run._end("failed", 130 if isinstance(_uncaught, KeyboardInterrupt) else 1)
        else:
            run.finish(0)
    except LocalrunError as exc:
        print(f"localrun: could not finish run {run.path}: {exc}", file=sys.stderr)


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) must never flush or finish the parent's run: it is
    no one's current run here, and its log() leaves the hot path for the one that refuses."""
    global _current
    _current = None
    for run in list(_all_runs):
        run._fast = False


def install() -> None:
    global _handlers_installed, _previous_sigterm
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_at_exit)
    sys.excepthook = _excepthook
    os.register_at_fork(after_in_child=_after_fork_in_child)
    if threading.current_thread() is threading.main_thread():
        _previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)


def current() -> Run | None:
    """The process's current run (``localrun.run``), or None."""
    return _current


def log_current(
    data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
) -> None:
    """``localrun.log``: ``log()`` on the current run (see :meth:`Run.log`)."""
    if _current is None:
        raise UsageError("localrun.log() needs a run: call localrun.init() first")
    _current.log(data, step=step, commit=commit)


def finish_current(exit_code: int = 0) -> None:
    """``localrun.finish``: finish the current run, if there is one."""
    if _current is not None:
        _current.finish(exit_code)
