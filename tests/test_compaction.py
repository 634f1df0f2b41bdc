"""Tiered compaction keeps a long run's manifest short without losing or duplicating a row."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun
from localrun._store import compaction
from localrun._store import manifest as mf
from tests.conftest import child_env, run_py, spawn, track
from tests.test_docs import duckdb_recipe


def _listed_and_on_disk(root: Path, path: str) -> tuple[set[str], set[str]]:
    stored = localrun.Api(root).run(path)
    listed = {s["file"] for s in stored.manifest["segments"]}
    on_disk = {f"history/{p.name}" for p in (stored.dir / "history").glob("*.parquet")}
    return listed, on_disk


def test_many_flushes_become_few_segments(root: Path) -> None:
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        for i in range(70):
            run.log({"x": float(i), "s": str(i)} if i % 2 else {"x": float(i)})
            run.flush()
        run.finish()
    """,
        root,
        LOCALRUN_COMPACT_FANOUT="4",
    )
    assert result.returncode == 0, result.stderr
    stored = localrun.Api(root).run("p/r")
    # 70 flushes in base 4: one level-3 (64), one level-1 (4), two level-0 segments
    assert sorted(s.get("level", 0) for s in stored.manifest["segments"]) == [0, 0, 1, 3]
    table = stored.history(["x", "s"])
    assert table.column("_step").to_pylist() == list(range(70))
    assert table.column("s").to_pylist() == [None if i % 2 == 0 else str(i) for i in range(70)]
    listed, on_disk = _listed_and_on_disk(root, "p/r")
    assert listed == on_disk  # the merged-away files are gone, nothing else is
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    assert run.step == 70
    run.finish()


def test_readers_keep_reading_while_segments_are_compacted(root: Path) -> None:
    proc = spawn(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        print("ready", flush=True)
        for i in range(400):
            run.log({"x": float(i)})
            run.flush()
        run.finish()
    """,
        root,
        LOCALRUN_COMPACT_FANOUT="4",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    api, reads, seen = localrun.Api(root), 0, 0
    while True:
        done = proc.poll() is not None
        steps = api.run("p/r").history(["x"]).column("_step").to_pylist()
        assert steps == list(range(len(steps))) and len(steps) >= seen
        seen, reads = len(steps), reads + 1
        if done:
            break
    assert proc.returncode == 0 and seen == 400 and reads > 3


def test_compaction_across_a_rewind_keeps_the_rows_it_hides(root: Path) -> None:
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        for i in range(10):
            run.log({"x": float(i)}); run.flush()
        run.rewind(3)
        for i in range(4, 20):
            run.log({"x": -float(i)}); run.flush()
        run.finish()
    """,
        root,
        LOCALRUN_COMPACT_FANOUT="4",
    )
    assert result.returncode == 0, result.stderr
    stored = localrun.Api(root).run("p/r")
    assert stored.history(["x"]).column("x").to_pylist() == [0, 1, 2, 3] + [
        -float(i) for i in range(4, 20)
    ]
    assert stored.history(["x"], all_attempts=True).num_rows == 26  # 10 + 16, hidden rows kept
    listed, on_disk = _listed_and_on_disk(root, "p/r")
    assert listed == on_disk and len(listed) < 26


