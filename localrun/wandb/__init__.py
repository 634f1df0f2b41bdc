"""wandb's API, offline: ``import localrun.wandb as wandb`` and a wandb script runs unchanged.

Every call maps onto localrun's own API (the run is a localrun run: ``localrun ls`` lists it,
``localrun sync`` pushes it). What localrun cannot do offline (artifacts, sweeps, ``watch``,
alerts...) raises :class:`UnsupportedError` naming the feature: a script never believes it
recorded something that was dropped. docs/integrations/wandb.md has the whole table.

This module imports nothing heavier than localrun itself.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import localrun
from localrun._settings import wandb_defaults
from localrun.errors import LocalrunError, UsageError

from . import util
from ._api import Api
from ._run import DisabledRun, WandbRun

__all__ = [
    "Api",
    "Settings",
    "UnsupportedError",
    "config",
    "define_metric",
    "finish",
    "init",
    "log",
    "login",
    "restore",
    "run",
    "save",
    "summary",
    "util",
]


class UnsupportedError(LocalrunError, NotImplementedError):
    """A wandb feature localrun.wandb does not offer; the message names it and what to use."""

    exit_code = 2


# wandb names that exist there and not here: asking for one is an error that says so.
_UNSUPPORTED = {
    "watch": "gradient/parameter watching (log torch histograms yourself, or use the Lightning "
    "integration)",
    "unwatch": "gradient/parameter watching",
    "Artifact": "artifacts (use run.save() for files; versions are kept per name)",
    "log_artifact": "artifacts (use run.save())",
    "use_artifact": "artifacts (use localrun.restore(name, run_path=...))",
    "log_model": "model artifacts (use run.save())",
    "use_model": "model artifacts (use localrun.restore())",
    "link_model": "the model registry",
    "sweep": "sweeps (hyper-parameter search needs a server)",
    "agent": "sweep agents",
    "controller": "sweep controllers",
    "alert": "alerts (there is no server to send them)",
    "Video": "video media",
    "Audio": "audio media",
    "Html": "HTML media",
    "Object3D": "3D media",
    "Molecule": "molecule media",
    "plot": "custom charts (log the values; the dashboard draws them)",
    "log_code": "code saving (run.save() the files)",
    "mark_preempting": "mark_preempting (localrun records SIGTERM as preempted by itself)",
    "tensorboard": "TensorBoard syncing",
}

_MEDIA = ("Image", "Histogram", "Table")


class Settings:
    """``wandb.Settings(...)``: accepted so scripts that pass it run; no field changes anything.

    Its fields tune wandb's background service and uploads, which localrun does not have.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields = fields


run: WandbRun | DisabledRun | None = None
config: Any = None  # the current run's config once init() ran (wandb's module attribute)
summary: Any = None


def _set_current(r: WandbRun | DisabledRun | None) -> None:
    global run, config, summary
    run = r
    config = r.config if r is not None else None
    summary = r.summary if r is not None else None


def init(
    project: str | None = None,
    entity: str | None = None,
    name: str | None = None,
    id: str | None = None,
    resume: bool | str | None = None,
    config: Mapping[str, Any] | None = None,
    notes: str | None = None,
    tags: list[str] | tuple[str, ...] | None = None,
    group: str | None = None,
    job_type: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    mode: str | None = None,
    reinit: bool | str | None = None,
    allow_val_change: bool | None = None,
    config_exclude_keys: list[str] | None = None,
    config_include_keys: list[str] | None = None,
    settings: Settings | Mapping[str, Any] | None = None,
    save_code: bool | None = None,
    anonymous: str | None = None,
    **unsupported: Any,
) -> WandbRun | DisabledRun:
    """``wandb.init``: start or resume a run (wandb's resume contract, docs/resuming.md).

    ``entity`` is kept as the tag ``entity:<name>``; ``dir`` is the localrun root (the folder
    ``localruns`` would otherwise be). ``mode``: "offline" and "online" both record locally
    ("online" warns that nothing is uploaded until ``localrun sync``); "disabled" returns a run
    that records nothing. ``reinit``: like wandb, a second ``init`` without it returns the
    current run; with it, the current run is finished first.
    """
    for key, value in unsupported.items():
        if value not in (None, False):
            raise UnsupportedError(f"wandb.init({key}=...) is not supported by localrun.wandb")
    mode = mode or wandb_defaults().get("mode") or "offline"
    if mode not in ("offline", "online", "disabled", "dryrun", "run"):
        raise UsageError(f"wandb.init(mode={mode!r}): use 'offline', 'online' or 'disabled'")
    if run is not None and not run.finished and reinit in (None, False, "return_previous"):
        return run
    if run is not None and not run.finished:
        run.finish()
    if mode == "disabled":
        _set_current(DisabledRun(dict(config or {})))
        assert run is not None
        return run
    if mode in ("online", "run"):
        warnings.warn(
            "localrun.wandb records offline: nothing is uploaded; push runs later with "
            "`localrun sync`",
            localrun.LocalrunWarning,
            stacklevel=2,
        )
    project, id, resume, dir = _from_wandb_env(project, id, resume, dir)
    cfg = _filter_config(dict(config or {}), config_include_keys, config_exclude_keys)
    all_tags = list(tags or [])
    if entity:
        all_tags.append(f"entity:{entity}")
    inner = localrun.init(
        project=project,
        id=id,
        name=name,
        notes=notes,
        tags=all_tags or None,
        group=group,
        job_type=job_type,
        config=cfg,
        dir=dir,
        resume=resume,
        allow_val_change=bool(allow_val_change),
    )
    _set_current(WandbRun(inner, entity))
    assert run is not None
    return run


