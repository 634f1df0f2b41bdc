"""Checkpoints for plain PyTorch: save into the run, load back on resume.

    from localrun.integrations.torch import load_checkpoint, save_checkpoint
    run = localrun.init(project="p", resume="allow", id=run_id)
    ckpt = load_checkpoint()                       # None on a new run
    if ckpt is not None:
        model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["optim"])
        if ckpt["epoch"] < run.step - 1:          # the checkpoint is older than the log
            run.rewind(ckpt["epoch"])
    for epoch in range(run.step, epochs):
        ...
        run.log({"loss": loss}, step=epoch, commit=True)
        save_checkpoint({"epoch": epoch, "model": model.state_dict(), "optim": opt.state_dict()})

torch is imported only here, and only when this module is imported. Public API only.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

import localrun
from localrun.integrations._common import check_name, save_as


def _run(run: localrun.Run | None) -> localrun.Run:
    chosen = run or localrun.run
    if chosen is None:
        raise localrun.UsageError("checkpoints need a run: call localrun.init() first")
    return chosen


def save_checkpoint(
    state: dict[str, Any], name: str = "checkpoint.pt", run: localrun.Run | None = None
) -> None:
    """``torch.save(state)`` into ``run`` (default: the current run) as file ``name``, a new
    version each time; a nested name (``"ckpt/model.pt"``) keeps its folders.

    ``run.save`` commits the rows logged so far with the file, so the checkpoint never gets
    ahead of the logged rows.
    """
    run = _run(run)
    check_name(name, "name")
    fd, tmp = tempfile.mkstemp(prefix="localrun-ckpt-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        save_as(run, tmp, name)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(
    name: str = "checkpoint.pt",
    run: localrun.Run | None = None,
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> Any:
    """``run``'s (default: the current run's) latest checkpoint ``name``, loaded, or None when
    that run has none (a new run, or one killed before its first checkpoint)."""
    run = _run(run)
    check_name(name, "name")
    restored = localrun.restore(name, run_path=run.path, root=run.settings.root, missing_ok=True)
    if restored is None:
        return None
    return torch.load(restored.name, map_location=map_location, weights_only=weights_only)
