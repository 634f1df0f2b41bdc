"""Nested dicts flatten to 'a/b' keys; two spellings of one key are an error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import localrun
from localrun._run.values import flatten

keys = st.text(alphabet="abcdef", min_size=1, max_size=3)
leaves = st.one_of(st.floats(allow_nan=False), st.integers(-1000, 1000), st.text(max_size=3))
nested = st.recursive(
    leaves, lambda inner: st.dictionaries(keys, inner, min_size=1, max_size=3), max_leaves=12
)


def _leaves(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}/"))
    return out


@given(st.dictionaries(keys, nested, min_size=1, max_size=4))
def test_flatten_keeps_every_leaf_under_its_path(data: dict[str, Any]) -> None:
    assert flatten(data) == _leaves(data)


def test_collision_after_flattening_is_an_error() -> None:
    with pytest.raises(localrun.LogValueError, match="'a/b' is given twice"):
        flatten({"a/b": 1, "a": {"b": 2}})


@pytest.mark.parametrize("bad", [{1: 2.0}, {("a",): 1}, {"a": {2: 1}}])
def test_non_string_keys_are_refused(bad: dict[Any, Any]) -> None:
    with pytest.raises(localrun.LogValueError, match="keys must be strings"):
        flatten(bad)


@pytest.mark.parametrize("key", ["_step", "_timestamp", "_runtime", "_mine"])
def test_reserved_keys_are_refused(key: str) -> None:
    with pytest.raises(localrun.LogValueError, match="reserved"):
        flatten({key: 1})


def test_an_empty_key_is_refused_as_empty() -> None:
    with pytest.raises(localrun.LogValueError, match="must not be empty"):
        flatten({"": 1})
