"""Listing 10,000 runs, and the DuckDB recipe of docs/format.md, against same-run baselines.

Run: .venv/bin/python benchmarks/bench_list.py [--runs 10000] [--duckdb-runs 1000] [--repeat 3]
     [--keep DIR]

One template run is written by the real writer (two attempts, a rewind, four segments, a log/ of
a few revisions), then copied ``--runs`` times into 10 projects: its revisions and manifest.json
are rewritten with each copy's project, id and uid, its segments are hard-linked (they are
immutable; only their Parquet metadata still names the template). Every cell is a fresh
process (interpreter start and imports included, as a user pays them), timed from outside;
the table shows the median of ``--repeat``. The baselines are the plain loops the targets are
stated against: reading every run's manifest.json with json.loads and printing a line, and
DuckDB's plain glob over the same Parquet files (also in the documented query's order, which
costs the glob itself a good part of the difference). The SQL reads its own, smaller root:
four segments a run make 40,000 files for 10,000 runs, minutes of DuckDB on a 2-core machine.
Values are wall-clock medians; the notes add CPU seconds (user + system, children), which a
busy machine distorts least.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _table import print_table

import localrun
from localrun._store.listing import INDEX
from localrun._store.revisions import encode

PROJECTS = 10

# The baseline of item 4: every run's manifest.json, json.loads, one printed line.
BASELINE_LS = r"""
import json, os, sys, time
root = sys.argv[1]
out = []
for p in sorted(os.listdir(root)):
    pd = os.path.join(root, p)
    if not os.path.isdir(pd) or p.startswith("."):
        continue
    for r in sorted(os.listdir(pd)):
        if r.startswith("."):
            continue
        with open(os.path.join(pd, r, "manifest.json"), "rb") as f:
            m = json.loads(f.read())
        host = m["attempts"][-1]["host"] if m["attempts"] else "-"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["updated"]))
        out.append(f"{p}/{m['id']} {m['state']} {m['last_step'] + 1} {len(m['attempts'])} {when} {host}")
sys.stdout.write("\n".join(out) + "\n")
"""

# Api().runs(): the same line per run, from the public API.
API_RUNS = r"""
import sys, time, localrun
out = []
for r in localrun.Api(sys.argv[1]).runs():
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated))
    out.append(f"{r.path} {r.state} {r.last_step + 1} {len(r.attempts)} {when} {r.host or '-'}")
sys.stdout.write("\n".join(out) + "\n")
"""

# DuckDB: a plain glob over every segment (no manifests, no rewinds), unordered and in the
# documented query's order, and the documented query itself. Every cell takes its result as an
# Arrow table, as a reader of a million rows does (pandas, polars, pyarrow): fetchall() would
# time the making of a Python tuple and two Python strings per row, not the query (it made the
# query look 1.5x the glob where DuckDB's own work was 1.3x; measured 2026-11-26).
FETCH = r"""
import sys, duckdb
def rows(sql):
    r = duckdb.sql(sql)
    return (r.to_arrow_table() if hasattr(r, "to_arrow_table") else r.arrow()).num_rows
"""
DUCKDB_GLOB = (
    FETCH
    + r"""
print(rows("SELECT h._step, h.loss FROM read_parquet('localruns/*/*/history/*.parquet', "
           "union_by_name = true) AS h"))
"""
)
DUCKDB_GLOB_FILE = (
    FETCH
    + r"""
print(rows("SELECT h._step, h.loss, h.filename FROM read_parquet("
           "'localruns/*/*/history/*.parquet', filename = true, union_by_name = true) AS h"))
"""
)
DUCKDB_GLOB_ORDERED = (
    FETCH
    + r"""
print(rows("SELECT split_part(h.filename, '/', 2) AS project, split_part(h.filename, '/', 3) "
           "AS id, h._step, h.loss FROM read_parquet('localruns/*/*/history/*.parquet', "
           "filename = true, union_by_name = true) AS h ORDER BY project, id, h._step"))
