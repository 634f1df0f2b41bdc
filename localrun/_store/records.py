"""The records a revision holds, typed: what every layer reads and writes (docs/format.md).

TypedDicts, not classes: a revision is plain JSON that tools without localrun read, so the
records stay dicts on disk and in memory, and the type checker holds every module to their
fields. ``revisions.parse`` checks the shape of what is read from disk against them.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

State = Literal["running", "finished", "failed", "crashed", "preempted"]


class Owner(TypedDict, total=False):
    """The lease: who may write the run now (DESIGN §5)."""

    host: str
    boot_id: str
    pid_ns: str
    pid: int
    proc_start: str
    token: str
    attempt: int
    hb_seq: int
    hb_time: float
    ttl_s: float


class Attempt(TypedDict, total=False):
    """One process's life inside the run."""

    attempt: int
    host: str | None
    pid: int | None
    pid_ns: str
    started: float | None
    ended: float | None
    start_step: int
    state: str
    exit_code: int | None
    context: dict[str, Any]  # where it ran: git, argv, python, packages, host, job (docs/format.md)


class SegmentEntry(TypedDict, total=False):
    """A committed segment: a Parquet file under ``history/`` and its step range.

    ``(attempt, seq)`` is the segment's *position*, the order rewinds are judged in. A flush's
    file is named after its position (``history/<attempt>-<seq>.parquet``); a compacted
    segment's file is named in the namespace of the attempt that wrote it, and its position is
    one of the positions it replaces (``_store/compaction.py``). ``level``: 0 (or absent) for a
    flush, higher for a compacted segment. ``hidden``: present (true) on a segment compaction
    made of rows rewinds hide, which readers show only with ``all_attempts``.
    """

    file: str
    attempt: int
    seq: int
    rows: int
    min_step: int
    max_step: int
    bytes: int
    level: int
    hidden: bool


class Rewind(TypedDict):
    """Rows of segments before ``(attempt, seq)`` above ``step`` are hidden."""

    attempt: int
    seq: int
    step: int


class ConsoleEntry(TypedDict):
    """A chunk of captured console output: ``console/<attempt>-<seq>.log``."""

    file: str
    attempt: int
    seq: int
    bytes: int


class SystemEntry(TypedDict, total=False):
    """A segment of system samples: ``system/<attempt>-<seq>.parquet`` and its time range."""

    file: str
    attempt: int
    seq: int
    rows: int
    min_time: float
    max_time: float
    bytes: int
    level: int


class FileVersion(TypedDict, total=False):
    """One stored version of a saved file."""

    version: str
    path: str
    sha256: str
    size: int
    saved: float
    attempt: int


class Revision(TypedDict, total=False):
    """A run's whole state: one ``log/<rev>.json`` (and ``manifest.json``, its copy)."""

    format: int
    rev: int
    uid: str
    project: str
    id: str
    name: str
    notes: str | None
    tags: list[str]
    group: str | None
    job_type: str | None
    config: dict[str, Any]
    summary: dict[str, Any]
    summary_explicit: list[str]
    state: str
    created: float
    updated: float
    runtime: float
    last_step: int
    dropped_steps: int
    schema: dict[str, str]
    segments: list[SegmentEntry]
    rewinds: list[Rewind]
    attempts: list[Attempt]
    owner: Owner | None
    files: dict[str, list[FileVersion]]
    console: list[ConsoleEntry]
    system: list[SystemEntry]
    lost_segments: list[str]
    repaired: float
