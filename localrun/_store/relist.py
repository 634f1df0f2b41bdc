"""What a rebuilt run lists besides its segments: console chunks, system segments, file versions.

:func:`~.repair.rebuild` is the last resort when no revision of a run can be read; the segments'
footers give back the history, and this module gives back the rest that the files themselves
name: the captured output (``console/<attempt>-<seq>.log``), the system samples
(``system/<attempt>-<seq>.parquet``) and every saved file version
(``files/.versions/<attempt>-<seq>/<name>``). Without it a repaired run would show its curves but
not its output, its samples or its checkpoints, although all of them are still on disk.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.compute as pc

from .console import CONSOLE
from .files import VERSIONS, sha256_of
from .layout import FILES, inside, parse_segment_name
from .records import ConsoleEntry, FileVersion, Revision, SystemEntry
from .segments import read_parquet
from .system import SYSTEM

_CHUNK = re.compile(r"^(\d{4})-(\d{6})\.log$")
_VERSION = re.compile(r"^(\d{4})-(\d{6})$")


def relist(run_dir: Path, m: Revision) -> list[str]:
    """List in ``m`` what :mod:`.repair` found on disk; returns the files it leaves unlisted
    (system segments whose samples a later merged one of the same attempt holds)."""
    m["console"] = _console(run_dir)
    m["system"], replaced = _system(run_dir)
    m["files"] = _files(run_dir)
    return replaced


def _console(run_dir: Path) -> list[ConsoleEntry]:
    found: list[ConsoleEntry] = []
    folder = run_dir / CONSOLE
    for p in folder.iterdir() if folder.is_dir() else []:
        match = _CHUNK.match(p.name)
        if match and p.is_file() and not p.is_symlink():
            attempt, seq = int(match.group(1)), int(match.group(2))
            rel, size = f"{CONSOLE}/{p.name}", p.stat().st_size
            found.append({"file": rel, "attempt": attempt, "seq": seq, "bytes": size})
    return sorted(found, key=lambda e: (e["attempt"], e["seq"]))


def _system(run_dir: Path) -> tuple[list[SystemEntry], list[str]]:
    """The readable system segments in order, less the parts of a merge that a crash left
    behind (a merge holds all of its attempt's earlier samples, so a file whose time range lies
    inside a later file's of the same attempt is such a part)."""
    entries: list[SystemEntry] = []
    folder = run_dir / SYSTEM
    for p in folder.iterdir() if folder.is_dir() else []:
        named = parse_segment_name(p.name)
        if named is None or p.is_symlink() or not p.is_file():
            continue
        rel = f"{SYSTEM}/{p.name}"
        try:
            with inside(run_dir, rel, "system segment").open("rb") as f:
                times = read_parquet(f, ["_timestamp"]).column("_timestamp")
        except Exception:  # unreadable: left unlisted, as verify reports an unlisted file
            continue
        if len(times) == 0:
            continue
        bounds = pc.min_max(times).as_py()
        entries.append(
            {
                "file": rel,
                "attempt": named[0],
                "seq": named[1],
                "rows": len(times),
                "min_time": bounds["min"],
                "max_time": bounds["max"],
                "bytes": p.stat().st_size,
                "level": 0,
            }
        )
    entries.sort(key=lambda e: (e["attempt"], e["seq"]))
    kept: list[SystemEntry] = []
    replaced: list[str] = []
    for i, e in enumerate(entries):
        later = (x for x in entries[i + 1 :] if x["attempt"] == e["attempt"])
        if any(x["min_time"] <= e["min_time"] and e["max_time"] <= x["max_time"] for x in later):
            replaced.append(e["file"])
        else:
            kept.append(e)
    return kept, replaced


def _files(run_dir: Path) -> dict[str, list[FileVersion]]:
    """Every stored version, by name, oldest first (the sha256 is computed again: the record
    that held it is what was lost)."""
    found: dict[str, list[FileVersion]] = {}
    root = run_dir / FILES / VERSIONS
    for vdir in sorted(root.iterdir()) if root.is_dir() else []:
        match = _VERSION.match(vdir.name)
        if not match or vdir.is_symlink() or not vdir.is_dir():
            continue
        for p in sorted(vdir.rglob("*")):
            if p.is_symlink() or not p.is_file():
                continue
            rel = p.relative_to(run_dir).as_posix()
            found.setdefault(p.relative_to(vdir).as_posix(), []).append(
                {
                    "version": vdir.name,
                    "path": rel,
                    "sha256": sha256_of(p),
                    "size": p.stat().st_size,
                    "saved": p.stat().st_mtime,
                    "attempt": int(match.group(1)),
                }
            )
    return dict(sorted(found.items()))
