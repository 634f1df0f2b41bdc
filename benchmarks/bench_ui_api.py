"""The dashboard's runs list over 10,000 runs (`GET /api/v1/runs`), against reading the manifests.

Run: .venv/bin/python benchmarks/bench_ui_api.py [--runs 10000] [--repeat 5] [--keep DIR]

The runs are bench_list.py's: one template run written by the real writer (two attempts, a
rewind, four segments), copied ``--runs`` times into 10 projects with their own ids, and here
each with its own config value and summary (so a ``where`` and a sort have something to do).
The app is the real one (``create_app(root, token=None, pushes=False)``) called through httpx's
ASGI transport in this process, as a running ``localrun ui`` answers the runs page's polls: the
first request fills the revision-keyed cache, later ones re-read only runs whose revision
changed. The baseline, in the same process: read and parse every run's manifest.json (what any
list of the runs must at least do without an index). Values are medians of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _table import print_table
from bench_list import copy_runs, make_template

from localrun._server.app import create_app
from localrun._store.revisions import encode


def vary(i: int, m: dict[str, Any]) -> None:
    """Copy ``i``'s own config value, summary and tag (a ``where`` and a sort have work)."""
    m["config"] = {**m["config"], "seed": i, "opt": {"name": ("adam", "sgd")[i % 2]}}
    m["summary"] = {**m["summary"], "loss": (i * 7919 % 10007) / 10007}
    m["tags"] = ["even" if i % 2 == 0 else "odd"]


def commit_again(rdir: Path) -> None:
    """A new revision of a run (as a live writer's commit would make): summary changed."""
    m = json.loads((rdir / "manifest.json").read_bytes())
    m["rev"] += 1
    m["summary"] = {**m["summary"], "loss": -1.0}
    m["updated"] = time.time()
    text = encode(m)  # as the writer writes it: compact
    (rdir / "log" / f"{m['rev']:012d}.json").write_bytes(text)
    (rdir / "manifest.json").write_bytes(text)


def read_manifests(root: Path) -> int:
    """The baseline: every run's manifest.json, parsed."""
    n = 0
    for p in sorted(os.listdir(root)):
        pd = root / p
        if not pd.is_dir() or p.startswith("."):
            continue
        for r in sorted(os.listdir(pd)):
            if r.startswith("."):
                continue
            with open(pd / r / "manifest.json", "rb") as f:
                json.loads(f.read())
            n += 1
    return n


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Median wall and CPU seconds of ``repeat`` calls (CPU: this process, every thread; what
    a machine shared with other work distorts least), and the last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build the runs here and keep them")
    opts = ap.parse_args()
    work = opts.keep or Path(tempfile.mkdtemp(prefix="bench-ui-api-"))
    root = work / "localruns"
    try:
        if not root.exists():
            t0 = time.perf_counter()
            template = make_template(work / "template")
            root.mkdir(parents=True)
            shutil.copy(template.parents[1] / "localrun.json", root)
            copy_runs(template, root, opts.runs, vary)
            print(f"built {opts.runs:,} runs in {time.perf_counter() - t0:.1f} s under {work}")
        asyncio.run(measure(root, opts.runs, opts.repeat))
    finally:
        if opts.keep is None:
            shutil.rmtree(work, ignore_errors=True)


async def measure(root: Path, runs: int, repeat: int) -> None:
    base = timed(lambda: read_manifests(root), repeat)
    assert base[2] == runs
    t0, c0 = time.perf_counter(), time.process_time()
    app = create_app(root, token=None, pushes=False)  # starts filling the cache
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def get(params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
            r = await client.get("/api/v1/runs", params=params, headers=headers or {})
            assert r.status_code in (200, 304), r.text
            return r

        async def atimed(coro_fn: Callable[[], Any], n: int) -> tuple[float, float, Any]:
            walls, cpus, out = [], [], None
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.process_time()
                out = await coro_fn()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            return statistics.median(walls), statistics.median(cpus), out

        answer = await get({})
        first = (time.perf_counter() - t0, time.process_time() - c0, answer)
        assert first[2].json()["total"] == runs
        rows: list[tuple[str, float, float]] = [
            ("read every manifest.json (baseline)", base[0], base[1]),
            ("app made, then its first GET /api/v1/runs (fills the cache)", first[0], first[1]),
        ]
        cases = {
            "GET /api/v1/runs (page 1 of 100, newest first)": {},
            "  ?q=run0999&project=p09": {"q": "run0999", "project": "p09"},
            "  ?where=config.seed>=5000&sort=summary.loss": {
                "where": "config.seed>=5000",
                "sort": "summary.loss",
            },
            "  ?tag=odd&where=config.opt.name=sgd&offset=4000": {
                "tag": "odd",
                "where": "config.opt.name=sgd",
                "offset": "4000",
            },
        }
        for label, params in cases.items():
            wall, cpu, _ = await atimed(lambda p=params: get(p), repeat)  # type: ignore[misc]
            rows.append((label, wall, cpu))
        tag = first[2].headers["etag"]
        wall, cpu, r = await atimed(lambda: get({}, {"If-None-Match": tag}), repeat)
        assert r.status_code == 304
        rows.append(("  same again with If-None-Match (304)", wall, cpu))
        for rdir in sorted(root.glob("p0*/run0*"))[:10]:
            commit_again(rdir)
        wall, cpu, after = await atimed(lambda: get({"sort": "summary.loss", "order": "asc"}), 1)
        rows.append(("  after 10 runs committed a new revision", wall, cpu))
        assert after.json()["runs"][0]["summary"]["loss"] == -1.0
    print_table(
        f"GET /api/v1/runs over {runs:,} runs (median of {repeat}; in-process app, httpx)",
        [
            (label, f"{wall:.3f} s", f"{wall / base[0]:.2f}x baseline; cpu {cpu:.3f} s")
            for label, wall, cpu in rows
        ],
    )


if __name__ == "__main__":
    main()