def _from_wandb_env(project: Any, id: Any, resume: Any, dir: Any) -> tuple[Any, Any, Any, Any]:
    given = {"project": project, "id": id, "resume": resume, "dir": dir}
    for arg, value in wandb_defaults().items():
        if given[arg] is None:
            given[arg] = value
    return given["project"], given["id"], given["resume"], given["dir"]


def _filter_config(
    cfg: dict[str, Any], include: list[str] | None, exclude: list[str] | None
) -> dict[str, Any]:
    if include is not None:
        cfg = {k: v for k, v in cfg.items() if k in include}
    if exclude is not None:
        cfg = {k: v for k, v in cfg.items() if k not in exclude}
    return cfg


def _current() -> WandbRun | DisabledRun:
    if run is None:
        raise UsageError("call wandb.init() first (localrun.wandb needs a run to record into)")
    return run


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """``wandb.log``: record ``data`` (nested dicts become ``a/b`` keys) at a step."""
    _current().log(data, step=step, commit=commit)


def define_metric(name: str, step_metric: str | None = None, **kw: Any) -> None:
    """``wandb.define_metric``: see :meth:`WandbRun.define_metric`."""
    _current().define_metric(name, step_metric=step_metric, **kw)


def save(
    glob_str: str | os.PathLike[str],
    base_path: str | os.PathLike[str] | None = None,
    policy: str = "live",
) -> list[str]:
    """``wandb.save``: copy files into the run (policy "live" by default, like wandb)."""
    return _current().save(glob_str, base_path=base_path, policy=policy)


def restore(
    name: str,
    run_path: str | None = None,
    replace: bool = False,
    root: str | os.PathLike[str] | None = None,
) -> localrun.RestoredFile | None:
    """``wandb.restore``: the run's latest saved ``name``; ``.name`` is a local path.

    ``run_path`` may be wandb's ``entity/project/run_id``: the entity is ignored. Like wandb,
    a file the run does not have gives None rather than an error.
    """
    if run_path is not None and run_path.count("/") == 2:
        run_path = run_path.split("/", 1)[1]
    if run_path is None and isinstance(run, DisabledRun):
        return None
    return localrun.restore(name, run_path=run_path, replace=replace, root=root, missing_ok=True)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """``wandb.finish``: end the current run (exit code 0 = finished, else failed)."""
    if run is not None:
        run.finish(exit_code=exit_code)
        _set_current(None)


def login(*args: Any, **kwargs: Any) -> bool:
    """``wandb.login``: there is no account offline; always True, so scripts go on."""
    return True


def __getattr__(name: str) -> Any:
    if name in _MEDIA:
        media = getattr(localrun, name, None)
        if media is not None:
            return media
        raise UnsupportedError(
            f"wandb.{name} needs localrun's media values, which this version does not have yet"
        )
    if name in _UNSUPPORTED:
        raise UnsupportedError(
            f"wandb.{name} is not supported by localrun.wandb: {_UNSUPPORTED[name]}"
        )
    raise AttributeError(f"module 'localrun.wandb' has no attribute {name!r}")
