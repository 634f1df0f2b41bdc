"""The writer side (DESIGN §7): one run handle per process life, and how it starts and ends.

    resume.py    init(): the resume contract, creating or taking over a run
    run.py       Run: log() and its hot path, flushes, saved files, rewinds, finish
    flusher.py   the flush thread and compaction
    heartbeat.py the heartbeat thread (the lease's proof of life)
    hooks.py     the current run, SIGTERM, atexit, excepthook, fork: all process-global state
    state.py     run.config and run.summary
    values.py    what log() accepts; buffer.py rows into Arrow; files.py run.save policies

Uses ``_store`` below it, never ``_query`` beside it.
"""

from .hooks import current, finish_current, log_current
from .resume import init
from .run import Run
from .state import Summary

__all__ = ["Run", "Summary", "current", "finish_current", "init", "log_current"]
