"""Media blobs: content-addressed, immutable files under a run's ``media/`` (DESIGN §2).

A blob is named by the sha256 of its bytes, so the same image logged twice is stored once, and
a blob is never rewritten: it is created with put-if-absent like a segment. Blobs are written
before the row that references them is committed; a crash in between leaves an unreferenced
blob, which costs space and nothing else (sync copies it like any immutable file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import atomic
from .layout import safe_dir


def write_blob(run_dir: Path, rel_path: str, payload: bytes, sha256: str) -> None:
    """Store ``payload`` at ``rel_path`` (named by its sha256: ``media/<2 hex>/<sha256><suffix>``,
    ``context/<sha256>.diff``) unless a blob of that content is there."""
    rel = Path(rel_path)
    try:
        folder = safe_dir(run_dir, rel.parent.as_posix())
    except OSError as exc:
        raise atomic.storage_error(exc, "create the folder", run_dir / rel.parent) from exc
    final = folder / rel.name
    if final.is_file() and final.stat().st_size == len(payload):
        return  # content-addressed: same name, same bytes

    def write(path: Path) -> None:
        path.write_bytes(payload)

    try:
        atomic.publish_file(final, write)
    except FileExistsError:
        # Another thread or process stored it first: check that it holds these bytes.
        if hashlib.sha256(final.read_bytes()).hexdigest() != sha256:
            raise atomic.storage_error(
                OSError(f"{final} exists with other content"), "store media", final
            ) from None
