"""``localrun verify [--repair]``: check a run's files against its manifest, and mend them.

Finds: a manifest that is missing or unreadable (rebuilt from the segments' footers, the old one
kept aside), listed segments that are missing, orphan segments (adopted when they continue the
run, else quarantined), stray temp files, and a dead owner still recorded as running. Nothing is
deleted but temp files whose writer is provably gone or that are over an hour old: data files
move to ``quarantine/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ..errors import CorruptRunError, RunNotFoundError
from . import manifest as mf
from .layout import HISTORY, MANIFEST_LOCK, QUARANTINE, TMP_TAG, is_temp, parse_segment_name
from .lease import HOST, pid_alive, provably_dead
from .locks import manifest_mutex
from .ownership import adopt_orphans, quarantine
from .schema import kind_of_arrow
from .segments import entry_from_footer, footer_meta

STRAY_TEMP_AGE_S = 3600.0


@dataclass
class Report:
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


def verify_run(run_dir: Path, repair: bool = False) -> Report:
    rep = Report(f"{run_dir.parent.name}/{run_dir.name}")
    try:
        m = mf.load(run_dir)
    except (RunNotFoundError, CorruptRunError) as exc:
        rep.problems.append(f"manifest: {exc}")
        if not repair:
            return rep
        rebuild_manifest(run_dir)
        rep.repaired.append("rebuilt manifest.json from the segments")
        m = mf.load(run_dir)
    _check_temps(run_dir, rep, repair)
    missing = [s["file"] for s in m["segments"] if not (run_dir / s["file"]).is_file()]
    for f in missing:
        rep.problems.append(f"listed segment {f} is missing: its rows are lost")
    listed = {s["file"] for s in m["segments"]}
    hist = run_dir / HISTORY
    orphans = sorted(
        f"{HISTORY}/{p.name}"
        for p in (hist.iterdir() if hist.is_dir() else [])
        if not is_temp(p.name) and f"{HISTORY}/{p.name}" not in listed
    )
    for f in orphans:
        rep.problems.append(f"orphan segment {f} (written, never committed)")
    owner = m.get("owner")
    dead_owner = isinstance(owner, dict) and provably_dead(owner)
    stale_owner = isinstance(owner, dict) and (
        time.time() - float(owner.get("hb_time", 0)) > 2 * float(owner.get("ttl_s", 30))
    )
    if dead_owner and isinstance(owner, dict):
        rep.problems.append(
            f"owner pid {owner['pid']} on {owner['host']} is gone; run still says running"
        )
    if not repair or not (missing or orphans or dead_owner):
        return rep
    if isinstance(owner, dict) and not (dead_owner or stale_owner):
        rep.problems.append(
            "not repaired: a live writer owns the run (its orphans may be in flight)"
        )
        return rep

    def fix(m: mf.Manifest) -> None:
        if missing:
            m["segments"] = [s for s in m["segments"] if s["file"] not in missing]
            m.setdefault("lost_segments", []).extend(missing)
            rep.repaired.append(f"dropped {len(missing)} missing segment(s) from the manifest")
        for rel in adopt_orphans(run_dir, m):
            rep.repaired.append(f"adopted {rel}")
        now_listed = {s["file"] for s in m["segments"]}
        for rel in orphans:
            if rel not in now_listed and (run_dir / rel).exists():
                quarantine(run_dir, rel, "an orphan that does not continue the run")
                rep.repaired.append(f"quarantined {rel}")
        if dead_owner or stale_owner:
            for a in m["attempts"]:
                if a.get("state") == "running":
                    a["state"] = "crashed"
            m["state"] = "crashed"
            m["owner"] = None
            rep.repaired.append("recorded the dead owner's attempt as crashed")

    mf.update(run_dir, fix)
    return rep


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
    """A temp file's writer is gone: same host and pid dead, or the file is over an hour old."""
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


def rebuild_manifest(run_dir: Path) -> None:
    """Write a new manifest from the segment footers (O(segments): a repair, not a resume).

    Config and identity come from the newest segment's footer metadata; the summary from its
    last row. The unreadable manifest is kept as ``manifest.json.corrupt-<time>``.
    """
    with manifest_mutex(run_dir / MANIFEST_LOCK):
        old = mf.path(run_dir)
        if old.exists():
            os.replace(old, old.with_name(f"{old.name}.corrupt-{int(time.time())}"))
        hist = run_dir / HISTORY
        names = sorted(
            (
                p.name
                for p in (hist.iterdir() if hist.is_dir() else [])
                if parse_segment_name(p.name)
            ),
            key=lambda n: parse_segment_name(n) or (0, 0),
        )
        entries: list[dict[str, Any]] = []
        schema: dict[str, str] = {}
        for name in names:
            rel = f"{HISTORY}/{name}"
            try:
                entry = entry_from_footer(run_dir, rel)
                arrow = pq.read_schema(run_dir / rel)
            except Exception as exc:  # an unreadable segment is set aside, whatever the cause
                quarantine(run_dir, rel, f"unreadable while rebuilding the manifest: {exc}")
                continue
            if entries and entry["min_step"] <= entries[-1]["max_step"]:
                quarantine(run_dir, rel, "its steps overlap an earlier segment")
                continue
            entries.append(entry)
            for f in arrow:
                kind = kind_of_arrow(f.type)
                if not f.name.startswith("_") and kind:
                    schema.setdefault(f.name, kind)
        meta = footer_meta(run_dir / entries[-1]["file"]) if entries else {}
        m = mf.new(meta.get("project") or run_dir.parent.name, meta.get("id") or run_dir.name)
        m["config"] = meta.get("config") or {}
        m["segments"] = entries
        m["schema"] = schema
        m["state"] = "crashed"
        m["last_step"] = entries[-1]["max_step"] if entries else -1
        m["repaired"] = time.time()
        for attempt in sorted({e["attempt"] for e in entries}):
            mine = [e for e in entries if e["attempt"] == attempt]
            m["attempts"].append(
                {
                    "attempt": attempt,
                    "host": None,
                    "pid": None,
                    "started": None,
                    "ended": None,
                    "start_step": mine[0]["min_step"],
                    "state": "crashed",
                    "exit_code": None,
                }
            )
        if entries:
            last = pq.read_table(run_dir / entries[-1]["file"])
            for name in last.column_names:
                col = last.column(name).drop_null()
                if not name.startswith("_") and len(col):
                    m["summary"][name] = mf.encode_value(col[-1].as_py())
        mf.save(run_dir, m)