def test_sigkill_during_compaction_is_repaired(root: Path) -> None:
    for _ in range(5):
        proc = spawn(
            """
            import localrun
            run = localrun.init(project="p", id="r", resume="allow", flush_interval=3600)
            print("ready", flush=True)
            i = run.step
            while True:
                run.log({"x": float(i)}); run.flush(); i += 1
        """,
            root,
            LOCALRUN_COMPACT_FANOUT="2",
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.kill()
        proc.wait()
        api = localrun.Api(root)
        steps = api.run("p/r").history().column("_step").to_pylist()
        assert steps == list(range(len(steps)))
        api.verify(repair=True)
        assert api.verify()[0].ok
        after = api.run("p/r").history().column("_step").to_pylist()
        assert after[: len(steps)] == steps  # repair never loses a committed row; it may
        assert after == list(range(len(after)))  # adopt an orphan that continues the steps


# -- across attempts (docs/format.md "Compaction") ------------------------------------------

# Attempts of a preemptible job: each resumes, some from a checkpoint older than the last
# logged step (rewind_to), one rewinds mid-attempt; flushes every few steps; a string key and
# a key that only later attempts log (segments of one run differ in columns).
MAKE_ATTEMPTS = """
import localrun, sys
n = int(sys.argv[1]) if len(sys.argv) > 1 else 12
for k in range(n):
    kw = {}
    if k:
        kw = dict(resume="must")
        last = localrun.Api().run("p/r").last_step
        if k % 3 == 1:
            kw["rewind_to"] = last - 5
    run = localrun.init(project="p", id="r", flush_interval=3600, **kw)
    s = run.step
    for i in range(s, s + 20):
        row = {"loss": float(i) + 1000 * k}
        if i % 4 == 0:
            row["tag"] = f"a{k}-{i}"
        if k > 5:
            row["late"] = -float(i)
        run.log(row)
        if i % 3 == 0:
            run.flush()
        if k == 4 and i == s + 12:
            run.rewind(s + 6)
    run.finish()
"""


def _make_attempts(root: Path, n: int = 12, fanout: str = "1024") -> None:
    """``n`` attempts made by real processes' writers; fanout 1024: nothing is ever merged."""
    result = run_py(
        MAKE_ATTEMPTS.replace("sys.argv[1]) if len(sys.argv) > 1 else 12", f"{n})"),
        root,
        timeout=300,
        LOCALRUN_COMPACT_FANOUT=fanout,
    )
    assert result.returncode == 0, result.stderr


def _views(root: Path) -> tuple[pa.Table, pa.Table]:
    stored = localrun.Api(root).run("p/r")
    return stored.history(), stored.history(all_attempts=True)


def _resume_once(root: Path, fanout: str = "4", steps: int = 0) -> None:
    result = run_py(
        f"""
        import localrun
        run = localrun.init(project="p", id="r", resume="must", flush_interval=3600)
        for i in range({steps}):
            run.log({{"loss": 0.5}})
        run.finish()
        """,
        root,
        LOCALRUN_COMPACT_FANOUT=fanout,
    )
    assert result.returncode == 0, result.stderr


def test_resumed_run_merges_across_attempts_and_rewinds_with_the_same_rows(root: Path) -> None:
    _make_attempts(root)
    stored = localrun.Api(root).run("p/r")
    before_segments = len(stored.manifest["segments"])
    visible, everything = _views(root)
    assert stored.manifest["rewinds"] and everything.num_rows > visible.num_rows
    _resume_once(root)  # the new attempt merges the earlier ones' segments
    stored = localrun.Api(root).run("p/r")
    segs = stored.manifest["segments"]
    assert len(segs) < before_segments / 4
    assert {s["attempt"] for s in segs if not s.get("hidden")} != {13}  # merged across attempts
    assert any(s.get("hidden") for s in segs)  # rows the rewinds hide: kept, not deleted
    after_visible, after_everything = _views(root)
    assert after_visible.equals(visible)  # rows hidden by a rewind stay hidden
    assert after_everything.equals(everything)  # and all_attempts shows them, with _attempt
    listed, on_disk = _listed_and_on_disk(root, "p/r")
    assert listed == on_disk  # the replaced files are removed (after the commit)
    assert localrun.Api(root).verify("p/r")[0].ok
    # a later rewind still applies to merged segments, and resume continues after it
    run = localrun.init(project="p", id="r", resume="must", dir=root, rewind_to=10)
    assert run.step == 11
    run.log({"loss": -1.0})
    run.finish()
    table = localrun.Api(root).run("p/r").history(["loss"])
    assert table.column("_step").to_pylist() == list(range(12))
    assert table.column("loss").to_pylist() == [*visible.column("loss").to_pylist()[:11], -1.0]


def test_docs_duckdb_query_gives_history_rows_of_a_merged_run(tmp_path: Path) -> None:
    root = tmp_path / "localruns"
    _make_attempts(root)
    _resume_once(root)
    # a rewind recorded after the merge hides rows inside merged segments too
    run = localrun.init(project="p", id="r", resume="must", dir=root, rewind_to=150)
    run.log({"loss": -1.0})
    run.finish()
    stored = localrun.Api(root).run("p/r")
    assert any(s.get("hidden") for s in stored.manifest["segments"])
    assert any(s.get("level", 0) > 0 and s["max_step"] > 150 for s in stored.manifest["segments"])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rows = duckdb.sql(duckdb_recipe(ordered=True)).fetchall()
        unordered = duckdb.sql(duckdb_recipe()).fetchall()
    finally:
        os.chdir(cwd)
    assert sorted(unordered) == rows
    table = stored.history(["loss"])
    assert rows == [
        ("p", "r", step, loss)
        for step, loss in zip(
            table.column("_step").to_pylist(), table.column("loss").to_pylist(), strict=True
        )
    ]


def test_many_attempts_end_in_as_few_segments_as_one_attempt(root: Path) -> None:
    result = run_py(
        """
        import localrun
        for k in range(20):
            kw = dict(resume="must") if k else {}
            run = localrun.init(project="p", id="r", flush_interval=3600, **kw)
            for _ in range(10):
                run.log({"x": 1.0}); run.flush()
            run.finish()
        run = localrun.init(project="p", id="once", flush_interval=3600)
        for _ in range(200):
            run.log({"x": 1.0}); run.flush()
        run.finish()
        """,
        root,
        timeout=300,
        LOCALRUN_COMPACT_FANOUT="4",
    )
    assert result.returncode == 0, result.stderr
    api = localrun.Api(root)
    levels = [
        sorted(s.get("level", 0) for s in api.run(p).manifest["segments"])
        for p in ("p/r", "p/once")
    ]
    assert levels[0] == levels[1] == [1, 1, 3, 3, 3]  # 200 flushes = 3 * 4**3 + 2 * 4
    assert api.run("p/r").history(["x"]).column("_step").to_pylist() == list(range(200))


def test_a_merge_never_committed_is_never_adopted(root: Path) -> None:
    """SIGKILL after a merge's files are written, before its commit: they are orphans of the
    newest attempt, and the hidden one (rows a rewind hid, above the last step) looks like it
    continues the run. Resume sets both aside; every row is counted once, hidden ones hidden."""
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        for i in range(30):
            run.log({"x": float(i)})
            if i % 4 == 3:
                run.flush()
        run.finish()
        localrun.init(project="p", id="r", resume="must", rewind_to=19).finish()
        """,
        root,
        LOCALRUN_COMPACT_FANOUT="1024",
    )
    assert result.returncode == 0, result.stderr
    visible, everything = _views(root)
    rdir = root / "p" / "r"
    m = mf.load(rdir)
    dead = tuple(s for s in m["segments"] if s["min_step"] > 19)  # all their rows hidden
    job = compaction.Job(
        dead, hidden=True, level=1, rewinds=compaction.rewind_keys(m), splits=False
    )
    outputs = compaction.execute(rdir, job, [(2, 0)], {"project": "p", "id": "r"})
    assert outputs[0]["min_step"] == 20 > m["last_step"]  # looks like it continues the run
    _resume_once(root, fanout="1024")  # the orphans are the newest attempt's, after its last
    assert _views(root)[0].equals(visible)
    assert _views(root)[1].equals(everything)
    quarantined = {p.name for p in (rdir / "quarantine").iterdir()}
    assert {o["file"].replace("/", "__") for o in outputs} <= quarantined
    assert localrun.Api(root).verify("p/r")[0].ok


def test_crash_between_the_commit_and_removing_the_parts(root: Path) -> None:
    """SIGKILL after the merge's revision, before the replaced files are removed: they are
    unlisted; nothing adopts them, repair sets them aside, rows are counted once."""
    _make_attempts(root)
    visible, everything = _views(root)
    rdir = root / "p" / "r"
    m = mf.load(rdir)
    job = compaction.plan(m, 4)
    assert job is not None
    newest = max(a["attempt"] for a in m["attempts"])
    outputs = compaction.execute(
        rdir, job, [(newest, 900 + i) for i in range(job.outputs)], {"project": "p"}
    )
    mf.update(rdir, lambda s: compaction.swap(s, job, outputs))  # committed; parts still there
    assert all((rdir / p["file"]).exists() for p in job.parts)
    _resume_once(root, fanout="1024")
    assert _views(root)[0].equals(visible)
    assert _views(root)[1].equals(everything)
    api = localrun.Api(root)
    assert not api.verify("p/r")[0].ok  # the leftover parts are reported
    api.verify("p/r", repair=True)
    assert api.verify("p/r")[0].ok
    assert _views(root)[0].equals(visible) and _views(root)[1].equals(everything)


def test_sigkill_while_merging_across_attempts(root: Path) -> None:
    """Killed while a merge is being written (its temp file is there): resume and repair
    keep every row once, hidden rows hidden."""
    _make_attempts(root, n=30)
    visible, everything = _views(root)
    rdir = root / "p" / "r"
    caught = 0
    for _ in range(6):
        proc = spawn(
            """
            import localrun, time
            run = localrun.init(project="p", id="r", resume="must", flush_interval=3600)
            time.sleep(30)
            """,
            root,
            LOCALRUN_COMPACT_FANOUT="2",
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            hist = rdir / "history"
            if any(".tmp-" in p.name and f"-{proc.pid}-" in p.name for p in hist.iterdir()):
                proc.kill()  # mid-merge: a merged file is being written
                caught += 1
                break
        proc.kill()
        proc.wait()
        assert _views(root)[0].equals(visible)
        assert _views(root)[1].equals(everything)
    assert caught >= 1
    _resume_once(root, fanout="1024")
    api = localrun.Api(root)
    api.verify("p/r", repair=True)
    assert api.verify("p/r")[0].ok
    assert _views(root)[0].equals(visible) and _views(root)[1].equals(everything)


READER = """
import os, sys, localrun
api = localrun.Api()
def views():
    run = api.run("p/r")
    return run.history(), run.history(all_attempts=True)
expected = views()
print("ready", flush=True)
reads = 0
while not os.path.exists(sys.argv[1]) or reads < 3:
    got = views()
    assert got[0].equals(expected[0]), "visible rows changed"
    assert got[1].equals(expected[1]), "all_attempts rows changed"
    reads += 1
print("reads", reads, flush=True)
"""


def test_a_reader_in_another_process_sees_the_same_rows_while_merges_run(
    root: Path, tmp_path: Path
) -> None:
    _make_attempts(root, n=20)
    done = tmp_path / "done"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(done)],
        env=child_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    track(reader)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    _resume_once(root, fanout="2")  # cascades of merges, each committed, then parts removed
    done.touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    assert int(out.split()[-1]) >= 3
    assert len(localrun.Api(root).run("p/r").manifest["segments"]) < 20


def test_rebuild_from_footers_keeps_merged_rows_once_and_rewinds(root: Path) -> None:
    """Every revision lost (the last resort): the state is rebuilt from the segments' footers.
    Merged files say what they replaced and which rewinds they were made under, so leftover
    parts are set aside and rows hidden by rewinds stay hidden."""
    _make_attempts(root)
    _resume_once(root)
    rdir = root / "p" / "r"
    m = mf.load(rdir)
    job = compaction.plan(m, 2)  # one more merge, committed, its parts left (a crash)
    assert job is not None
    outputs = compaction.execute(rdir, job, [(14, i) for i in range(job.outputs)], {"id": "r"})
    mf.update(rdir, lambda s: compaction.swap(s, job, outputs))
    visible, everything = _views(root)
    shutil.rmtree(rdir / "log")
    (rdir / "manifest.json").unlink()
    api = localrun.Api(root)
    report = api.verify("p/r", repair=True)[0]
    assert any("rebuilt" in r for r in report.repaired), report.as_dict()
    assert _views(root)[0].equals(visible)
    assert _views(root)[1].equals(everything)
    assert {p.name for p in (rdir / "quarantine").iterdir()} == {
        p["file"].replace("/", "__") for p in job.parts
    }
    assert api.verify("p/r")[0].ok
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    assert run.step == visible.column("_step")[-1].as_py() + 1
    run.finish()


def test_a_merge_of_parts_with_different_keys_keeps_values_nulls_and_kinds(root: Path) -> None:
    """Each flush holds other keys (numbers, strings, lists of both, explicit None): the merge
    unifies their schemas up front and writes each part in turn; every value, null and kind
    reads back as before, from the reader and from the merged file itself."""
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        rows = [
            {"x": 1.0},
            {"s": "a", "v": [1.0, 2.5]},
            {"x": 2.0, "tags": ["u", "w"], "s": None},
            {"x": None, "v": []},
            {"s": "b"},
            {"n": 7, "x": 3.5, "tags": ["z"]},
        ]
        for i, row in enumerate(rows):
            run.log(row)
            if i % 2:
                run.log({"s": f"odd{i}"})  # two rows in this flush: a part with nulls inside
            run.flush()
        run.finish()
        """,
        root,
        LOCALRUN_COMPACT_FANOUT="1024",
    )
    assert result.returncode == 0, result.stderr
    rdir = root / "p" / "r"
    visible, everything = _views(root)
    m = mf.load(rdir)
    parts = m["segments"]
    assert len(parts) == 6
    assert len({tuple(pq.read_schema(rdir / p["file"]).names) for p in parts}) > 3
    job = compaction.plan(m, len(parts))  # one merge of every part
    assert job is not None and len(job.parts) == 6
    outputs = compaction.execute(rdir, job, [(2, 0)], {"project": "p", "id": "r"})
    mf.update(rdir, lambda s: compaction.swap(s, job, outputs))
    for p in job.parts:
        (rdir / p["file"]).unlink()
    assert [s["file"] for s in mf.load(rdir)["segments"]] == [outputs[0]["file"]]
    assert _views(root)[0].equals(visible, check_metadata=False)
    assert _views(root)[1].equals(everything, check_metadata=False)
    merged = pq.read_table(rdir / outputs[0]["file"])
    kinds = {
        "x": pa.float64(),
        "n": pa.float64(),
        "s": pa.string(),
        "v": pa.list_(pa.float64()),
        "tags": pa.list_(pa.string()),
    }
    for key, kind in kinds.items():  # each key in its kind, never Arrow's null type
        t = merged.schema.field(key).type
        assert t == kind or (pa.types.is_list(t) and t.value_type == kind.value_type), key
    table = visible.select(["_step", *kinds]).to_pylist()
    assert [r["_step"] for r in table] == list(range(9))
    assert [r["x"] for r in table] == [1.0, None, None, 2.0, None, None, None, 3.5, None]
    assert [r["s"] for r in table] == [None, "a", "odd1", None, None, "odd3", "b", None, "odd5"]
    assert [r["v"] for r in table] == [None, [1.0, 2.5], None, None, [], None, None, None, None]
    assert [r["tags"] for r in table] == [None, None, None, ["u", "w"], *[None] * 3, ["z"], None]
    assert [r["n"] for r in table] == [None] * 7 + [7.0, None]
    assert localrun.Api(root).verify("p/r")[0].ok


