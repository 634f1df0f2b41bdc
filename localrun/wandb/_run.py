"""wandb's ``Run`` over a localrun run: the same names, and ``define_metric`` summaries.

``define_metric(name, summary="min,max,mean,last")`` keeps wandb's nested summary
(``summary["loss"]["min"]``) as flat localrun summary keys ``loss/min`` (localrun flattens nested
dicts with ``/``), and :class:`NestedSummary` reads them back nested, so wandb code that reads
the summary works. The mean's count is kept as ``<key>/count`` so a resumed run continues the
mean instead of restarting it.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import localrun
from localrun.errors import UsageError

_SUMMARIES = ("min", "max", "mean", "last", "best", "first", "none", "copy")


class NestedSummary(Mapping[str, Any]):
    """A run's summary with wandb's nested reading: ``s["loss"]["min"]`` finds ``loss/min``."""

    def __init__(self, flat: Mapping[str, Any], write: Any = None) -> None:
        self._flat = flat
        self._write = write

    def __getitem__(self, key: str) -> Any:
        """The nested summaries of ``key`` when it has some (``define_metric``), as wandb
        shows them in place of the last value; else the value itself."""
        prefix = key + "/"
        nested = {k[len(prefix) :]: v for k, v in self._flat.items() if k.startswith(prefix)}
        if nested:
            return nested
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter({k.split("/", 1)[0] if k not in self._flat else k: None for k in self._flat})

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        if self._write is None:
            raise UsageError("this summary is read-only (a stored run's summary)")
        self._write(_flatten(values))

    def __repr__(self) -> str:
        return f"Summary({dict(self._flat)!r})"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


class WandbRun:
    """What ``wandb.init`` returns: a localrun :class:`~localrun.Run` under wandb's names."""

    def __init__(self, inner: localrun.Run, entity: str | None) -> None:
        self._run = inner
        self.entity = entity
        self._metrics: dict[str, tuple[str | None, tuple[str, ...]]] = {}
        self.summary = NestedSummary(inner.summary, inner.summary.update)
        self._finished = False

    @property
    def finished(self) -> bool:
        """Finished here, or underneath (``localrun.finish()``, or a newer ``localrun.init``)."""
        return self._finished or localrun.run is not self._run

    # identity, as wandb names it
    id = property(lambda self: self._run.id)
    project = property(lambda self: self._run.project)
    name = property(lambda self: self._run.name)
    resumed = property(lambda self: self._run.resumed)
    config = property(lambda self: self._run.config)
    step = property(lambda self: self._run.step)
    dir = property(lambda self: str(self._run.dir))
    path = property(lambda self: f"{self.entity or 'local'}/{self._run.path}")

    @property
    def localrun_run(self) -> localrun.Run:
        """The localrun run underneath, for what wandb has no name for (``rewind``)."""
        return self._run

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        self._run.log(data, step=step, commit=commit)
        if self._metrics:
            self._summarise(_flatten(data))

    def define_metric(
        self,
        name: str,
        step_metric: str | None = None,
        summary: str | None = None,
        goal: str | None = None,
        hidden: bool | None = None,
        step_sync: bool | None = None,
        overwrite: bool | None = None,
    ) -> None:
        """Record how ``name`` (a glob like ``"val/*"``) is summarised and charted.

        ``summary``: any of min, max, mean, last, best (with ``goal`` "minimize"/"maximize"),
        first, none, comma separated. ``step_metric`` is stored (config ``_wandb``) for charts.
        """
        kinds = tuple(s.strip() for s in (summary or "").split(",") if s.strip())
        bad = [k for k in kinds if k not in _SUMMARIES]
        if bad:
            raise UsageError(f"define_metric(summary=...): unknown {bad[0]!r}; use {_SUMMARIES}")
        if "best" in kinds:
            if goal not in ("minimize", "maximize"):
                raise UsageError("define_metric(summary='best') needs goal='minimize'|'maximize'")
            best = "best_min" if goal == "minimize" else "best_max"
            kinds = (*(k for k in kinds if k != "best"), best)
        self._metrics[name] = (step_metric, kinds)
        wb = dict(self._run.config.get("_wandb") or {})
        defined = dict(wb.get("define_metric") or {})
        defined[name] = {"step_metric": step_metric, "summary": list(kinds)}
        wb["define_metric"] = defined
        self._run.config.update({"_wandb": wb}, allow_val_change=True)

    def _summarise(self, flat: Mapping[str, Any]) -> None:
        change: dict[str, Any] = {}
        current = self._run.summary
        for key, value in flat.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            kinds = self._kinds_for(key)
            if not kinds or math.isnan(value):
                continue
            for kind in kinds:
                change.update(_summary_change(key, kind, float(value), current))
        if change:
            self._run.summary.update(change)

    def _kinds_for(self, key: str) -> tuple[str, ...]:
        if key in self._metrics:
            return self._metrics[key][1]
        for pattern, (_, kinds) in self._metrics.items():
            if fnmatch.fnmatchcase(key, pattern):
                return kinds
        return ()

    def save(
        self,
        glob_str: str | os.PathLike[str],
        base_path: str | os.PathLike[str] | None = None,
        policy: str = "live",
    ) -> list[str]:
        return self._run.save(glob_str, base_path=base_path, policy=policy)

    def restore(self, name: str, replace: bool = False) -> localrun.RestoredFile | None:
        return localrun.restore(name, replace=replace, missing_ok=True)

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        if not self._finished:
            self._finished = True
            self._run.finish(exit_code=exit_code or 0)

    def __enter__(self) -> WandbRun:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.finish(exit_code=1 if exc_type is not None else 0)

    def __repr__(self) -> str:
        return f"<localrun.wandb.Run {self._run.path}>"


def _summary_change(
    key: str, kind: str, value: float, current: Mapping[str, Any]
) -> dict[str, Any]:
    """The summary keys one logged value changes for one summary kind."""
    if kind in ("min", "best_min"):
        name = f"{key}/min" if kind == "min" else f"{key}/best"
        old = current.get(name)
        return {name: value} if old is None or value < old else {}
    if kind in ("max", "best_max"):
        name = f"{key}/max" if kind == "max" else f"{key}/best"
        old = current.get(name)
        return {name: value} if old is None or value > old else {}
    if kind == "mean":
        n = int(current.get(f"{key}/count") or 0)
        mean = float(current.get(f"{key}/mean") or 0.0)
        return {f"{key}/mean": mean + (value - mean) / (n + 1), f"{key}/count": n + 1}
    if kind == "first":
        return {} if f"{key}/first" in current else {f"{key}/first": value}
    if kind == "last":
        return {f"{key}/last": value}
    return {}  # "none", "copy": wandb's default summary is the last value, which localrun keeps


class DisabledRun:
    """``mode="disabled"``: every call is accepted and nothing is recorded (wandb's contract)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = _AttrDict(config)
        self.summary: dict[str, Any] = {}
        self.id = self.name = "disabled"
        self.project = "disabled"
        self.resumed = False
        self.step = 0
        self.dir = str(Path.cwd())
        self.finished = False

    def log(
        self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None
    ) -> None:
        self.step = (step if step is not None else self.step) + (commit is not False)

    def define_metric(self, name: str, step_metric: str | None = None, **kw: Any) -> None:
        return None

    def save(self, *args: Any, **kwargs: Any) -> list[str]:
        return []

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        self.finished = True


class _AttrDict(dict[str, Any]):
    """The disabled run's config: attribute and item access, like wandb's."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def update(self, *args: Any, allow_val_change: bool = False, **kw: Any) -> None:
        super().update(*args, **kw)
