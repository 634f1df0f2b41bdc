"""The docs' reading recipes run as written, against real runs (with a rewind)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

import localrun

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _block(doc: str, lang: str, contains: str) -> str:
    for block in re.findall(rf"```{lang}\n(.*?)```", (DOCS / doc).read_text(), re.S):
        if contains in block:
            return block
    raise AssertionError(f"no {lang} block with {contains!r} in {doc}")


def _make_runs(root: Path) -> None:
    for rid, offset in (("a", 0.0), ("b", 100.0)):
        with localrun.init(project="p", id=rid, dir=root) as run:
            for i in range(10):
                run.log({"loss": offset + i})
            run.flush()
            run.rewind(4)  # steps 5..9 of the first flush become hidden
            for i in range(5, 8):
                run.log({"loss": -i - offset, "extra": "x"})


def test_duckdb_query_in_format_md_applies_manifests(tmp_path: Path) -> None:
    _make_runs(tmp_path / "localruns")
    sql = _block("format.md", "sql", "read_parquet")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rows = duckdb.sql(sql).fetchall()
    finally:
        os.chdir(cwd)
    expected = []
    for rid, offset in (("a", 0.0), ("b", 100.0)):
        expected += [("p", rid, i, offset + i) for i in range(5)]
        expected += [("p", rid, i, -i - offset) for i in range(5, 8)]
    assert rows == expected
    # and localrun's own reader agrees
    table = localrun.Api(tmp_path / "localruns").run("p/b").history(["loss"])
    assert table.column("loss").to_pylist() == [r[3] for r in expected if r[1] == "b"]


def test_pyarrow_recipe_in_format_md(tmp_path: Path) -> None:
    root = tmp_path / "localruns"
    with localrun.init(project="mnist", id="exp-42", dir=root, flush_interval=3600) as run:
        run.log({"loss": 1.0})
        run.flush()
        run.log({"acc": 0.5})
    code = _block("format.md", "python", "concat_tables")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, object] = {"json": json, "pq": pq, "pa": pa}
        exec(code, scope)
    finally:
        os.chdir(cwd)
    table = scope["table"]
    assert isinstance(table, pa.Table)
    assert table.column("loss").to_pylist() == [1.0, None]
    assert table.column("acc").to_pylist() == [None, 0.5]


def test_readme_opens_with_the_two_commands() -> None:
    head = (DOCS.parent / "README.md").read_text().split("```python")[0]
    assert "make demo" in head and "make test" in head
