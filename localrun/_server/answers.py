"""The bodies of recent series answers, kept by their ETag (a run's revision and the query).

A chart's series is the costly answer (a million rows read and downsampled), and the same one is
asked for again and again: every open tab of a run, every colleague looking at the same
comparison, a page reloaded. A revision is immutable and the ETag names it with the query, so
an answer kept under its ETag can never be stale: a new commit makes a new ETag. Bounded by
bytes (least recently used first out), so memory stays small whatever is looked at.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_BYTES = 64 << 20


class Answers:
    """A thread-safe LRU of response bodies by ETag (handlers run in worker threads)."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, tag: str) -> bytes | None:
        with self._lock:
            body = self._bodies.get(tag)
            if body is not None:
                self._bodies.move_to_end(tag)
            return body

    def put(self, tag: str, body: bytes) -> None:
        if len(body) > self.max_bytes // 4:  # one huge answer must not flush all the others
            return
        with self._lock:
            if tag in self._bodies:
                return
            self._bodies[tag] = body
            self._size += len(body)
            while self._size > self.max_bytes:
                _, old = self._bodies.popitem(last=False)
                self._size -= len(old)
