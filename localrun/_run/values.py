"""What ``log()`` accepts, and how each value is stored (docs/logging.md).

Every key has one *kind* for the life of a run: ``number`` (float64: Python and numpy numbers,
bools, 0-d arrays, torch scalar tensors), ``string``, ``list<number>`` or ``list<string>``
(lists, tuples, 1-d arrays). None is a missing value of any kind. A key whose kind changes is an
error at ``log()`` time, not a segment that fails to read later: the caller still has the value
and can log it under another name.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .._store.schema import LIST_MEDIA, LIST_NUMBER, LIST_STRING, MEDIA, NUMBER, STRING
from ..errors import LogValueError, UsageError
from ..media import Media

RESERVED_PREFIX = "_"
SEP = "/"
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _torch_scalar(v: Any) -> Any:
    """A torch tensor as a Python value, only when torch is already imported (never import it)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(v, torch.Tensor):
        return _MISSING
    if v.dim() == 0:
        return v.item()
    if v.dim() == 1:
        return v.detach().cpu().tolist()
    return _MISSING


_MISSING = object()


def normalize(key: str, v: Any) -> tuple[Any, str | None]:
    """``(value, kind)`` for a logged value; kind is None for None. Raises LogValueError."""
    t = type(v)
    if t is float:
        return v, NUMBER
    if t is int or t is bool:
        return _to_float(key, v), NUMBER
    if t is str:
        return check_text(key, v), STRING
    if v is None:
        return None, None
    if isinstance(v, (bool, int, float)):
        return _to_float(key, v), NUMBER
    if isinstance(v, str):
        return check_text(key, str(v)), STRING
    item = getattr(v, "item", None)
    shape = getattr(v, "shape", None)
    if shape is not None and hasattr(v, "dtype") and not hasattr(v, "dim"):  # numpy-like
        if shape == ():
            return normalize(key, item() if item else v)
        if len(shape) == 1:
            return _sequence(key, v.tolist())
        raise LogValueError(
            f"key {key!r}: a {len(shape)}-d array cannot be logged; log a scalar, a 1-d array, "
            "or save it as a file with run.save()"
        )
    torch_value = _torch_scalar(v)
    if torch_value is not _MISSING:
        return normalize(key, torch_value)
    if isinstance(v, Media):
        return v, MEDIA  # the run stores its bytes and puts its reference in the row
    if isinstance(v, (list, tuple)):
        return _sequence(key, list(v))
    raise LogValueError(
        f"key {key!r}: values of type {t.__name__} are not supported; log numbers, strings, "
        "None, or lists/1-d arrays of them"
    )


def _to_float(key: str, v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        raise LogValueError(
            f"key {key!r}: {v!r} is too large for a float64 column; log it as a string"
        ) from None


def check_text(key: str, text: str) -> str:
    """A string Parquet can store: UTF-8 encodable, so no lone surrogate (``"\\ud800"``).

    Such strings come from ``os.fsdecode`` of undecodable file names or from a JSON ``\\ud800``
    escape; Arrow cannot encode them, and a flush holding one would fail. ASCII (the usual
    case) is checked without encoding.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LogValueError(
            f"key {key!r}: the string {text[:40]!r} has a lone surrogate "
            f"({text[exc.start]!r} at position {exc.start}), which cannot be stored as UTF-8. "
            "Decode the bytes it came from with errors='replace', or log "
            "text.encode('utf-8', 'backslashreplace').decode() instead"
        ) from None
    return text


def check_step(step: object) -> int:
    """An explicit ``step=`` a segment's int64 ``_step`` column can hold.

    Called by ``Run.log`` before the step moves: a step beyond int64 would make every later
    flush of the run fail, so it is refused while the caller still has the row.
    """
    if type(step) is not int:
        if isinstance(step, bool) or not isinstance(step, int):
            raise UsageError(f"step must be an int, got {type(step).__name__} {step!r}")
        step = int(step)  # an int subclass such as an IntEnum member
    if not INT64_MIN <= step <= INT64_MAX:
        raise LogValueError(
            f"step={step} does not fit in int64 (the _step column holds {INT64_MIN} to "
            f"{INT64_MAX}); log a smaller step, or the large number as a value"
        )
    return step


def _sequence(key: str, items: list[Any]) -> tuple[list[Any], str]:
    if all(isinstance(x, str) for x in items) and items:
        return [check_text(key, str(x)) for x in items], LIST_STRING
    if any(isinstance(x, Media) for x in items):
        if not all(isinstance(x, Media) for x in items):
            raise LogValueError(
                f"key {key!r}: a list of media must hold only media values (Image, Histogram, "
                "Table)"
            )
        return items, LIST_MEDIA
    out: list[Any] = []
    for x in items:
        if x is None:
            out.append(None)
            continue
        value, kind = normalize(key, x)
        if kind != NUMBER:
            raise LogValueError(
                f"key {key!r}: a list must hold only numbers or only strings; "
                f"found {type(x).__name__} {x!r}"
            )
        out.append(value)
    return out, LIST_NUMBER


def check_key(key: object, prefix: str = "") -> str:
    """A key must be a non-empty string that does not start with '_' (localrun's columns).

    Returns ``prefix + key``: the full name, which is what must be storable (and named in an
    error) when the key comes from a nested mapping.
    """
    if not isinstance(key, str):
        raise LogValueError(
            f"log keys must be strings; got {type(key).__name__} {key!r}. Use str(key)."
        )
    if not key:
        where = f"inside {prefix.rstrip('/')!r}" if prefix else "at the top level"
        raise LogValueError(
            f"log keys must not be empty; got '' {where}. Name the value, e.g. {prefix + 'loss'!r}"
        )
    if key.startswith(RESERVED_PREFIX):
        raise LogValueError(
            f"key {key!r} is reserved (keys starting with '_' are localrun's: _step, _timestamp, "
            "_runtime); rename it"
        )
    name = prefix + key
    return check_text(name, name)


def flatten(
    data: Mapping[Any, Any], prefix: str = "", out: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Nested mappings become ``a/b`` keys. Two spellings of one key are an error, not a merge."""
    if out is None:
        out = {}
    for k, v in data.items():
        name = check_key(k, prefix)
        if isinstance(v, Mapping):
            flatten(v, name + SEP, out)
            continue
        if name in out:
            raise LogValueError(
                f"key {name!r} is given twice in one log() call (once nested, once as "
                "'a/b'); give it once"
            )
        out[name] = v
    return out


def kind_conflict(key: str, old: str, new: str) -> LogValueError:
    return LogValueError(
        f"key {key!r} was logged as {old} and is now {new}; a key keeps one kind for the whole "
        f"run. Log the new values under another key (for example {key + '_' + new.split('<')[0]!r})"
    )
