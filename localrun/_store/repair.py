"""Mending a run (``localrun verify --repair``, and what every resume does on the way in).

Repair starts from the newest revision that reads cleanly and commits its fixes as the next
revision, so it never loses tags, notes, config, attempts, rewinds or saved-file records: they
are all in that revision. Only a run with no readable revision at all is rebuilt from its
segments' footers, and a folder with neither is left alone (a stray folder is never made into a
run). A live owner is never disturbed: liveness is :func:`lease.judge`'s call, on this process's
monotonic clock, whatever the wall clocks of the two hosts say.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import manifest as mf
from . import revisions, segments
from .compaction import is_hidden
from .layout import HISTORY, QUARANTINE, inside, parse_segment_name, safe_dir
from .options import DEFAULT, StoreOptions
from .records import SegmentEntry
from .relist import relist
from .schema import NUMBER, kind_of_arrow
from .segments import ORIGIN, compaction_record, entry_from_footer, footer_meta

log = logging.getLogger(__name__)


def mark_crashed(m: mf.Manifest) -> None:
    """Attempts still recorded as running belong to a process that is gone: say so."""
    for a in m["attempts"]:
        if a.get("state") == "running":
            a["state"] = "crashed"
            a["ended"] = a.get("ended") or m.get("updated")


def adopt_orphans(run_dir: Path, m: mf.Manifest) -> list[str]:
    """Adopt the segments a crashed writer published but never committed (DESIGN §3.2).

    One listing of ``history/`` (no probing name by name, which a gap in a writer's numbers
    would stop, and which costs a lookup per attempt of a run resumed hundreds of times). A
    writer numbers its files consecutively, so its orphans are the unlisted names after its
    last listed one. Only the newest attempt's orphans that continue the step sequence are
    adopted; anything else there (a superseded writer's late flush, an unreadable file, a merge
    whose commit never happened) is moved to ``quarantine/``, never deleted. A merge's file is
    never adopted: its rows are in the segments it would have replaced, and a merge of rows
    that rewinds hide may well look like it continues the steps. Unlisted names below a
    writer's last listed one (the parts of a merge committed just before a crash) are left to
    ``verify --repair``: their rows are listed elsewhere.
    """
    hist = safe_dir(run_dir, HISTORY, create=False)  # a symlinked history/ is refused here
    if not hist.is_dir():
        return []
    listed = {s["file"] for s in m["segments"]}
    attempts = {a["attempt"] for a in m["attempts"]}
    newest = max(attempts, default=0)
    frontier: dict[int, int] = {}  # per attempt: the highest seq of its listed file names
    for rel in listed:
        parsed = parse_segment_name(rel.rsplit("/", 1)[-1])
        if parsed is not None:
            frontier[parsed[0]] = max(frontier.get(parsed[0], -1), parsed[1])
    found = sorted(
        (parsed, f"{HISTORY}/{name}")
        for name in os.listdir(hist)
        if (parsed := parse_segment_name(name)) is not None
    )
    adopted: list[str] = []
    for (attempt, seq), rel in found:
        if rel in listed or attempt not in attempts or seq <= frontier.get(attempt, -1):
            continue
        try:
            entry = entry_from_footer(run_dir, rel)
            merged = compaction_record(footer_meta(run_dir / rel)) is not None
        except Exception as exc:  # any unreadable file is quarantined, whatever pyarrow says
            _set_aside(run_dir, rel, f"unreadable: {exc}")
            continue
        if merged:
            _set_aside(run_dir, rel, "a merge never committed; its rows are in listed segments")
            continue
        if attempt != newest or entry["min_step"] <= m["last_step"]:
            _set_aside(run_dir, rel, "it does not continue the run's committed steps")
            continue
        _adopt(run_dir, m, entry)
        adopted.append(rel)
    return adopted


def _set_aside(run_dir: Path, rel: str, why: str) -> None:
    """:func:`quarantine`, except that a file gone meanwhile (its writer removed its own
    uncommitted merge) is nothing to set aside."""
    with contextlib.suppress(FileNotFoundError):
        quarantine(run_dir, rel, why)


def _adopt(run_dir: Path, m: mf.Manifest, entry: SegmentEntry) -> None:
    table = segments.read_table(run_dir, entry["file"])
    _learn_columns(m, table)
    m["segments"].append(entry)
    m["last_step"] = entry["max_step"]
    log.warning(
        "adopted orphan segment %s of run %s (%d rows up to step %d)",
        entry["file"],
        run_dir,
        entry["rows"],
        entry["max_step"],
    )


def _learn_columns(m: mf.Manifest, table: Any) -> None:
    """Kinds and last values of a segment's columns into the state's schema and summary."""
    for field in table.schema:
        if field.name.startswith("_"):
            continue
        m["schema"].setdefault(field.name, kind_of_arrow(field.type) or NUMBER)
        col = table.column(field.name).drop_null()
        if len(col) and field.name not in m.get("summary_explicit", []):
            m["summary"][field.name] = mf.encode_value(col[-1].as_py())


def _origin_steps(entry: SegmentEntry, table: pa.Table) -> pa.Table:
    """Per flush its rows came from (``_attempt``, ``_seq``), their lowest and highest step."""
    if ORIGIN[0] not in table.column_names:
        return pa.table(
            {
                "_attempt": [entry["attempt"]],
                "_seq": [entry["seq"]],
                "_step_min": [entry["min_step"]],
                "_step_max": [entry["max_step"]],
            }
        )
    return table.group_by(list(ORIGIN)).aggregate([("_step", "min"), ("_step", "max")])


def _attempt_starts(entry: SegmentEntry, table: pa.Table) -> dict[int, int]:
    """The lowest step each attempt wrote into this segment."""
    groups = _origin_steps(entry, table)
    out: dict[int, int] = {}
    for a, lo in zip(groups["_attempt"].to_pylist(), groups["_step_min"].to_pylist(), strict=True):
        out[a] = min(out.get(a, lo), lo)
    return out


def _without_replaced(
    run_dir: Path, found: list[tuple[SegmentEntry, pa.Table, dict[str, Any] | None]]
) -> list[tuple[SegmentEntry, pa.Table, dict[str, Any] | None]]:
    """The files whose rows no file written later holds; the others are set aside.

    A merge writes its files after its parts (its names come later in its writer's numbers,
    and writers' attempts only grow), so the newest-written file wins: a merge's leftover
    parts, an older merge a later one includes, a merge never committed that a later one redid.
    A row is told apart by the flush that wrote it and its step (a flush's steps are strictly
    increasing), which merged files keep in ``_attempt``/``_seq``; a merge holds a contiguous
    range of each flush's rows (it splits them at a step), so ranges are what is remembered.
    """
    held: dict[tuple[int, int], list[tuple[int, int]]] = {}  # flush -> step ranges held

    def written(item: tuple[SegmentEntry, pa.Table, dict[str, Any] | None]) -> tuple[int, int]:
        return parse_segment_name(item[0]["file"].rsplit("/", 1)[-1]) or (0, 0)

    kept = []
    for item in sorted(found, key=written, reverse=True):
        entry, table, _ = item
        groups = _origin_steps(entry, table)
        spans = list(
            zip(
                *(groups[c].to_pylist() for c in ("_attempt", "_seq", "_step_min", "_step_max")),
                strict=True,
            )
        )
        if spans and all(_held(held, (a, s), lo, hi, entry, table) for a, s, lo, hi in spans):
            quarantine(run_dir, entry["file"], "its rows are all in segments written later")
            continue
        for a, s, lo, hi in spans:
            held.setdefault((a, s), []).append((lo, hi))
        kept.append(item)
    return kept


def _held(
    held: dict[tuple[int, int], list[tuple[int, int]]],
    flush: tuple[int, int],
    lo: int,
    hi: int,
    entry: SegmentEntry,
    table: pa.Table,
) -> bool:
    """Whether every row of ``flush`` in this file (steps ``lo`` .. ``hi``) is held already."""
    spans = held.get(flush, [])
    if any(a <= lo and hi <= b for a, b in spans):
        return True
    if not any(a <= hi and lo <= b for a, b in spans):
        return False
    steps = table.column("_step")  # split across later files: check row by row
    if ORIGIN[0] in table.column_names:
        mine = pc.and_(
            pc.equal(table.column(ORIGIN[0]), flush[0]), pc.equal(table.column(ORIGIN[1]), flush[1])
        )
        steps = steps.filter(mine)
    inside_any = None
    for a, b in spans:
        cond = pc.and_(pc.greater_equal(steps, a), pc.less_equal(steps, b))
        inside_any = cond if inside_any is None else pc.or_(inside_any, cond)
    return inside_any is not None and bool(pc.all(inside_any).as_py())


def quarantine(run_dir: Path, rel: str, why: str) -> None:
    """Set a file aside inside the run (never deleted; never moved in or out through a link)."""
    source = inside(run_dir, rel, "file")
    dest = safe_dir(run_dir, QUARANTINE) / rel.replace("/", "__")
    os.replace(source, dest)
    log.warning("moved %s of run %s to %s: %s", rel, run_dir, dest, why)


def rebuild(run_dir: Path, opts: StoreOptions = DEFAULT) -> bool:
    """Make a first revision from the segment footers, when no revision can be read at all.

    The last resort (a run of format 1 whose only manifest is damaged, or a log whose every
    revision is): identity and config come from the newest segment's footer, the summary from its
    last row; console chunks, system segments and saved file versions from their names
    (:mod:`.relist`). Returns False, changing nothing, when there is no segment: a folder
    without state or history is not a run. A damaged manifest.json is kept as
    ``manifest.json.corrupt-<time>``.

    Merged segments: a file whose rows are all in files written later (a merge's parts left by a
    crash, a merge never committed that a later one redid) is set aside, so no row counts twice;
    the rewinds the merges were made under are restored from their footers, so rows they hid stay
    hidden. Rewinds recorded after the newest merge are lost with the revisions: segments whose
    steps then overlap an earlier one's visible steps are set aside, as before merging existed.
    """
    hist = safe_dir(run_dir, HISTORY, create=False)
    names = sorted(
        (p.name for p in (hist.iterdir() if hist.is_dir() else []) if parse_segment_name(p.name)),
        key=lambda n: parse_segment_name(n) or (0, 0),
    )
    if not names:
        return False
    found: list[tuple[SegmentEntry, pa.Table, dict[str, Any] | None]] = []
    for name in names:
        rel = f"{HISTORY}/{name}"
        try:
            entry = entry_from_footer(run_dir, rel)
            table = segments.read_table(run_dir, rel)
            rec = compaction_record(footer_meta(run_dir / rel))
        except Exception as exc:  # an unreadable segment is set aside, whatever the cause
            quarantine(run_dir, rel, f"unreadable while rebuilding the run: {exc}")
            continue
        found.append((entry, table, rec))
    found = _without_replaced(run_dir, found)
    m = mf.new(run_dir.parent.name, run_dir.name)
    rewinds = {tuple(r) for _, _, rec in found if rec for r in rec.get("rewinds", [])}
    m["rewinds"] = [{"attempt": a, "seq": s, "step": n} for a, s, n in sorted(rewinds)]
    bound_of = mf.visible_bounds(m)
    entries: list[SegmentEntry] = []
    starts: dict[int, int] = {}
    last: int | None = None
    for entry, table, _ in sorted(found, key=lambda f: (f[0]["attempt"], f[0]["seq"])):
        bound = bound_of(entry["attempt"], entry["seq"])
        if not is_hidden(entry, bound):
            if last is not None and entry["min_step"] <= last:
                quarantine(run_dir, entry["file"], "its steps overlap an earlier segment")
                continue
            last = entry["max_step"] if bound is None else min(entry["max_step"], bound)
            _learn_columns(m, table)
        entries.append(entry)
        for attempt, step in _attempt_starts(entry, table).items():
            starts[attempt] = min(starts.get(attempt, step), step)
    meta = footer_meta(run_dir / entries[-1]["file"]) if entries else {}
    m["project"] = meta.get("project") or m["project"]
    m["id"] = meta.get("id") or m["id"]
    m["name"] = m["id"]
    m["config"] = meta.get("config") or {}
    m["segments"] = entries
    m["state"] = "crashed"
    m["last_step"] = last if last is not None else -1
    m["repaired"] = time.time()
    for attempt, start in sorted(starts.items()):
        m["attempts"].append(
            {
                "attempt": attempt,
                "host": None,
                "pid": None,
                "started": None,
                "ended": None,
                "start_step": start,
                "state": "crashed",
                "exit_code": None,
            }
        )
    for rel in relist(run_dir, m):
        quarantine(run_dir, rel, "its samples are in a later merged system segment")
    old = mf.path(run_dir)
    if old.exists():
        os.replace(old, old.with_name(f"{old.name}.corrupt-{int(time.time())}"))
    head = max(revisions.list_revisions(run_dir), default=0)
    revisions.publish(run_dir, head, m)
    revisions.write_copy(run_dir, m)
    return True
