"""Starting or resuming a run: the resume contract of DESIGN §4, in one place.

``init`` resolves the settings, picks the run (an explicit id, this job's auto-resume marker,
or a new id), then creates it or takes it over (``_store.ownership``), and makes it the
process's current run.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from .. import _settings
from .._store import manifest as mf
from .._store.layout import run_dir as make_run_dir
from .._store.markers import marker_path, read_marker, write_marker
from .._store.ownership import Claim, create, take_over, wait_for_manifest
from ..errors import (
    CorruptRunError,
    LocalrunError,
    LocalrunWarning,
    RunExistsError,
    RunNotFoundError,
    UsageError,
)
from ..util import generate_id
from . import hooks
from .run import Run
from .state import merge
from .values import check_step

log = logging.getLogger("localrun")


def init(
    project: str | None = None,
    id: str | None = None,
    name: str | None = None,
    notes: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    config: Mapping[str, Any] | None = None,
    dir: str | os.PathLike[str] | None = None,
    resume: bool | str | None = None,
    rewind_to: int | None = None,
    force: bool | None = None,
    allow_val_change: bool = False,
    flush_interval: float | None = None,
    keep_versions: int | None = None,
    console: bool | None = None,
    system_metrics: bool | float | None = None,
) -> Run:
    """Start a run, or resume one, and make it the process's current run (docs/resuming.md).

    ``resume``: None/False/"never" (default: the id must be new), "allow" (resume if it exists),
    "must" (it must exist), a run id (resume that run), True/"auto" (resume this job's run if
    its last attempt did not finish cleanly). Arguments beat ``LOCALRUN_*`` variables.
    ``keep_versions``: how many versions of each saved file name to keep (the newest always
    stays; 0 keeps all; default 5, or ``LOCALRUN_KEEP_VERSIONS``). ``console``: tee stdout and
    stderr into the run (default on, or ``LOCALRUN_CONSOLE``; ``localrun logs`` prints it).
    ``system_metrics``: sample CPU, memory, disk, network and GPUs into the run's system stream
    (True, False, or the seconds between samples; default every 10 s; docs/system.md).
    """
    previous = hooks.current()
    if previous is not None and not previous._ended and previous._pid == os.getpid():
        try:
            previous.finish()
        except LocalrunError as exc:
            hooks.release(previous)
            warnings.warn(
                f"localrun: could not finish the previous run {previous.path} ({exc}); starting "
                "the new run anyway. Its unsaved rows stay buffered: call finish() on it to retry",
                LocalrunWarning,
                stacklevel=2,
            )
    s = _settings.resolve(
        dir=dir,
        project=project,
        id=id,
        resume=resume,
        force=force,
        flush_interval=flush_interval,
        keep_versions=keep_versions,
        console=console,
        system_metrics=system_metrics,
    )
    if rewind_to is not None:
        if isinstance(rewind_to, bool) or not isinstance(rewind_to, int) or rewind_to < -1:
            raise UsageError(f"rewind_to must be an int >= -1 (a step), got {rewind_to!r}")
        rewind_to = check_step(rewind_to)
    mf.ensure_root(s.root)
    marker: Path | None = None
    mode, run_id = s.resume, s.run_id
    fresh_hint = (
        "To start a fresh run instead, pass resume='never' with a new id (or unset "
        "LOCALRUN_RESUME and LOCALRUN_RUN_ID)"
    )
    if mode == "auto":
        key = _settings.job_key(s.resume_key)
        marker = marker_path(s.root, s.project, key)
        fresh_hint = (
            f"This job's auto-resume marker {key!r} names this run. To start a fresh run "
            f"instead, clear it (`localrun markers clear {key} --project {s.project}`) and run "
            "again, or give the job another key (LOCALRUN_RESUME_KEY=<new key>)"
        )
        if run_id is None:
            run_id = _auto_target(s, marker)
        mode = "allow"
    elif mode == "allow" and run_id is None:
        warnings.warn(
            "localrun: resume='allow' without an id can never resume: a new id is made for "
            "every run. Pass id=... (or set LOCALRUN_RUN_ID), or use resume=True to resume "
            "this job's run automatically",
            LocalrunWarning,
            stacklevel=2,
        )
    if mode == "must" and run_id is None:
        raise UsageError(
            "resume='must' needs the id of the run to resume: pass id=... (or resume='<id>'), "
            "or set LOCALRUN_RUN_ID"
        )
    run_id = run_id or generate_id()
    run_dir = make_run_dir(s.root, s.project, run_id)
    fields = {
        "name": name,
        "notes": notes,
        "tags": list(tags) if tags is not None else None,
        "group": group,
        "job_type": job_type,
    }
    claim = _claim(
        s, mode, run_id, run_dir, fields, config, rewind_to, allow_val_change, fresh_hint
    )
    if marker is not None:
        write_marker(marker, run_id, marker.stem)
    run = Run(s, run_dir, claim, marker)
    hooks.set_current(run)
    return run


def _auto_target(s: _settings.Settings, marker: Path) -> str | None:
    """The run this job's marker names, if it should be resumed; else None (start anew)."""
    target = read_marker(marker)
    if target is None:
        return None
    target_dir = make_run_dir(s.root, s.project, target)
    try:
        m = mf.load(target_dir)
    except RunNotFoundError:
        log.warning(
            "localrun: the resume marker %s names run %s, which no longer exists; "
            "starting a new run",
            marker,
            target,
        )
        return None
    if m.get("state") == "finished":
        return None
    return target


