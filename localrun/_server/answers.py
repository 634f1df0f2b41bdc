"""The bodies of recent series answers, kept by their ETag (a run's revision and the query).

A chart's series is the costly answer (a million rows read and downsampled), and the same one is
asked for again and again: every open tab of a run, every colleague looking at the same
comparison, a page reloaded. A revision is immutable and the ETag names it with the query, so
an answer kept under its ETag can never be stale: a new commit makes a new ETag. Bounded by
bytes (least recently used first out), so memory stays small whatever is looked at.
"""

from __future__ import annotations

from .kept import Kept

MAX_BYTES = 64 << 20


class Answers(Kept[str, bytes]):
    """Response bodies by ETag; one over a quarter of the bound is not kept."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        super().__init__(max_bytes, len, max_bytes // 4)
