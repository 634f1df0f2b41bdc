"""Console chunks: the captured output of a run, as immutable files listed by the revision.

``console/<attempt:04d>-<seq:06d>.log`` (UTF-8) holds what one flush took from the capture; the
revision's ``console`` list names the chunks in order, so ``localrun logs`` is a concatenation
and sync copies them like segments. The total is bounded: the commit that lists a new chunk
drops the oldest ones past the bound from the list (rotation), and their files are removed only
after that commit.
"""

from __future__ import annotations

from pathlib import Path

from . import atomic
from .layout import safe_dir
from .records import ConsoleEntry, Revision

CONSOLE = "console"


def write_chunk(run_dir: Path, attempt: int, seq: int, text: str) -> ConsoleEntry:
    """Publish ``text`` as chunk ``(attempt, seq)``; ``FileExistsError`` if the name is taken."""
    try:
        folder = safe_dir(run_dir, CONSOLE)
    except OSError as exc:
        raise atomic.storage_error(exc, "create the folder", run_dir / CONSOLE) from exc
    name = f"{attempt:04d}-{seq:06d}.log"
    payload = text.encode("utf-8", "backslashreplace")

    def write(path: Path) -> None:
        path.write_bytes(payload)

    atomic.publish_file(folder / name, write)
    return {"file": f"{CONSOLE}/{name}", "attempt": attempt, "seq": seq, "bytes": len(payload)}


def add_chunks(m: Revision, entries: list[ConsoleEntry], max_bytes: int) -> list[ConsoleEntry]:
    """List ``entries`` in ``m`` and drop the oldest chunks past ``max_bytes``; returns the
    dropped ones (the caller removes their files once the commit has happened)."""
    listed = m.setdefault("console", [])
    known = {e["file"] for e in listed}
    listed.extend(e for e in entries if e["file"] not in known)
    dropped: list[ConsoleEntry] = []
    total = sum(e["bytes"] for e in listed)
    while total > max_bytes and len(listed) > 1:
        old = listed.pop(0)
        total -= old["bytes"]
        dropped.append(old)
    return dropped