def _claim(
    s: _settings.Settings,
    mode: str,
    run_id: str,
    run_dir: Path,
    fields: dict[str, Any],
    config: Mapping[str, Any] | None,
    rewind_to: int | None,
    allow_val_change: bool,
    fresh_hint: str,
) -> Claim:
    exists = run_dir.exists()
    where = f"{s.project}/{run_id} under {s.root}"
    if exists and not mf.exists(run_dir) and not wait_for_manifest(run_dir):
        raise CorruptRunError(
            f"run {where} has a folder but no state (no log/ and no manifest.json). If it holds "
            "segments, `localrun verify --repair` rebuilds it from them; if it is an empty "
            "folder that no process is creating, remove it"
        )
    if mode == "never":
        if exists:
            raise RunExistsError(
                f"run {where} already exists. Pass resume='allow' or resume='must' to continue "
                "it, or choose another id (localrun.util.generate_id())"
            )
    elif mode == "must" and not exists:
        raise RunNotFoundError(
            f"resume='must': there is no run {where} to resume. Runs there: "
            f"{_list_runs(run_dir.parent)}. Pass resume='allow' to create it when missing"
        )
    if rewind_to is not None and not exists:
        raise UsageError(f"rewind_to={rewind_to} needs a run to resume; {where} does not exist")
    if not exists:
        initial = dict(fields)
        initial["config"] = merge({}, config or {}, True)
        try:
            return create(run_dir, s.project, run_id, s.lease_ttl, initial, s.store)
        except RunExistsError:
            if mode == "never":
                raise RunExistsError(f"run {where} was just created by another process") from None
            wait_for_manifest(run_dir)
    return take_over(
        run_dir,
        s.lease_ttl,
        force=s.force,
        rewind_to=rewind_to,
        prepare=_resume_fields(fields, config, allow_val_change, fresh_hint),
        opts=s.store,
    )


def _list_runs(project_dir: Path) -> str:
    try:
        names = sorted(p.name for p in project_dir.iterdir() if (p / "manifest.json").exists())
    except OSError:
        names = []
    if not names:
        return "none"
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _resume_fields(
    fields: dict[str, Any],
    config: Mapping[str, Any] | None,
    allow_val_change: bool,
    fresh_hint: str,
) -> Callable[[mf.Manifest], None]:
    """What a resume changes: given notes/name/tags overwrite the stored ones; config merges.

    Runs inside the takeover's commit, so a refused config change takes nothing over. Its
    error names the way out (a resumed job whose config changed is usually meant to be new).
    """

    def apply(m: mf.Manifest) -> None:
        if config:
            try:
                m["config"] = merge(m.get("config") or {}, config, allow_val_change)
            except UsageError as exc:
                raise UsageError(
                    f"resuming run {m['project']}/{m['id']}: {exc}. {fresh_hint}"
                ) from None
        given = cast(dict[str, Any], m)  # name, notes, tags, group, job_type: as given
        for k, v in fields.items():
            if v is not None:
                given[k] = v

    return apply
