"""Auto-resume markers (``resume=True``/``"auto"``): ``<project>/.resume/<key>.json``.

A requeued job gets a new process, maybe on another node, but keeps its scheduler job id; a
marker under the shared root maps that id (the key, ``_settings.job_key``) to the run.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import CorruptRunError
from . import atomic
from .layout import RESUME_DIR, project_dir


def marker_path(root: Path, project: str, key: str) -> Path:
    return project_dir(root, project) / RESUME_DIR / f"{key}.json"


def read_marker(path: Path) -> str | None:
    """The run id a marker names, or None when there is none or it is unreadable."""
    try:
        data = atomic.read_json(path, attempts=3)
    except (FileNotFoundError, CorruptRunError):
        return None
    run_id = data.get("run_id") if isinstance(data, dict) else None
    return run_id if isinstance(run_id, str) else None


def write_marker(path: Path, run_id: str, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"run_id": run_id, "key": key, "written": time.time()})


def remove_marker(path: Path) -> None:
    path.unlink(missing_ok=True)
