"""Every ``LOCALRUN_*`` variable, read and validated here and nowhere else.

An argument beats a variable beats the default. Each entry point (``init``, ``Api``, the CLI)
resolves once, so a script that changes ``os.environ`` mid-run cannot move its own run, and a
bad value is one :class:`UsageError` naming the variable and what it accepts: never an
import-time traceback, never a value that makes a loop spin forever. The store below takes
the result as parameters (:class:`StoreOptions`) and never reads the environment itself.

========================== ======================================== =========================
variable                   meaning                                  accepts (default)
========================== ======================================== =========================
LOCALRUN_DIR               the root                                 a path (./localruns)
LOCALRUN_PROJECT           project of a new run                     a name (uncategorized)
LOCALRUN_RUN_ID            id of the run to start or resume         an id
LOCALRUN_RESUME            resume mode                              never/allow/must/auto,
                                                                    true/false/1/0
LOCALRUN_RESUME_KEY        auto-resume job key (unknown schedulers) any text
LOCALRUN_FORCE             take a run over from a live-looking owner 1/true/yes, 0/false/no
LOCALRUN_FLUSH_INTERVAL    seconds between background flushes       > 0 (2)
LOCALRUN_FLUSH_ROWS        rows that trigger a flush                int >= 1 (10000)
LOCALRUN_BUFFER_ROWS       rows log() buffers before it waits       int >= 1 (50000)
LOCALRUN_BUFFER_MB         MB log() buffers before it waits         > 0 (32)
LOCALRUN_LEASE_TTL         seconds a silent owner keeps its lease   >= 1 (30)
LOCALRUN_LOCK_TIMEOUT      seconds to wait for the courtesy mutex   > 0 (5)
LOCALRUN_STALE_LOCK        seconds before a strict claim is stale   > 0 (30)
LOCALRUN_LOCK              which mutex                              auto/flock/strict (auto)
LOCALRUN_COMPACT_FANOUT    segments merged per compaction           int 2..1024 (16)
LOCALRUN_KEEP_REVISIONS    old revisions kept in log/               int >= 1 (64)
LOCALRUN_KEEP_VERSIONS     versions kept per saved file name        int >= 0, 0 = all (5)
LOCALRUN_WATCH             how live saves and sync --watch watch    auto/native/poll (auto)
LOCALRUN_CONSOLE           capture stdout/stderr into the run       1/true/yes, 0/false/no (1)
LOCALRUN_CONSOLE_MAX_MB    captured output kept per run (rotation)  > 0 (100)
LOCALRUN_SYSTEM_METRICS    sample CPU, memory, disk, network, GPUs  1/true/yes, 0/false/no (1)
LOCALRUN_SYSTEM_INTERVAL   seconds between system samples           >= 0.01 (10)
LOCALRUN_TOKEN             shared secret of sync and the server     any text without spaces
LOCALRUN_TOKEN_FILE        a file holding that token (if no above)  a path
========================== ======================================== =========================
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from ._store.layout import resolve_root, sanitize_id
from ._store.options import LockKind, StoreOptions
from .errors import UsageError

DEFAULT_PROJECT = "uncategorized"
RESUME_MODES = ("never", "allow", "must", "auto")
ResumeMode = Literal["never", "allow", "must", "auto"]
WatchKind = Literal["auto", "native", "poll"]
_ENV_RESUME: dict[str, ResumeMode] = {
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
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
KNOWN = (
    "LOCALRUN_DIR",
    "LOCALRUN_PROJECT",
    "LOCALRUN_RUN_ID",
    "LOCALRUN_RESUME",
    "LOCALRUN_RESUME_KEY",
    "LOCALRUN_FORCE",
    "LOCALRUN_FLUSH_INTERVAL",
    "LOCALRUN_FLUSH_ROWS",
    "LOCALRUN_BUFFER_ROWS",
    "LOCALRUN_BUFFER_MB",
    "LOCALRUN_LEASE_TTL",
    "LOCALRUN_LOCK_TIMEOUT",
    "LOCALRUN_STALE_LOCK",
    "LOCALRUN_LOCK",
    "LOCALRUN_COMPACT_FANOUT",
    "LOCALRUN_KEEP_REVISIONS",
    "LOCALRUN_KEEP_VERSIONS",
    "LOCALRUN_WATCH",
    "LOCALRUN_CONSOLE",
    "LOCALRUN_CONSOLE_MAX_MB",
    "LOCALRUN_SYSTEM_METRICS",
    "LOCALRUN_SYSTEM_INTERVAL",
    "LOCALRUN_TOKEN",
    "LOCALRUN_TOKEN_FILE",
)


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_text(name: str) -> str | None:
    """A text variable; unset and empty are the same (None)."""
    return _raw(name) or None


def _number(name: str, default: float, minimum: float, unit: str) -> float:
    raw = _raw(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(
            f"{name}={raw!r} is not a number; give {unit} as a plain number (like {default:g}) "
            "or unset it"
        ) from None
    if not value >= minimum or value == float("inf"):
        raise UsageError(f"{name}={raw!r} must be a finite number >= {minimum:g} ({unit})")
    return value


def _int(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = _raw(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[+]?\d+", raw):
        raise UsageError(
            f"{name}={raw!r} is not a whole number; give one like {default} or unset it"
        )
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        top = f" and <= {maximum}" if maximum is not None else ""
        raise UsageError(f"{name}={raw!r} must be >= {minimum}{top}")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = _raw(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in choices:
        raise UsageError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw.lower()


def _flag(name: str) -> bool:
    raw = _raw(name)
    if raw is None or raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE:
        return True
    raise UsageError(f"{name}={raw!r} is not a yes/no value; use 1 or 0")


# (variable, extra variable joined to it): the first one set names the job.
_SCHEDULERS = (
    ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "slurm"),
    ("PBS_JOBID", "PBS_ARRAY_INDEX", "pbs"),
    ("LSB_JOBID", "LSB_JOBINDEX", "lsf"),
    ("TORCHELASTIC_RUN_ID", None, "torchelastic"),
    ("JOB_ID", "SGE_TASK_ID", "sge"),
    ("FLUX_JOB_ID", None, "flux"),
)


def scheduler_job() -> dict[str, str] | None:
    """The scheduler's own job id, for an attempt's context: ``{"scheduler", "id"}`` and, for
    an array job, ``array_task``; None outside a scheduler."""
    for var, extra, name in _SCHEDULERS:
        value = os.environ.get(var)
        if value:
            job = {"scheduler": name, "id": value}
            task = os.environ.get(extra) if extra else None
            if task:
                job["array_task"] = task
            return job
    return None


# wandb's variables (localrun.wandb), for job files written for wandb: used where the LOCALRUN_*
# variable of the same meaning is unset.
_WANDB = {"project": "PROJECT", "id": "RUN_ID", "resume": "RESUME", "dir": "DIR", "mode": "MODE"}


def wandb_defaults() -> dict[str, str]:
    """``{init argument: value}`` from ``WANDB_PROJECT``, ``WANDB_RUN_ID``, ``WANDB_RESUME`` and
    ``WANDB_DIR``, each only where ``LOCALRUN_<same>`` is unset (localrun's own wins)."""
    out = {}
    for arg, var in _WANDB.items():
        value = os.environ.get(f"WANDB_{var}")
        if value and env_text(f"LOCALRUN_{var}") is None:
            out[arg] = value
    return out


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


def root(dir: str | os.PathLike[str] | None = None) -> Path:
    """``dir``, else ``LOCALRUN_DIR``, else ``./localruns``, made absolute once."""
    return resolve_root(dir if dir is not None else env_text("LOCALRUN_DIR"))


def store_options() -> StoreOptions:
    """The store's knobs from the environment (validated)."""
    return StoreOptions(
        mutex_wait=_number("LOCALRUN_LOCK_TIMEOUT", 5.0, 0.0, "seconds"),
        stale_claim=_number("LOCALRUN_STALE_LOCK", 30.0, 0.0, "seconds"),
        lock_kind=cast(LockKind, _choice("LOCALRUN_LOCK", ("auto", "flock", "strict"), "auto")),
        keep_revisions=_int("LOCALRUN_KEEP_REVISIONS", 64, 1),
    )


def lease_ttl() -> float:
    return _number("LOCALRUN_LEASE_TTL", 30.0, 1.0, "seconds")


def watch_kind() -> WatchKind:
    return cast(WatchKind, _choice("LOCALRUN_WATCH", ("auto", "native", "poll"), "auto"))


def token() -> str | None:
    """The token ``localrun server`` and the syncers share: ``LOCALRUN_TOKEN``, else the
    first line of the file ``LOCALRUN_TOKEN_FILE`` names, else None.

    Never an option of a command: a command line is visible to every user of the host (ps).
    A file suits a cluster: one file readable only by its owner, named in the job's environment.
    """
    name, value = "LOCALRUN_TOKEN", env_text("LOCALRUN_TOKEN")
    if value is None:
        path = env_text("LOCALRUN_TOKEN_FILE")
        if path is None:
            return None
        name = "LOCALRUN_TOKEN_FILE"
        try:
            text = Path(path).expanduser().read_text().strip()
            value = text.splitlines()[0].strip() if text else ""
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not text"
            raise UsageError(
                f"LOCALRUN_TOKEN_FILE={path!r} cannot be read ({why}); name a readable file "
                "that holds the token, or unset it"
            ) from None
        if not value:
            raise UsageError(f"LOCALRUN_TOKEN_FILE={path!r} is empty; put the token in it")
    if not value.isascii() or not value.isprintable() or " " in value:
        raise UsageError(
            f"the token in {name} has spaces or characters outside printable ASCII; an HTTP "
            "header cannot carry it: use letters, digits and punctuation (`openssl rand -hex 32`)"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """One run's settings, resolved once by ``init``."""

    root: Path
    project: str
    run_id: str | None
    resume: ResumeMode  # after a run id given as resume= was moved to run_id
    force: bool
    flush_interval: float
    flush_rows: int
    buffer_rows: int  # rows logged but not yet written before log() waits for the writer
    buffer_mb: float  # their estimated size, likewise (docs/logging.md#memory)
    lease_ttl: float
    compact_fanout: int
    keep_versions: int  # per saved file name; 0 keeps every version
    resume_key: str | None
    watch: WatchKind
    store: StoreOptions
    console: bool = True  # tee stdout/stderr into the run's console/ chunks
    console_max_bytes: int = 100 * 2**20
    system_interval: float = 10.0  # seconds between system samples; 0: no sampler


def _keep_versions(given: int | None) -> int:
    if given is None:
        return _int("LOCALRUN_KEEP_VERSIONS", 5, 0)
    if isinstance(given, bool) or not isinstance(given, int) or given < 0:
        raise UsageError(f"keep_versions={given!r} must be an int >= 0 (0 keeps every version)")
    return given


def resolve_resume(resume: bool | str | None, run_id: str | None) -> tuple[ResumeMode, str | None]:
    """``(mode, run_id)`` from the ``resume=`` argument or ``LOCALRUN_RESUME``.

    A string argument that is not a mode is a run id to resume ("must" for that id), wandb's
    contract; the variable takes modes only (the id goes in ``LOCALRUN_RUN_ID``).
    """
    if resume is None:
        raw = _raw("LOCALRUN_RESUME")
        if raw is None:
            return "never", run_id
        mode = _ENV_RESUME.get(raw.lower())
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
        return cast(ResumeMode, resume), run_id
    return _resume_id(resume, run_id)


def _resume_id(value: str, run_id: str | None) -> tuple[ResumeMode, str]:
    target = sanitize_id(value, "resume run id")
    if run_id is not None and sanitize_id(run_id) != target:
        raise UsageError(
            f"id={run_id!r} and resume={value!r} name two different runs; pass only one of them"
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
    keep_versions: int | None = None,
    console: bool | None = None,
    system_metrics: bool | float | None = None,
) -> Settings:
    run_id = id if id is not None else env_text("LOCALRUN_RUN_ID")
    mode, run_id = resolve_resume(resume, run_id)
    proj = sanitize_id(project or env_text("LOCALRUN_PROJECT") or DEFAULT_PROJECT, "project name")
    if flush_interval is None:
        interval = _number("LOCALRUN_FLUSH_INTERVAL", 2.0, 0.001, "seconds")
    elif (
        isinstance(flush_interval, bool)
        or not isinstance(flush_interval, (int, float))
        or not 0 < flush_interval < float("inf")
    ):
        raise UsageError(f"flush_interval={flush_interval!r} must be positive seconds")
    else:
        interval = float(flush_interval)
    return Settings(
        root=root(dir),
        project=proj,
        run_id=sanitize_id(run_id) if run_id is not None else None,
        resume=mode,
        force=_flag("LOCALRUN_FORCE") if force is None else bool(force),
        flush_interval=interval,
        flush_rows=_int("LOCALRUN_FLUSH_ROWS", 10_000, 1),
        buffer_rows=_int("LOCALRUN_BUFFER_ROWS", 50_000, 1),
        buffer_mb=_number("LOCALRUN_BUFFER_MB", 32.0, 0.001, "megabytes"),
        lease_ttl=lease_ttl(),
        compact_fanout=_int("LOCALRUN_COMPACT_FANOUT", 16, 2, 1024),
        keep_versions=_keep_versions(keep_versions),
        resume_key=env_text("LOCALRUN_RESUME_KEY"),
        watch=watch_kind(),
        store=store_options(),
        console=_console(console),
        console_max_bytes=int(_number("LOCALRUN_CONSOLE_MAX_MB", 100.0, 0.001, "MiB") * 2**20),
        system_interval=_system_interval(system_metrics),
    )


def _system_interval(given: bool | float | None) -> float:
    """``system_metrics``: True/False, or the seconds between samples; else the variables."""
    if given is None:
        if _raw("LOCALRUN_SYSTEM_METRICS") is not None and not _flag("LOCALRUN_SYSTEM_METRICS"):
            return 0.0
        return _number("LOCALRUN_SYSTEM_INTERVAL", 10.0, 0.01, "seconds")
    if given is True:
        return _number("LOCALRUN_SYSTEM_INTERVAL", 10.0, 0.01, "seconds")
    if given is False:
        return 0.0
    if not isinstance(given, (int, float)) or not 0.01 <= given < float("inf"):
        raise UsageError(f"system_metrics={given!r}: pass True, False or seconds >= 0.01")
    return float(given)


def _console(given: bool | None) -> bool:
    if given is None:
        return _raw("LOCALRUN_CONSOLE") is None or _flag("LOCALRUN_CONSOLE")
    if not isinstance(given, bool):
        raise UsageError(f"console={given!r} must be True or False")
    return given
