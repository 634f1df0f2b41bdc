"""manifest.json: a run's whole state, replaced atomically; the commit point of every flush.

The manifest is plain JSON (docs/format.md) so that anything can read it without localrun.
Every change is a read-modify-write under the manifest mutex: :func:`update`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CorruptRunError, RunNotFoundError
from . import atomic
from .layout import FORMAT_VERSION, MANIFEST, MANIFEST_LOCK, ROOT_MARKER
from .locks import manifest_mutex

T = TypeVar("T")
Manifest = dict[str, Any]
STATES = ("running", "finished", "failed", "crashed", "preempted")
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def new(project: str, run_id: str, **fields: Any) -> Manifest:
    now = time.time()
    m: Manifest = {
        "format": FORMAT_VERSION,
        "project": project,
        "id": run_id,
        "name": run_id,
        "notes": None,
        "tags": [],
        "group": None,
        "job_type": None,
        "config": {},
        "summary": {},
        "state": "running",
        "created": now,
        "updated": now,
        "runtime": 0.0,
        "last_step": -1,
        "dropped_steps": 0,
        "attempts": [],
        "segments": [],
        "rewinds": [],
        "schema": {},
        "files": {},
        "owner": None,
    }
    m.update({k: v for k, v in fields.items() if v is not None})
    return m


def path(run_dir: Path) -> Path:
    return run_dir / MANIFEST


def exists(run_dir: Path) -> bool:
    return path(run_dir).is_file()


def load(run_dir: Path) -> Manifest:
    """Read a run's manifest; :class:`RunNotFoundError` if there is none."""
    try:
        data = atomic.read_json(path(run_dir))
    except FileNotFoundError:
        raise RunNotFoundError(f"no run at {run_dir} (no {MANIFEST})") from None
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise CorruptRunError(
            f"{path(run_dir)} is not a localrun manifest; run `localrun verify --repair` to "
            "rebuild it from the run's segments"
        )
    if data.get("format", 1) > FORMAT_VERSION:
        raise CorruptRunError(
            f"{path(run_dir)} has format {data['format']}, newer than this localrun reads "
            f"({FORMAT_VERSION}); upgrade localrun"
        )
    return data


def save(run_dir: Path, m: Manifest) -> None:
    m["updated"] = time.time()
    atomic.write_json(path(run_dir), m)


def update(
    run_dir: Path, fn: Callable[[Manifest], T], commit: Callable[[T], bool] | None = None
) -> T:
    """Apply ``fn`` to the manifest under the mutex and commit it; returns what ``fn`` returns.

    ``fn`` may raise to abort, and ``commit(result)`` may say False (a look that changed
    nothing): nothing is written then.
    """
    with manifest_mutex(run_dir / MANIFEST_LOCK):
        m = load(run_dir)
        result = fn(m)
        if commit is None or commit(result):
            save(run_dir, m)
        return result


def ensure_root(root: Path) -> None:
    """Create the root and its format marker (once; later calls only check it)."""
    marker = root / ROOT_MARKER
    if marker.is_file():
        try:
            info = atomic.read_json(marker)
        except CorruptRunError:
            return
        if isinstance(info, dict) and info.get("format", 1) > FORMAT_VERSION:
            raise CorruptRunError(
                f"{root} holds localrun format {info['format']}, newer than this localrun "
                f"writes ({FORMAT_VERSION}); upgrade localrun"
            )
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise atomic.storage_error(exc, "create the root", root) from exc
    atomic.write_json(marker, {"format": FORMAT_VERSION, "created": time.time()})


def encode_value(v: Any) -> Any:
    """Summary values in JSON: non-finite floats become the strings NaN/Infinity/-Infinity."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, list):
        return [encode_value(x) for x in v]
    return v


def decode_value(v: Any) -> Any:
    if isinstance(v, str) and v in _NONFINITE:
        return _NONFINITE[v]
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    return v


def visible_bound(m: Manifest, attempt: int, seq: int) -> int | None:
    """The highest step readers see of segment ``(attempt, seq)``, or None for all of it.

    A rewind ``{attempt, seq, step}`` hides, in every segment written before it (a smaller
    ``(attempt, seq)``), the rows whose step is above ``step``.
    """
    bounds = [r["step"] for r in m.get("rewinds", []) if (attempt, seq) < (r["attempt"], r["seq"])]
    return min(bounds) if bounds else None
