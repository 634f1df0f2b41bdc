"""What the framework integrations share: saving a file under a chosen run name, and making
hyperparameters storable. Public localrun API only; no framework is imported here."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import localrun

_PLAIN = (str, bool, int, type(None))


def save_as(run: localrun.Run, source: str | os.PathLike[str], name: str) -> None:
    """Store the file ``source`` in ``run`` as ``name`` (a nested name like ``ckpt/model.pt``
    keeps its folders), committed before this returns.

    ``run.save`` names a file by its path relative to ``base_path``, so the file is linked (or
    copied, across filesystems) to ``name`` inside a temporary folder first.
    """
    folder = Path(tempfile.mkdtemp(prefix="localrun-save-"))
    try:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        run.save(str(target), base_path=str(folder), policy="now")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_name(name: str, what: str) -> str:
    """A run file name a user passed: relative, inside the run, not a folder."""
    parts = Path(name).parts
    if not name or name.endswith(("/", os.sep)) or Path(name).is_absolute() or ".." in parts:
        raise localrun.UsageError(
            f"{what}={name!r} must be a file name inside the run, like 'model.pt' or "
            "'ckpt/model.pt'"
        )
    return name


def storable(params: Any) -> dict[str, Any]:
    """Hyperparameters as a config dict localrun can store: a ``Namespace`` or mapping becomes a
    dict, nested mappings stay nested, numbers, strings, booleans, None and lists of them are
    kept, and anything else (a class, a callable, a tensor) is stored as its ``str``, so that
    logging a model's hyperparameters never fails on a value only the framework understands."""
    if isinstance(params, Namespace):
        params = vars(params)
    if not isinstance(params, Mapping):
        raise localrun.UsageError(
            f"hyperparameters must be a dict or an argparse.Namespace, got {type(params).__name__}"
        )
    return {str(k): _value(v) for k, v in params.items()}


def _value(v: Any) -> Any:
    if isinstance(v, Namespace):
        v = vars(v)
    if isinstance(v, Mapping):
        return {str(k): _value(x) for k, x in v.items()}
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, _PLAIN):
        return v
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    item = getattr(v, "item", None)  # a 0-d tensor or numpy scalar
    if callable(item) and getattr(v, "ndim", None) == 0:
        try:
            return _value(item())
        except (TypeError, ValueError):
            pass
    return str(v)
