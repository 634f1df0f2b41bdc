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


def save_tree(run: localrun.Run, folder: str | os.PathLike[str], name: str) -> None:
    """Store every file under ``folder`` in ``run`` as ``name/<relative path>``, in one commit
    (with the rows logged so far): a checkpoint folder is restored whole or not at all."""
    src = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix="localrun-save-"))
    try:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            target = tmp / name / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
        run.save(str(tmp / name / "**" / "*"), base_path=str(tmp), policy="now")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def restore_tree(
    run_path: str, name: str, to: str | os.PathLike[str], root: str | os.PathLike[str] | None
) -> Path | None:
    """The run's files under ``name/`` copied into the folder ``to`` (made if needed), or None
    when the run (or that folder of it) does not exist. Needs no open run."""
    try:
        stored = localrun.Api(root).run(run_path)
    except localrun.RunNotFoundError:
        return None
    prefix = name.rstrip("/") + "/"
    names = [n for n in stored.files() if n.startswith(prefix)]
    if not names:
        return None
    out = Path(to)
    for n in names:
        target = out / n[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        localrun.restore(n, run_path=run_path, root=root, to=target, replace=True)
    return out
