"""Automatic resume (``resume=True``/``"auto"``): markers keyed by the job's identity.

A requeued job gets a new process, maybe on another node, but keeps its scheduler job id; a
marker under the shared root maps that id to the run. Without a scheduler the key is the
working directory and program, so rerunning the same script in the same place resumes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

from ._store import atomic
from ._store.layout import RESUME_DIR, project_dir, sanitize_id
from .errors import CorruptRunError

# (variable, extra variable joined to it): the first one set names the job.
_SCHEDULERS = (
    ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "slurm"),
    ("PBS_JOBID", "PBS_ARRAY_INDEX", "pbs"),
    ("LSB_JOBID", "LSB_JOBINDEX", "lsf"),
    ("TORCHELASTIC_RUN_ID", None, "torchelastic"),
    ("JOB_ID", "SGE_TASK_ID", "sge"),
    ("FLUX_JOB_ID", None, "flux"),
)


def job_key(explicit: str | None = None) -> str:
    """The identity of this job across requeues, as a file-safe key.

    ``explicit`` (``LOCALRUN_RESUME_KEY``, passed in by the settings) overrides, for a scheduler
    not listed. For SLURM arrays the array job id stays the same across tasks, so the task id is
    part of the key.
    """
    if explicit:
        return _safe("key-" + explicit)
    for var, extra, name in _SCHEDULERS:
        value = os.environ.get(var)
        if value:
            # SLURM arrays: the array's master job id is stable, each task's own id is not.
            if name == "slurm" and os.environ.get("SLURM_ARRAY_JOB_ID"):
                value = os.environ["SLURM_ARRAY_JOB_ID"]
            part = os.environ.get(extra, "") if extra else ""
            return _safe(f"{name}-{value}" + (f"-{part}" if part else ""))
    program = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    digest = hashlib.sha256(f"{os.getcwd()}\0{program}".encode()).hexdigest()[:16]
    return f"dir-{digest}"


def _safe(key: str) -> str:
    if len(key) > 64:
        key = key[:40] + "-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return sanitize_id(key, "resume key")


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