def test_a_merge_holds_a_row_group_in_memory_not_the_merge(root: Path) -> None:
    """50 parts of 4,000 rows (about 21 MB of Arrow memory) merged with row groups of 4,096
    rows: the process's Arrow memory peak (pyarrow's pool high-water mark, counted in bytes,
    so no machine-speed dependence) stays a small fraction of the merge, and the output's row
    groups are the bound's size, not one per part and not one for everything."""
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", flush_interval=3600)
        for i in range(200_000):
            run.log({f"m{k}": i + k * 0.5 for k in range(10)})
            if i % 4000 == 3999:
                run.flush()
        run.finish()
        """,
        root,
        timeout=300,
        LOCALRUN_COMPACT_FANOUT="1024",
    )
    assert result.returncode == 0, result.stderr
    rdir = root / "p" / "r"
    assert len(mf.load(rdir)["segments"]) == 50
    merge = run_py(
        f"""
        import json
        from pathlib import Path
        import pyarrow as pa
        from localrun._store import compaction
        from localrun._store import manifest as mf
        compaction.ROW_GROUP_ROWS = 4096
        rdir = Path({str(rdir)!r})
        m = mf.load(rdir)
        job = compaction.plan(m, len(m["segments"]))
        before = pa.default_memory_pool().max_memory()
        out = compaction.execute(rdir, job, [(2, 0)], {{"id": "r"}})
        print(json.dumps([out[0]["file"], before, pa.default_memory_pool().max_memory()]))
        """,
        root,
    )
    assert merge.returncode == 0, merge.stderr
    rel, before, peak = json.loads(merge.stdout.strip().splitlines()[-1])
    merged = pq.ParquetFile(rdir / rel)
    total = merged.read().nbytes
    assert merged.metadata.num_rows == 200_000 and total > 20 * 2**20
    sizes = [merged.metadata.row_group(g).num_rows for g in range(merged.num_row_groups)]
    assert max(sizes) <= 4096 and sum(sizes) == 200_000 and len(sizes) >= 200_000 // 4096
    assert before < total / 10  # nothing of the merge was held before it began
    assert peak < total / 5, (peak, total)  # a few row groups (and buffers), not the merge


def test_an_end_commits_without_waiting_for_a_merge_then_waits_for_its_thread(root: Path) -> None:
    """A failed or preempted end stops a merge unfinished: the final commit goes first (the
    merge in flight is not waited for), and the end returns only once the merge's thread has
    left Arrow's reader (a process exiting with a thread inside Arrow can die of SIGSEGV).
    The merge here is a real one whose first read waits until the end state is on disk."""
    result = run_py(
        """
        import json, threading, time
        import localrun
        from localrun._store import compaction
        from localrun._store import manifest as mf

        real, merging, seen = compaction._read_groups, threading.Event(), []

        def slow(run_dir, part, stop):
            merging.set()
            deadline = time.monotonic() + 60
            while mf.load(run_dir)["state"] == "running" and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(mf.load(run_dir)["state"])
            yield from real(run_dir, part, stop)

        compaction._read_groups = slow
        run = localrun.init(project="p", id="r", flush_interval=3600)
        for i in range(40):
            run.log({"x": float(i)})
            run.flush()
            if merging.is_set():
                break
        assert merging.wait(60), "no merge started"
        run.finish(1)
        alive = [t.name for t in threading.enumerate() if t.name.startswith("localrun-compact")]
        print(json.dumps({"seen": seen, "alive": alive, "steps": run.step}))
        """,
        root,
        timeout=120,
        LOCALRUN_COMPACT_FANOUT="2",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["seen"] == ["failed"]  # the end committed while the merge was reading
    assert out["alive"] == []  # and returned once the merge's thread had stopped
    stored = localrun.Api(root).run("p/r")
    assert stored.state == "failed"
    steps = stored.history().column("_step").to_pylist()
    assert steps == list(range(out["steps"]))  # nothing lost, nothing twice
    listed, on_disk = _listed_and_on_disk(root, "p/r")
    assert listed == on_disk  # the unfinished merge left no file behind


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i / -i: a file nobody, root included, can replace (False where unsupported)."""
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


