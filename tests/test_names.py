"""The id rule (wandb's: at most 64 characters, non-word characters become '-') and file names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import localrun
from localrun._store.layout import check_file_name, sanitize_id

WORD = re.compile(r"^[A-Za-z0-9_-]+$")


@given(st.text(min_size=1, max_size=64))
def test_sanitized_ids_are_word_characters_of_the_same_length(raw: str) -> None:
    try:
        clean = sanitize_id(raw)
    except localrun.InvalidIdError:
        assert set(re.sub(r"[^A-Za-z0-9_-]", "-", raw)) <= {"-"}
        return
    assert WORD.match(clean)
    assert len(clean) == len(raw)
    assert sanitize_id(clean) == clean  # idempotent: a stored id names the same run again
    for a, b in zip(raw, clean, strict=True):
        assert b == (a if re.match(r"[A-Za-z0-9_-]", a) else "-")


@given(st.text(min_size=65, max_size=200))
def test_ids_longer_than_64_are_refused(raw: str) -> None:
    with pytest.raises(localrun.InvalidIdError, match="limit is 64"):
        sanitize_id(raw)


@pytest.mark.parametrize("bad", ["", "---", "..", "../..", "/", "é"])
def test_empty_or_dash_only_ids_are_refused(bad: str) -> None:
    with pytest.raises(localrun.InvalidIdError):
        sanitize_id(bad)


def test_escaping_ids_cannot_become_paths(root) -> None:
    # "../x" is legal under the rule, but becomes "---x": a sibling name, never a parent.
    run = localrun.init(project="p", id="../x", dir=root)
    assert run.id == "---x"
    assert run.dir.parent == root / "p"
    with pytest.raises(localrun.InvalidIdError, match="project name"):
        localrun.init(project="..", dir=root)


def test_non_string_id_is_refused(root) -> None:
    with pytest.raises(localrun.InvalidIdError, match="must be a string"):
        localrun.init(project="p", id=12, dir=root)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../up", "a/../../b", "x.tmp-host-1-ab", "./"])
def test_file_names_that_escape_are_refused(bad: str) -> None:
    with pytest.raises(localrun.InvalidIdError):
        check_file_name(bad)


@given(st.lists(st.text(alphabet="abcXYZ019_-. ", min_size=1, max_size=8), min_size=1, max_size=4))
def test_file_names_stay_inside(parts: list[str]) -> None:
    name = "/".join(parts)
    try:
        clean = check_file_name(name)
    except localrun.InvalidIdError:
        return
    assert not clean.startswith("/")
    assert ".." not in clean.split("/")


def test_generate_id_makes_valid_unique_ids() -> None:
    ids = {localrun.util.generate_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(sanitize_id(i) == i and len(i) == 8 for i in ids)
