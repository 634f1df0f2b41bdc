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

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import localrun


def _run(run: localrun.Run | None) -> localrun.Run:
    chosen = run or localrun.run
    if chosen is None:
        raise localrun.UsageError("checkpoints need a run: call localrun.init() first")
    return chosen


def save_checkpoint(
    state: dict[str, Any], name: str = "checkpoint.pt", run: localrun.Run | None = None
) -> None:
    """``torch.save(state)`` into the run as file ``name`` (a new version each time).

    The run is flushed first, so the checkpoint never gets ahead of the logged rows.
    """
    run = _run(run)
    run.flush()
    folder = Path(tempfile.mkdtemp(prefix="localrun-ckpt-"))
    try:
        path = folder / Path(name).name
        torch.save(state, path)
        run.save(str(path), base_path=str(folder), policy="now")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_checkpoint(
    name: str = "checkpoint.pt",
    run: localrun.Run | None = None,
    map_location: Any = "cpu",
    weights_only: bool = True,
) -> Any:
    """The run's latest checkpoint ``name``, or None when the run has none (a new run)."""
    run = _run(run)
    try:
        restored = localrun.restore(name)
    except localrun.RunNotFoundError:
        return None
    if restored.run_path != run.path:
        return None
    return torch.load(restored.name, map_location=map_location, weights_only=weights_only)