def test_parts_stay_while_the_manifest_copy_still_lists_them(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """manifest.json could not be refreshed (here: made immutable, a real EPERM for root too):
    a tool joining that copy with the files would lose the rows of parts removed now, so the
    merge keeps them on disk; verify --repair sets them aside once the copy is fresh again."""
    monkeypatch.setenv("LOCALRUN_COMPACT_FANOUT", "4")
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600, console=False)
    for i in range(3):
        run.log({"x": float(i)})
        run.flush()
    copy = run.dir / "manifest.json"
    if not _immutable(copy, True):
        run.finish()
        pytest.skip("this filesystem cannot make a file immutable (chattr +i)")
    try:
        run.log({"x": 3.0})
        run.flush()  # the fourth segment: a merge of four, committed, the copy not refreshed
        deadline = time.monotonic() + 60
        while not any(s.get("level") for s in mf.load(run.dir)["segments"]):
            assert time.monotonic() < deadline, "the merge was never committed"
            time.sleep(0.05)
        stale = {s["file"] for s in json.loads(copy.read_bytes())["segments"]}
        listed, on_disk = _listed_and_on_disk(root, "p/r")
        # the copy is of the third flush's revision: it names three of the four parts
        assert len(stale) == 3 and stale.isdisjoint(listed)
        assert stale <= on_disk and len(on_disk - listed) == 4  # all four are still there
        assert "stale manifest.json" in caplog.text
    finally:
        assert _immutable(copy, False)
    run.finish()  # its commit refreshes the copy
    assert {s["file"] for s in json.loads(copy.read_bytes())["segments"]} == listed
    assert localrun.Api(root).run("p/r").history(["x"])["x"].to_pylist() == [0.0, 1.0, 2.0, 3.0]
    localrun.Api(root).verify("p/r", repair=True)
    listed, on_disk = _listed_and_on_disk(root, "p/r")
    assert listed == on_disk  # the kept parts are set aside (quarantine/), never deleted
    assert len(list((run.dir / "quarantine").rglob("*.parquet"))) == 4
    assert localrun.Api(root).run("p/r").history(["x"])["x"].to_pylist() == [0.0, 1.0, 2.0, 3.0]
