"""Tiered compaction keeps a long run's manifest short without losing or duplicating a row."""

from __future__ import annotations

import time
from pathlib import Path

import localrun
from tests.conftest import run_py, spawn


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


def test_compaction_never_crosses_a_rewind(root: Path) -> None:
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
