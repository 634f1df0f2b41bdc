"""``run.config`` and ``run.summary``: the run's hyperparameters and its last values.

Changing a stored value needs ``allow_val_change=True`` (wandb's rule): on resume the script
usually passes the same config again, and a silent change (say a new learning rate) would make
the run's recorded config lie about the steps logged before it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .values import check_key, normalize

if TYPE_CHECKING:
    from .run import Run


def _plain(key: str, value: Any) -> Any:
    """A JSON-safe copy of ``value`` (numpy scalars become Python numbers), or UsageError."""
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "shape", None) == ():
        value = item()
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_default))
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"config key {key!r}: {exc}; config values must be JSON data (numbers, strings, "
            "bools, None, lists and dicts of them)"
        ) from None


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def merge(
    stored: dict[str, Any], given: Mapping[str, Any], allow_val_change: bool
) -> dict[str, Any]:
    """``stored`` updated with ``given``; a changed value is an error unless allowed."""
    out = dict(stored)
    for key, value in given.items():
        if not isinstance(key, str):
            raise UsageError(f"config keys must be strings; got {key!r}")
        new = _plain(key, value)
        if key in out and out[key] != new and not allow_val_change:
            raise UsageError(
                f"config key {key!r} is stored as {out[key]!r}; refusing to change it to {new!r}. "
                "Pass allow_val_change=True (to init or config.update) to change it"
            )
        out[key] = new
    return out


class Config(MutableMapping[str, Any]):
    """A dict of hyperparameters; every change reaches the manifest at the next flush."""

    def __init__(self, data: dict[str, Any], on_change: Callable[[], None]) -> None:
        self._data = data
        self._on_change = on_change

    def update(self, other: Any = (), /, allow_val_change: bool = False, **kw: Any) -> None:
        given = dict(other, **kw)
        self._data = merge(self._data, given, allow_val_change)
        self._on_change()

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["_data"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        """``config.lr = 0.1``, as wandb scripts write it (the same as ``config["lr"] = 0.1``)."""
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._on_change()

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


class Summary(Mapping[str, Any]):
    """``run.summary``: the last logged value of each key, unless set here explicitly.

    A key set explicitly (``run.summary["best_loss"] = x``) keeps that value: later logs of the
    same key do not overwrite it. That is what a "best so far" summary needs.
    """

    def __init__(self, run: Run) -> None:
        self._run = run

    def _view(self) -> dict[str, Any]:
        view: dict[str, Any] = self._run._summary_now()
        return view

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Any:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        clean = {}
        for key, value in values.items():
            check_key(key)
            clean[key] = normalize(key, value)[0]
        with self._run._lock:
            self._run._explicit.update(clean)
            self._run._dirty = True

    def __repr__(self) -> str:
        return f"Summary({self._view()!r})"
