"""``localrun verify [--repair]``: check a run's files against its newest revision, and mend.

:func:`check` only reads (diskcache's ``check(fix=False)`` model); :func:`repair` fixes what the
check found through one commit (``repair.py``). Checked: the state (revisions readable, the
``manifest.json`` hint in step with the log), listed segments (present, readable, steps strictly
increasing inside each and across the visible history), orphan segments, saved-file versions,
stray temp files, and a dead owner still recorded as running.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CorruptRunError, FormatVersionError, RunNotFoundError
from . import manifest as mf
from . import revisions, segments
from .atomic import read_json
from .identity import HOST, pid_alive
from .layout import (
    HISTORY,
    LOG,
    MANIFEST,
    MANIFEST_LOCK,
    QUARANTINE,
    TMP_TAG,
    is_temp,
    safe_dir,
)
from .lease import Watch, describe, is_valid, judge, provably_dead
from .options import DEFAULT, StoreOptions
from .repair import adopt_orphans, mark_crashed, quarantine, rebuild

STRAY_TEMP_AGE_S = 3600.0


@dataclass
class Report:
    """What ``verify`` found in one run (``problems``) and, with repair, what it mended."""

    run: str
    problems: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "ok": self.ok,
            "problems": self.problems,
            "repaired": self.repaired,
        }


@dataclass
class _Findings:
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    dead_owner: bool = False
    hint_stale: bool = False
    damaged_revisions: bool = False


def verify_run(
    run_dir: Path, repair: bool = False, ttl_s: float = 30.0, opts: StoreOptions = DEFAULT
) -> Report:
    rep = Report(f"{run_dir.parent.name}/{run_dir.name}")
    try:
        snap = revisions.newest(run_dir)
    except FormatVersionError:
        raise
    except (RunNotFoundError, CorruptRunError) as exc:
        rep.problems.append(f"state: {exc}")
        if not repair:
            return rep
        if not rebuild(run_dir, opts):
            rep.problems.append("not repaired: the folder holds no segments, so it is not a run")
            return rep
        rep.repaired.append(
            "rebuilt the run's state from its segments (tags, notes and files were lost with it)"
        )
        snap = revisions.newest(run_dir)
    found = _check(run_dir, snap, rep)
    _check_temps(run_dir, rep, repair)
    if repair and (
        found.missing
        or found.damaged
        or found.orphans
        or found.dead_owner
        or found.hint_stale
        or found.damaged_revisions
    ):
        _repair(run_dir, found, rep, ttl_s, opts)
    return rep


def _check(run_dir: Path, snap: revisions.Snapshot, rep: Report) -> _Findings:
    m = snap.manifest
    found = _Findings()
    if snap.head > snap.rev:
        found.damaged_revisions = True
        rep.problems.append(
            f"revisions {snap.rev + 1}..{snap.head} in {LOG}/ are damaged; the state is "
            f"revision {snap.rev}"
        )
    if snap.rev > 0 and m.get("owner") is None:  # a live run's copy skips heartbeats
        try:
            hint = revisions.parse(read_json(run_dir / MANIFEST), run_dir / MANIFEST)
            found.hint_stale = hint.get("rev") != snap.rev
        except (FileNotFoundError, CorruptRunError):
            found.hint_stale = True
        if found.hint_stale:
            rep.problems.append(f"{MANIFEST} is not a copy of the newest revision {snap.rev}")
    for seg in m["segments"]:
        problem = segments.problem(run_dir, seg)
        if problem is None:
            continue
        rep.problems.append(problem)
        (found.missing if "is missing" in problem else found.damaged).append(seg["file"])
    _check_steps(run_dir, m, {*found.missing, *found.damaged}, rep)
    listed = {s["file"] for s in m["segments"]}
    hist = safe_dir(run_dir, HISTORY, create=False)
    found.orphans = sorted(
        f"{HISTORY}/{p.name}"
        for p in (hist.iterdir() if hist.is_dir() else [])
        if not is_temp(p.name) and f"{HISTORY}/{p.name}" not in listed
    )
    for f in found.orphans:
        rep.problems.append(f"orphan segment {f} (written, never committed)")
    for name, versions in (m.get("files") or {}).items():
        for v in versions:
            path = run_dir / str(v.get("path"))
            try:
                size = path.stat().st_size
            except OSError:
                rep.problems.append(f"saved file {name!r} version {v.get('version')} is missing")
                continue
            if size != v.get("size"):
                rep.problems.append(
                    f"saved file {name!r} version {v.get('version')} has {size} bytes, "
                    f"the run says {v.get('size')}"
                )
    owner = m.get("owner")
    found.dead_owner = isinstance(owner, dict) and is_valid(owner) and provably_dead(owner)
    if found.dead_owner and isinstance(owner, dict):
        rep.problems.append(
            f"owner pid {owner['pid']} on {owner['host']} is gone; run still says running"
        )
    return found


def _check_steps(run_dir: Path, m: mf.Manifest, missing: set[str], rep: Report) -> None:
    """Steps strictly increasing inside every segment, and across what readers see."""
    last: int | None = None
    bound_of = mf.visible_bounds(m)
    for seg in sorted(m["segments"], key=lambda s: (s["attempt"], s["seq"])):
        if seg["file"] in missing:
            continue
        try:
            values = segments.read_table(run_dir, seg["file"], ["_step"]).column(0).to_pylist()
        except Exception as exc:  # whatever pyarrow raises on a damaged file
            rep.problems.append(
                f"segment {seg['file']} cannot be read ({exc}); `localrun verify --repair` "
                "cannot restore its rows"
            )
            continue
        # A merge's hidden segment holds rows several rewinds hid, of several attempts: steps
        # repeat there, and readers never see them in one sequence.
        bad = None if seg.get("hidden") else _first_not_increasing(values)
        if bad is not None:
            kind = "duplicate" if values[bad] == values[bad - 1] else "non-increasing"
            rep.problems.append(
                f"segment {seg['file']} has a {kind} step {values[bad]} after {values[bad - 1]}"
            )
        if len(values) != seg.get("rows"):
            rep.problems.append(
                f"segment {seg['file']} holds {len(values)} rows, the run lists {seg.get('rows')}"
            )
        bound = bound_of(seg["attempt"], seg["seq"])
        visible = [v for v in values if bound is None or v <= bound]
        if visible and last is not None and visible[0] <= last:
            rep.problems.append(
                f"segment {seg['file']} starts at step {visible[0]}, not after step {last} "
                "of the segment before it"
            )
        if visible:
            last = visible[-1]


def _first_not_increasing(values: list[int]) -> int | None:
    return next((i for i in range(1, len(values)) if values[i] <= values[i - 1]), None)


def _repair(run_dir: Path, found: _Findings, rep: Report, ttl_s: float, opts: StoreOptions) -> None:
    owner_gone = _owner_gone(run_dir, ttl_s, rep)
    if owner_gone is None:
        return

    notes: list[str] = []

    def fix(m: mf.Manifest) -> None:
        notes.clear()  # a commit that lost the race runs again on the newer state
        listed = {s["file"] for s in m["segments"]}
        missing = [f for f in found.missing if f in listed]
        damaged = [f for f in found.damaged if f in listed]
        if missing or damaged:
            m["segments"] = [s for s in m["segments"] if s["file"] not in {*missing, *damaged}]
            m.setdefault("lost_segments", []).extend([*missing, *damaged])
        if missing:
            notes.append(f"dropped {len(missing)} missing segment(s) from the run")
        for rel in damaged:
            with contextlib.suppress(FileNotFoundError):
                quarantine(run_dir, rel, "damaged: its rows cannot be read")
            notes.append(f"set the damaged segment {rel} aside (quarantine/); its rows are lost")
        if owner_gone:
            for rel in adopt_orphans(run_dir, m):
                notes.append(f"adopted {rel}")
            listed = {s["file"] for s in m["segments"]}
            for rel in found.orphans:
                if rel not in listed and (run_dir / rel).exists():
                    quarantine(run_dir, rel, "an orphan that does not continue the run")
                    notes.append(f"quarantined {rel}")
            if isinstance(m.get("owner"), dict) or any(
                a.get("state") == "running" for a in m["attempts"]
            ):
                mark_crashed(m)
                if m.get("state") == "running":
                    m["state"] = "crashed"
                m["owner"] = None
                notes.append("recorded the dead owner's attempt as crashed")
        if found.hint_stale or found.damaged_revisions:
            notes.append(
                "committed a new revision (and a fresh manifest.json) on the newest readable one"
            )

    mf.update(run_dir, fix, opts=opts)
    rep.repaired.extend(notes)


def _owner_gone(run_dir: Path, ttl_s: float, rep: Report) -> bool | None:
    """True: no live owner (repair everything). False: a live owner (repair only what cannot
    race with it). None: stop. Judged by the one lease judge, watching up to a TTL."""
    watch = Watch()
    while True:
        m = mf.load(run_dir)
        owner = m.get("owner")
        v = judge(owner, watch, default_ttl=ttl_s)
        if v.action == "take":
            return True
        if v.action == "live":
            assert isinstance(owner, dict)
            rep.problems.append(
                "orphans and the lease not repaired: a live writer owns the run "
                f"({describe(owner)}; {v.reason}); its orphans may be in flight"
            )
            return False
        time.sleep(v.wait_s)


def _check_temps(run_dir: Path, rep: Report, repair: bool) -> None:
    now = time.time()
    for dirpath, _, names in os.walk(run_dir):
        if Path(dirpath).name == QUARANTINE:
            continue
        for name in names:
            if not is_temp(name) or name.startswith(MANIFEST_LOCK):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(run_dir)
            rep.problems.append(f"stray temp file {rel}")
            if repair and _temp_is_dead(name, path, now):
                path.unlink(missing_ok=True)
                rep.repaired.append(f"removed stray temp file {rel}")


def _temp_is_dead(name: str, path: Path, now: float) -> bool:
    """A temp file's writer is gone: same host and pid dead, or the file is over an hour old.

    The age is this host's clock against the file's mtime set by the server or the writer;
    a temp file is never part of the run's state, so a wrong guess removes nothing committed.
    """
    tail = name.rsplit(TMP_TAG, 1)[1]
    host, _, rest = tail.rpartition("-")[0].rpartition("-")
    try:
        pid = int(rest)
    except ValueError:
        pid = -1
    if host == HOST and pid > 0 and not pid_alive(pid):
        return True
    try:
        return now - path.stat().st_mtime > STRAY_TEMP_AGE_S
    except FileNotFoundError:
        return False
