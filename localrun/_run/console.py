"""Console capture: the process's stdout and stderr, teed into the run (docs/logging.md).

On a cluster a job's own output is often the only clue why it died, and it lives in a scheduler
file that is not kept with the run. So ``sys.stdout`` and ``sys.stderr`` are wrapped: every write
still goes to the terminal (or the scheduler's file) first, unchanged, and is also buffered; the
flush thread writes what was buffered as one immutable chunk, ``console/<attempt>-<seq>.log``,
committed with the rows (so a SIGKILL loses at most what a flush would have written, like rows).

Python-level, not file-descriptor-level: output written straight to fd 1/2 by C code or child
processes is not captured. Replacing the descriptors with a pipe would capture it, but a process
SIGKILLed with output still in the pipe would lose it from the terminal too, which is the one
place it must never be lost from.

The buffer is bounded (``MAX_PENDING`` between flushes: beyond it the middle is dropped and
replaced by a line saying how much), so a print loop can never grow memory without bound.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any, TextIO

MAX_PENDING = 8 * 1024 * 1024  # characters buffered between two flushes
_KEEP_HEAD = 1024 * 1024  # when over the bound: the first MiB is kept, the newest text after it


class Capture:
    """What both streams wrote since the last :meth:`take`, in the order they wrote it.

    Past ``MAX_PENDING`` characters between two takes, the first ``_KEEP_HEAD`` are kept and
    the oldest text after them is dropped, a part at a time (amortised O(1) per write: a print
    loop must never turn quadratic here).
    """

    def __init__(self) -> None:
        # Re-entrant: a signal handler that prints runs in the main thread, possibly while it
        # is inside add() already; a plain lock would deadlock the process there.
        self._lock = threading.RLock()
        self._head: list[str] = []
        self._head_size = 0
        self._tail: deque[str] = deque()
        self._tail_size = 0
        self._dropped = 0

    def add(self, text: str) -> None:
        with self._lock:
            if self._head_size < _KEEP_HEAD and not self._tail:
                self._head.append(text)
                self._head_size += len(text)
                return
            self._tail.append(text)
            self._tail_size += len(text)
            while self._tail_size > MAX_PENDING - _KEEP_HEAD and len(self._tail) > 1:
                old = self._tail.popleft()
                self._tail_size -= len(old)
                self._dropped += len(old)

    def take(self) -> str:
        """Everything buffered, emptied (the flush thread's half)."""
        with self._lock:
            head, tail, dropped = self._head, self._tail, self._dropped
            self._head, self._head_size, self._dropped = [], 0, 0
            self._tail, self._tail_size = deque(), 0
        text = "".join(head)
        if dropped:
            text += f"\n[localrun: {dropped} characters of output dropped here]\n"
        return text + "".join(tail)

    def __bool__(self) -> bool:
        return bool(self._head or self._tail)


class Tee:
    """A text stream that writes through to ``inner`` and copies what it writes to a capture."""

    def __init__(self, inner: TextIO, capture: Capture) -> None:
        self._inner = inner
        self._capture = capture

    def write(self, text: str) -> int:
        # Captured first: once the terminal has a byte, a signal handler may flush the run at
        # once (SIGTERM after a line was seen), and the run must hold that byte too.
        if isinstance(text, str) and text:
            self._capture.add(text)
        return self._inner.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:
        # fileno, isatty, encoding, buffer...: the real stream's, so libraries that check
        # them (tqdm, rich, logging) behave as without localrun.
        return getattr(self._inner, name)


def install(capture: Capture) -> tuple[TextIO, TextIO]:
    """Wrap ``sys.stdout`` and ``sys.stderr``; returns the streams to put back."""
    previous = (sys.stdout, sys.stderr)
    sys.stdout = Tee(sys.stdout, capture)
    sys.stderr = Tee(sys.stderr, capture)
    return previous


def uninstall(previous: tuple[TextIO, TextIO]) -> None:
    """Put the streams back, unless someone wrapped them again since (then leave theirs)."""
    if isinstance(sys.stdout, Tee):
        sys.stdout = previous[0]
    if isinstance(sys.stderr, Tee):
        sys.stderr = previous[1]
