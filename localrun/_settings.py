"""Settings: an argument beats a ``LOCALRUN_*`` variable beats the default, resolved once in init.

Resolved once so a script that changes ``os.environ`` mid-run cannot move its own run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._store.layout import resolve_root, sanitize_id
from .errors import UsageError

DEFAULT_PROJECT = "uncategorized"
RESUME_MODES = ("never", "allow", "must", "auto")
_ENV_RESUME = {
    "never": "never",
    "false": "never",
    "0": "never",
    "": "never",
    "allow": "allow",
    "must": "must",
    "auto": "auto",
    "true": "auto",
    "1": "auto",
}


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number; unset it or give seconds/rows") from None
    if value <= 0:
        raise UsageError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class Settings:
    root: Path
    project: str
    run_id: str | None
    resume: str  # one of RESUME_MODES, after a run id given as resume= was moved to run_id
    force: bool
    flush_interval: float
    flush_rows: int
    lease_ttl: float


def resolve_resume(resume: bool | str | None, run_id: str | None) -> tuple[str, str | None]:
    """``(mode, run_id)`` from the ``resume=`` argument or ``LOCALRUN_RESUME``.

    A string that is not a mode is a run id to resume ("must" for that id), wandb's contract.
    """
    if resume is None:
        raw = os.environ.get("LOCALRUN_RESUME")
        if raw is None:
            return "never", run_id
        mode = _ENV_RESUME.get(raw.strip().lower())
        if mode is None:
            raise UsageError(
                f"LOCALRUN_RESUME={raw!r} is not a resume mode; use one of never, allow, must, "
                "auto (and LOCALRUN_RUN_ID for the id)"
            )
        return mode, run_id
    if resume is True:
        return "auto", run_id
    if resume is False:
        return "never", run_id
    if not isinstance(resume, str):
        raise UsageError(
            f"resume={resume!r} is not understood; pass True/'auto', 'allow', 'must', 'never', "
            "False or a run id"
        )
    if resume in RESUME_MODES:
        return resume, run_id
    target = sanitize_id(resume, "resume run id")
    if run_id is not None and sanitize_id(run_id) != target:
        raise UsageError(
            f"id={run_id!r} and resume={resume!r} name two different runs; pass only one of them"
        )
    return "must", target


def resolve(
    *,
    dir: str | os.PathLike[str] | None,
    project: str | None,
    id: str | None,
    resume: bool | str | None,
    force: bool | None,
    flush_interval: float | None,
) -> Settings:
    run_id = id if id is not None else os.environ.get("LOCALRUN_RUN_ID") or None
    mode, run_id = resolve_resume(resume, run_id)
    proj = sanitize_id(
        project or os.environ.get("LOCALRUN_PROJECT") or DEFAULT_PROJECT, "project name"
    )
    if force is None:
        force = os.environ.get("LOCALRUN_FORCE", "").lower() in ("1", "true", "yes")
    interval = (
        flush_interval if flush_interval is not None else _env_float("LOCALRUN_FLUSH_INTERVAL", 2.0)
    )
    if interval <= 0:
        raise UsageError(f"flush_interval={interval!r} must be positive seconds")
    return Settings(
        root=resolve_root(dir),
        project=proj,
        run_id=sanitize_id(run_id) if run_id is not None else None,
        resume=mode,
        force=force,
        flush_interval=interval,
        flush_rows=int(_env_float("LOCALRUN_FLUSH_ROWS", 10_000)),
        lease_ttl=_env_float("LOCALRUN_LEASE_TTL", 30.0),
    )