"""
)
DUCKDB_DOC = (
    FETCH
    + r"""
print(rows(open(sys.argv[1]).read()))
"""
)


def make_template(root: Path) -> Path:
    """A run written by the real writer: 2 attempts, a rewind, 4 segments, 1,000 steps."""
    cfg = {f"hp{i}": i * 0.1 for i in range(10)}

    def row(i: int) -> dict[str, float]:
        return {"loss": 1.0 / (i + 1), "acc": i / 1000, "lr": 0.1}

    with localrun.init(project="p00", id="tpl", dir=root, config=cfg, flush_interval=3600) as run:
        for i in range(300):
            run.log(row(i))
            if i == 149:
                run.flush()
        run.flush()
        run.rewind(200)
        for i in range(201, 250):
            run.log(row(i))
    with localrun.init(
        project="p00", id="tpl", dir=root, resume="must", flush_interval=3600
    ) as run:
        for i in range(run.step, 1000):
            run.log(row(i))
    return root / "p00" / "tpl"


def copy_runs(
    template: Path, root: Path, n: int, vary: Callable[[int, dict[str, Any]], None] | None = None
) -> None:
    """``n`` copies of ``template`` under ``root``, ids rewritten, segments hard-linked;
    ``vary(i, manifest)`` gives copy ``i`` fields of its own (bench_ui_api.py's)."""
    jsons = {
        rel: json.loads((template / rel).read_bytes())
        for rel in [f"log/{name}" for name in sorted(os.listdir(template / "log"))]
        + ["manifest.json"]
    }
    segments = sorted(os.listdir(template / "history"))
    for i in range(n):
        project, run_id = f"p{i % PROJECTS:02d}", f"run{i:05d}"
        rdir = root / project / run_id
        (rdir / "log").mkdir(parents=True)
        (rdir / "history").mkdir()
        for seg in segments:
            os.link(template / "history" / seg, rdir / "history" / seg)
        for rel, m in jsons.items():
            m = {**m, "project": project, "id": run_id, "name": run_id, "uid": f"{i:032x}"}
            m["created"] += i  # distinct creation times: the listing's order is by them
            if vary is not None:
                vary(i, m)
            (rdir / rel).write_bytes(encode(m))  # as the writer writes them: compact
        (rdir / "manifest.lock").touch()


def cell(
    args: list[str], cwd: Path, repeat: int, before: Callable[[], object] | None = None
) -> tuple[float, float, int]:
    """Median wall and CPU seconds (user + system) of ``repeat`` fresh processes, and the lines
    the last one printed. CPU time is what a busy machine distorts least."""
    walls, cpus, lines = [], [], 0
    for _ in range(repeat):
        if before is not None:
            before()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        if done.returncode:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
        lines = done.stdout.count("\n")
    return statistics.median(walls), statistics.median(cpus), lines


def versus(wall: float, cpu: float, base: tuple[float, float], what: str) -> str:
    return f"{wall / base[0]:.2f}x {what} (cpu {cpu:.2f} s, {cpu / base[1]:.2f}x)"


def drop_indexes(root: Path) -> None:
    for index in root.glob(f"*/{INDEX}"):
        index.unlink()


def build(work: Path, template: Path, runs: int) -> Path:
    root = work / "localruns"
    root.mkdir(parents=True)
    shutil.copy(template.parents[1] / "localrun.json", root)  # the root's format marker
    copy_runs(template, root, runs)
    return root


def documented_query() -> str:
    """The sql block of docs/format.md, as a reader copies it."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    return text.split("```sql\n", 1)[1].split("```", 1)[0]


def with_order(query: str) -> str:
    """The documented query with its commented ``ORDER BY`` line in force."""
    line = next(x for x in query.splitlines() if x.startswith("-- ORDER BY"))
    return query.replace(line, line[3:].split("--")[0].rstrip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000, help="runs to list")
    ap.add_argument("--duckdb-runs", type=int, default=1_000, help="runs the SQL reads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="build the runs here and keep them")
    opts = ap.parse_args()
    work = opts.keep or Path(tempfile.mkdtemp(prefix="bench-list-"))
    lists, duck = work / "list", work / "duckdb"
    try:
        if not (lists / "localruns").exists():
            t0 = time.perf_counter()
            template = make_template(work / "template")
            build(lists, template, opts.runs)
            build(duck, template, opts.duckdb_runs)
            print(
                f"built {opts.runs:,} + {opts.duckdb_runs:,} runs in "
                f"{time.perf_counter() - t0:.1f} s under {work}"
            )
        root = lists / "localruns"
        rows = list_rows(root, lists, opts.repeat) + duckdb_rows(duck, opts.repeat)
        print_table(
            f"localrun listing benchmark ({opts.runs:,} runs; SQL over {opts.duckdb_runs:,})", rows
        )
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def list_rows(root: Path, cwd: Path, repeat: int) -> list[tuple[str, str, str]]:
    py, exe = sys.executable, str(Path(sys.executable).with_name("localrun"))
    wall, cpu, n = cell([py, "-c", BASELINE_LS, str(root)], cwd, repeat)
    base = (wall, cpu)
    rows = [
        (
            f"baseline: read {n:,} manifest.json, json.loads, print a line",
            f"{wall:.2f} s",
            f"median of {repeat}, fresh process each (cpu {cpu:.2f} s)",
        )
    ]
    ls = [exe, "--root", str(root), "ls"]
    wall, cpu, _ = cell(ls, cwd, repeat, before=lambda: drop_indexes(root))
    rows.append(
        (
            "localrun ls, first listing (no index yet)",
            f"{wall:.2f} s",
            versus(wall, cpu, base, "baseline"),
        )
    )
    for label, args in (
        ("localrun ls", ls),
        ("localrun ls --json", [*ls, "--json"]),
        ("Api().runs(), one line each", [py, "-c", API_RUNS, str(root)]),
    ):
        wall, cpu, _ = cell(args, cwd, repeat)
        rows.append((label, f"{wall:.2f} s", versus(wall, cpu, base, "baseline")))
    return rows


def duckdb_rows(work: Path, repeat: int) -> list[tuple[str, str, str]]:
    py = sys.executable
    (work / "query.sql").write_text(documented_query())
    (work / "ordered.sql").write_text(with_order(documented_query()))
    wall, cpu, _ = cell([py, "-c", DUCKDB_GLOB], work, repeat)
    glob = (wall, cpu)
    rows = [
        ("baseline: DuckDB plain glob of history/*.parquet", f"{wall:.2f} s", f"cpu {cpu:.2f} s")
    ]
    wall, cpu, _ = cell([py, "-c", DUCKDB_GLOB_FILE], work, repeat)
    rows.append(
        (
            "baseline: the same glob with each row's file (filename = true)",
            f"{wall:.2f} s",
            versus(wall, cpu, glob, "glob") + "; what tells a row's run and segment",
        )
    )
    wall, cpu, _ = cell([py, "-c", DUCKDB_GLOB_ORDERED], work, repeat)
    ordered = (wall, cpu)
    rows.append(
        (
            "baseline: the same glob, in the query's order",
            f"{wall:.2f} s",
            versus(wall, cpu, glob, "glob"),
        )
    )
    wall, cpu, _ = cell([py, "-c", DUCKDB_DOC, str(work / "query.sql")], work, repeat)
    rows.append(
        ("DuckDB query of docs/format.md", f"{wall:.2f} s", versus(wall, cpu, glob, "glob"))
    )
    wall, cpu, _ = cell([py, "-c", DUCKDB_DOC, str(work / "ordered.sql")], work, repeat)
    rows.append(
        (
            "the same with its ORDER BY line",
            f"{wall:.2f} s",
            versus(wall, cpu, glob, "glob") + "; " + versus(wall, cpu, ordered, "ordered glob"),
        )
    )
    return rows


if __name__ == "__main__":
    main()
