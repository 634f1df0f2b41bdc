"""``wandb.Api()``: the runs of a root, with wandb's names and its MongoDB-style ``filters``.

Reads through :class:`localrun.Api` (never the files directly). The filter language is the
subset wandb users write: a key (``state``, ``tags``, ``group``, ``job_type``, ``display_name``,
``config.<key>``, ``summary_metrics.<key>``), compared with a value or one of ``$eq $ne $gt $gte
$lt $lte $in $nin $regex $exists``, combined with ``$and``/``$or``/``$nor``. Anything else is a
clear error rather than a filter that silently matches everything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import localrun
from localrun.errors import UsageError

from ._run import NestedSummary

_MISSING = object()


class ApiRun:
    """A stored run under wandb's names (``wandb.apis.public.Run``)."""

    def __init__(self, stored: localrun.StoredRun) -> None:
        self._stored = stored

    id = property(lambda self: self._stored.id)
    name = property(lambda self: self._stored.name)
    display_name = property(lambda self: self._stored.name)
    project = property(lambda self: self._stored.project)
    state = property(lambda self: self._stored.state)
    tags = property(lambda self: self._stored.tags)
    group = property(lambda self: self._stored.group)
    job_type = property(lambda self: self._stored.job_type)
    notes = property(lambda self: self._stored.notes)
    config = property(lambda self: self._stored.config)
    created_at = property(lambda self: self._stored.created)
    path = property(lambda self: self._stored.path.split("/"))
    lastHistoryStep = property(lambda self: self._stored.last_step)  # wandb's name

    @property
    def summary(self) -> NestedSummary:
        return NestedSummary(self._stored.summary)

    def history(self, keys: list[str] | None = None, pandas: bool = True, **kw: Any) -> Any:
        """Every visible row (wandb samples 500; localrun returns them all)."""
        return self._stored.history(keys, format="pandas" if pandas else "arrow")

    def scan_history(self, keys: list[str] | None = None, **kw: Any) -> Iterator[dict[str, Any]]:
        yield from self._stored.history(keys).to_pylist()

    def file(self, name: str) -> localrun.RestoredFile:
        return localrun.restore(name, run_path=self._stored.path, root=self._stored.dir.parents[1])

    def __repr__(self) -> str:
        return f"<Run {self._stored.path} ({self.state})>"


class Api:
    """``wandb.Api()`` over a localrun root (``LOCALRUN_DIR``, or ``./localruns``)."""

    def __init__(
        self, overrides: Mapping[str, Any] | None = None, root: str | os.PathLike[str] | None = None
    ) -> None:
        self._api = localrun.Api(root)

    def runs(
        self,
        path: str | None = None,
        filters: Mapping[str, Any] | None = None,
        order: str | None = None,
        **kw: Any,
    ) -> list[ApiRun]:
        """The runs of ``path`` ("project" or wandb's "entity/project"), newest first, filtered."""
        project = path.split("/")[-1] if path else None
        match = _compile(filters or {})
        runs = [ApiRun(r) for r in self._api.runs(project)]
        return [r for r in reversed(runs) if match(r)]

    def run(self, path: str) -> ApiRun:
        """One run: "project/run_id" or wandb's "entity/project/run_id"."""
        parts = path.split("/")
        return ApiRun(self._api.run("/".join(parts[-2:])))


def _field(run: ApiRun, key: str) -> Any:
    if key.startswith("config."):
        return run.config.get(key[len("config.") :], _MISSING)
    for prefix in ("summary_metrics.", "summary."):
        if key.startswith(prefix):
            try:
                return run.summary[key[len(prefix) :]]
            except KeyError:
                return _MISSING
    if key in ("state", "tags", "group", "job_type", "display_name", "name", "id", "notes"):
        return getattr(run, key)
    if key in ("createdAt", "created_at"):
        return run.created_at
    raise UsageError(
        f"wandb.Api().runs(filters=...): unknown field {key!r}; use state, tags, group, "
        "job_type, display_name, config.<key> or summary_metrics.<key>"
    )


def _order(test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """An ordering test that is False where the run lacks the field or the types differ."""

    def run(have: Any, want: Any) -> bool:
        if have is _MISSING or have is None:
            return False
        try:
            return test(have, want)
        except TypeError:
            return False

    return run


def _has(have: Any, want: Any) -> bool:
    return have == want or (isinstance(have, list) and want in have)


def _among(have: Any, want: Any) -> bool:
    return any(h in want for h in have) if isinstance(have, list) else have in want


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": _has,
    "$ne": lambda have, want: not _has(have, want),
    "$gt": _order(lambda have, want: have > want),
    "$gte": _order(lambda have, want: have >= want),
    "$lt": _order(lambda have, want: have < want),
    "$lte": _order(lambda have, want: have <= want),
    "$in": _among,
    "$nin": lambda have, want: not _among(have, want),
    "$regex": lambda have, want: isinstance(have, str) and re.search(want, have) is not None,
    "$exists": lambda have, want: (have is not _MISSING) == bool(want),
}


def _compile(filters: Mapping[str, Any]) -> Callable[[ApiRun], bool]:
    tests: list[Callable[[ApiRun], bool]] = []
    for key, cond in filters.items():
        if key in _BOOL:
            tests.append(_combine(key, [_compile(c) for c in cond]))
            continue
        if key.startswith("$"):
            raise UsageError(f"wandb.Api().runs(filters=...): unsupported operator {key!r}")
        ops = (
            cond
            if isinstance(cond, Mapping) and all(str(k).startswith("$") for k in cond)
            else {"$eq": cond}
        )
        for op, want in ops.items():
            if op not in _OPS:
                raise UsageError(
                    f"wandb.Api().runs(filters=...): unsupported operator {op!r}; supported: "
                    f"{', '.join(_OPS)}"
                )
            tests.append(_compare(key, _OPS[op], want))
    return _combine("$and", tests)


_BOOL = ("$and", "$or", "$nor")


def _combine(how: str, subs: list[Callable[[ApiRun], bool]]) -> Callable[[ApiRun], bool]:
    def test(r: ApiRun) -> bool:
        if how == "$and":
            return all(s(r) for s in subs)
        hit = any(s(r) for s in subs)
        return hit if how == "$or" else not hit

    return test


def _compare(key: str, op: Callable[[Any, Any], bool], want: Any) -> Callable[[ApiRun], bool]:
    return lambda r: op(_field(r, key), want)
