"""Hostile input and faults (issue 7, item 13): what a user or another tool can do to a run.

Four principles, each held everywhere rather than patched case by case:

1. A value ``log()`` accepts is a value the store can write, and one bad batch never blocks the
   next: the run still finishes and every later row is in ``history()``.
2. Nothing outside the run folder is ever read, written or moved: a symlinked ``history/`` or
   ``files/``, or a manifest path that is absolute or climbs with ``..``, is refused with a
   :class:`CorruptRunError` naming the run and the path.
3. No special file (a FIFO) can hang a reader, ``restore()`` or a resume. Each such case runs in
   a subprocess with a timeout, so a regression fails instead of hanging the suite.
4. A damaged segment is a clear error naming the run, the file and the repair.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun
from tests.conftest import run_py

HANG_S = 30.0  # generous: a subprocess that imports pyarrow on a loaded machine, then reads


def _history(root: Path, keys: list[str] | None = None) -> pa.Table:
    return localrun.Api(root).run("p/r").history(keys)


def _manifest_path(root: Path) -> Path:
    return root / "p" / "r" / "manifest.json"


def _edit_manifest(root: Path, change: Any) -> None:
    """Rewrite the run's state by hand, as another tool (or an attacker) could: its newest
    revision in log/ (the state) and manifest.json (its copy)."""
    run_dir = _manifest_path(root).parent
    newest = max((run_dir / "log").glob("*.json"))
    for path in (newest, _manifest_path(root)):
        m = json.loads(path.read_text())
        change(m)
        path.write_text(json.dumps(m))


def _finished_run(root: Path, segments: int = 2) -> Path:
    """A finished run p/r with ``segments`` segments of 3 rows of ``loss`` each."""
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    for s in range(segments):
        for i in range(3):
            run.log({"loss": float(3 * s + i)})
        run.flush()
    run.finish()
    return root / "p" / "r"


def _outside_segment(tmp_path: Path) -> Path:
    """A valid segment outside the root holding another user's secret rows."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    path = outside / "secret.parquet"
    table = pa.table(
        {
            "_step": pa.array([0, 1, 2], pa.int64()),
            "_timestamp": [0.0, 0.0, 0.0],
            "_runtime": [0.0, 0.0, 0.0],
            "loss": [666.0, 666.0, 666.0],
        }
    )
    pq.write_table(table, path)
    return path


# -- 1. a value log() accepts is a value the store can write ----------------------------------
def test_int_past_float64_exact_range_on_the_fast_path_is_stored(root: Path) -> None:
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"t": 0.0})
    stamps = [time.time_ns() + i for i in range(3)]  # ints past 2**53: float64 rounds them
    for ns in stamps:
        run.log({"t": ns})
    run.flush()
    run.log({"t": 5.0})
    run.finish()
    stored = localrun.Api(root).run("p/r")
    assert stored.state == "finished"
    assert _history(root, ["t"]).column("t").to_pylist() == [0.0, *map(float, stamps), 5.0]


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"text": "ok\ud800"}, "text"),
        ({"bad\udc80key": 1.0}, "bad\udc80key"),
        ({"words": ["fine", "\ud83d"]}, "words"),
        ({"nested": {"in\ud800side": 1.0}}, "nested/in\ud800side"),
    ],
)
def test_lone_surrogates_are_refused_at_log(root: Path, data: dict[str, Any], key: str) -> None:
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"loss": 0.0, "text": "a", "words": ["x"]})
    with pytest.raises(localrun.LogValueError, match="surrogate") as info:
        run.log(data)
    assert repr(key) in str(info.value)
    run.log({"loss": 1.0, "text": "b", "words": ["y"]})  # the run goes on
    run.finish()
    assert localrun.Api(root).run("p/r").state == "finished"
    table = _history(root)
    assert table.column("loss").to_pylist() == [0.0, 1.0]
    assert table.column("text").to_pylist() == ["a", "b"]


def test_check_step_refuses_what_int64_cannot_hold() -> None:
    from localrun._run.values import check_step

    assert check_step(0) == 0
    assert check_step(2**63 - 1) == 2**63 - 1
    for step in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(localrun.LogValueError, match="int64") as info:
            check_step(step)
        assert str(step) in str(info.value)
    for bad in (1.5, "3", True, None):
        with pytest.raises(localrun.UsageError, match="step must be an int"):
            check_step(bad)


def test_step_outside_int64_is_refused_and_the_run_goes_on(root: Path) -> None:
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"loss": 0.0})
    with pytest.raises(localrun.LogValueError, match="int64"):
        run.log({"loss": 1.0}, step=2**63)
    run.log({"loss": 2.0})
    run.finish()
    assert localrun.Api(root).run("p/r").state == "finished"
    assert _history(root, ["loss"]).column("loss").to_pylist() == [0.0, 2.0]


def test_a_batch_that_cannot_be_converted_loses_only_its_bad_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the flusher relies on: to_table never raises for the values in one row; it drops
    that row, says which key, and converts the rest (so the next flush is not blocked)."""
    from localrun._run.buffer import to_table

    kinds = {"loss": "number", "text": "string", "words": "list<string>"}
    rows = [
        (0, 1.0, {"loss": 0.0, "text": "a"}),
        (1, 1.0, {"loss": 2**70}),  # an int float64 rounds: stored, not dropped
        (2, 1.0, {"loss": 10**400}),  # too large for any float: dropped
        (3, 1.0, {"text": "\ud800"}),  # cannot be UTF-8: dropped
        (4, 1.0, {"words": ["x", "\udc80"]}),  # in a list too
        (2**63, 1.0, {"loss": 5.0}),  # a step int64 cannot hold: dropped
        (6, 1.0, {"loss": 6.0, "text": "b"}),
    ]
    with caplog.at_level(logging.ERROR, logger="localrun"):
        table = to_table(rows, kinds, 0.0, 0.0, where="p/r")
    assert table.column("_step").to_pylist() == [0, 1, 6]
    assert table.column("loss").to_pylist() == [0.0, float(2**70), 6.0]
    assert table.column("text").to_pylist() == ["a", None, "b"]
    text = caplog.text
    assert "p/r" in text and "4 row(s)" in text
    for what in ("'loss'", "'text'", "'words'", "_step"):
        assert what in text


def _rows(n: int, keys: list[str], value: Any = None) -> list[dict[str, Any]]:
    """``n`` rows as log() buffers them: each key's value, then the row's time."""
    return [
        {
            **{k: (float(i * 7 + j) if value is None else value(i, j)) for j, k in enumerate(keys)},
            "_timestamp": 1.7e9 + i * 0.25,
        }
        for i in range(n)
    ]


def _wide(n: int) -> list[str]:
    return [f"k{j:03d}" for j in range(n)]


def _batches() -> dict[str, tuple[list[dict[str, Any]], dict[str, str]]]:
    ten = [f"m{j}" for j in range(10)]
    number = dict.fromkeys(ten, "number")
    missing = _rows(5, ten)
    del missing[3]["m4"]
    nones = _rows(5, ten)
    nones[2]["m7"] = None
    text = _rows(4, ["a", "b"])
    for i, r in enumerate(text):
        r["t"] = f"s{i}"
    return {
        "floats": (_rows(3000, ten), number),
        "ints past 2**53 and int64's ends": (
            _rows(6, ten, lambda i, j: (2**53 + 1, -(2**63), 2**63 - 1, 7, -1, 0)[i]),
            number,
        ),
        "a row lacking a key": (missing, number),
        "a None": (nones, number),
        "numbers and strings": (text, {"a": "number", "b": "number", "t": "string"}),
        "more keys than one pass takes": (
            _rows(3, _wide(200)),
            dict.fromkeys(_wide(200), "number"),
        ),
        "more rows than the kept indices": (
            _rows(5000, ["x", "y"]),
            {"x": "number", "y": "number"},
        ),
        "one row": (_rows(1, ["x"]), {"x": "number"}),
    }


@pytest.mark.parametrize("case", list(_batches()))
def test_a_batch_converts_as_the_row_by_row_path_does(case: str) -> None:
    """The writer's conversion (one pass over the rows when each holds every number key,
    column by column otherwise) makes the table the row-by-row reference makes: same columns,
    same order, same values (an int rounds as ``float()`` does), same nulls."""
    from localrun._run.buffer import Batch, _as_rows, batch_table, cells, to_table

    rows, kinds = _batches()[case]
    batch = Batch(range(40, 40 + len(rows)), rows, cells(rows))
    got = batch_table(batch, kinds, runtime_base=12.5, t0=1.7e9 - 3.0, where="p/r")
    want = to_table(_as_rows(batch), kinds, 12.5, 1.7e9 - 3.0, where="p/r")
    assert got.schema == want.schema
    assert got.equals(want)


# -- 2. nothing outside the run folder is read, written or moved ------------------------------
@pytest.mark.parametrize("bad", ["ABSOLUTE", "../../../outside/secret.parquet"])
def test_manifest_segment_path_out_of_the_run_is_refused(
    root: Path, tmp_path: Path, bad: str
) -> None:
    secret = _outside_segment(tmp_path)
    _finished_run(root, segments=1)
    rel = str(secret) if bad == "ABSOLUTE" else bad
    assert (root / "p" / "r" / rel).resolve() == secret.resolve()  # it does point at the secret

    def point(m: dict[str, Any]) -> None:
        m["segments"][0]["file"] = rel

    _edit_manifest(root, point)
    stored = localrun.Api(root).run("p/r")
    for read in (stored.history, stored.segment_paths):
        with pytest.raises(localrun.CorruptRunError) as info:
            read()
        assert "p/r" in str(info.value) and rel in str(info.value)


@pytest.mark.parametrize("linked", ["history", "files", "files/.versions"])
def test_symlinked_folders_are_never_followed_by_readers(
    root: Path, tmp_path: Path, linked: str
) -> None:
    run_dir = _finished_run(root, segments=1)
    run = localrun.init(project="p", id="r", dir=root, resume="must")
    (tmp_path / "ckpt.bin").write_bytes(b"weights")
    run.save(str(tmp_path / "ckpt.bin"))
    run.finish()
    outside = tmp_path / "outside"
    shutil.move(run_dir / linked, outside)  # the same content, now outside the run
    (run_dir / linked).symlink_to(outside)
    stored = localrun.Api(root).run("p/r")
    reads = (
        [stored.history, stored.segment_paths]
        if linked == "history"
        else [
            lambda: stored.file_path("ckpt.bin"),
            lambda: stored.open_file("ckpt.bin"),
            lambda: localrun.restore("ckpt.bin", run_path="p/r", root=root),
            lambda: localrun.restore("ckpt.bin", run_path="p/r", root=root, to=tmp_path / "o"),
        ]
    )
    for read in reads:
        with pytest.raises(localrun.CorruptRunError, match="symbolic link") as info:
            read()
        assert "p/r" in str(info.value) and linked.split("/")[-1] in str(info.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("how", ["ABSOLUTE", "../../../secret.txt", "SYMLINK"])
def test_saved_file_path_out_of_the_run_is_refused(root: Path, tmp_path: Path, how: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root-only data")
    (tmp_path / "notes.txt").write_text("my notes!!!!!!")  # the same size as the secret
    run = localrun.init(project="p", id="r", dir=root)
    run.save(str(tmp_path / "notes.txt"))
    run.finish()
    run_dir = root / "p" / "r"
    entry = json.loads(_manifest_path(root).read_text())["files"]["notes.txt"][-1]
    if how == "SYMLINK":  # the manifest is intact; the version was swapped for a link
        version = run_dir / entry["path"]
        version.unlink()
        version.symlink_to(secret)
        bad = entry["path"]
    else:
        bad = str(secret) if how == "ABSOLUTE" else how
        assert (run_dir / bad).resolve() == secret.resolve()

        def point(m: dict[str, Any]) -> None:
            m["files"]["notes.txt"][-1]["path"] = bad

        _edit_manifest(root, point)
    stored = localrun.Api(root).run("p/r")
    for read in (
        lambda: stored.file_path("notes.txt"),
        lambda: stored.open_file("notes.txt"),
        lambda: localrun.restore("notes.txt", run_path="p/r", root=root),
        lambda: localrun.restore("notes.txt", run_path="p/r", root=root, to=tmp_path / "o.txt"),
    ):
        with pytest.raises(localrun.CorruptRunError) as info:
            read()
        assert "p/r" in str(info.value) and bad in str(info.value)
    assert not (tmp_path / "o.txt").exists()


@pytest.mark.parametrize("linked", ["files", "files/.versions"])
def test_save_never_writes_through_a_symlinked_folder(
    root: Path, tmp_path: Path, linked: str
) -> None:
    (tmp_path / "a.txt").write_text("a")
    run = localrun.init(project="p", id="r", dir=root)
    run.save(str(tmp_path / "a.txt"))
    run_dir = root / "p" / "r"
    outside = tmp_path / "outside"
    shutil.move(run_dir / linked, outside)
    (run_dir / linked).symlink_to(outside)
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    (tmp_path / "b.txt").write_text("b")
    with pytest.raises(localrun.CorruptRunError, match="symbolic link") as info:
        run.save(str(tmp_path / "b.txt"))
    assert "p/r" in str(info.value)
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before
    run.finish()
    assert sorted(localrun.Api(root).run("p/r").files()) == ["a.txt"]


def test_writer_never_writes_segments_through_a_symlinked_history(
    root: Path, tmp_path: Path
) -> None:
    run = localrun.init(project="p", id="r", dir=root, flush_interval=3600)
    run.log({"loss": 0.0})
    run.flush()
    outside = tmp_path / "outside"
    outside.mkdir()
    run_dir = root / "p" / "r"
    shutil.move(run_dir / "history", outside / "history")
    (run_dir / "history").symlink_to(outside / "history")
    run.log({"loss": 1.0})
    with pytest.raises(localrun.CorruptRunError, match="symbolic link"):
        run.flush()
    assert [p.name for p in (outside / "history").iterdir()] == ["0001-000000.parquet"]


def test_resume_never_moves_files_into_a_symlinked_quarantine(root: Path, tmp_path: Path) -> None:
    run_dir = _finished_run(root, segments=1)
    (run_dir / "history" / "0001-000001.parquet").write_bytes(b"garbage, not parquet")
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "quarantine").symlink_to(outside)
    with pytest.raises(localrun.CorruptRunError, match="symbolic link"):
        localrun.init(project="p", id="r", dir=root, resume="must")
    assert list(outside.iterdir()) == []


# -- 3. no special file can hang anything ----------------------------------------------------
def _must_not_hang(code: str, root: Path) -> str:
    """Run ``code`` in a subprocess; a hang on a FIFO fails the test after HANG_S."""
    try:
        proc = run_py(code, root, timeout=HANG_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {HANG_S:.0f}s on a FIFO")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_fifo_in_place_of_a_segment_is_refused_not_waited_on(root: Path) -> None:
    run_dir = _finished_run(root, segments=2)
    seg = run_dir / "history" / "0001-000001.parquet"
    seg.unlink()
    os.mkfifo(seg)
    out = _must_not_hang(
        """
        import localrun
        stored = localrun.Api().run("p/r")
        for read in (
            stored.history,
            stored.segment_paths,  # an engine reading them would block
            lambda: localrun.init(project="p", id="r", resume="must"),
        ):
            try:
                read()
            except localrun.CorruptRunError as exc:
                print("refused:", exc)
        """,
        root,
    )
    refusals = [line for line in out.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 3, out
    for line in refusals:
        assert "p/r" in line and "0001-000001.parquet" in line


def test_fifo_as_an_orphan_segment_is_quarantined_at_resume(root: Path) -> None:
    run_dir = _finished_run(root, segments=1)
    os.mkfifo(run_dir / "history" / "0001-000001.parquet")
    out = _must_not_hang(
        """
        import localrun
        run = localrun.init(project="p", id="r", resume="must")
        run.log({"loss": 9.0})
        run.finish()
        print(localrun.Api().run("p/r").history(["loss"]).column("loss").to_pylist())
        """,
        root,
    )
    assert out.strip() == "[0.0, 1.0, 2.0, 9.0]"
    assert not (run_dir / "history" / "0001-000001.parquet").exists()
    assert [p.name for p in (run_dir / "quarantine").iterdir()] == ["history__0001-000001.parquet"]


def test_fifo_in_place_of_a_saved_version_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "ckpt.bin").write_bytes(b"weights")
    run = localrun.init(project="p", id="r", dir=root)
    run.save(str(tmp_path / "ckpt.bin"))
    run.finish()
    version = root / "p" / "r" / localrun.Api(root).run("p/r").files()["ckpt.bin"]["path"]
    version.unlink()
    os.mkfifo(version)
    out = _must_not_hang(
        f"""
        import localrun
        stored = localrun.Api().run("p/r")
        for read in (
            lambda: stored.file_path("ckpt.bin"),
            lambda: stored.open_file("ckpt.bin"),
            lambda: localrun.restore("ckpt.bin", run_path="p/r"),
            lambda: localrun.restore("ckpt.bin", run_path="p/r", to={str(tmp_path / "o")!r}),
        ):
            try:
                read()
            except localrun.CorruptRunError as exc:
                print("refused:", exc)
        """,
        root,
    )
    refusals = [line for line in out.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 4, out
    assert all("p/r" in line and "FIFO" in line for line in refusals), out


def test_fifo_in_place_of_the_root_marker_does_not_hang_init(root: Path) -> None:
    root.mkdir()
    os.mkfifo(root / "localrun.json")
    out = _must_not_hang(
        """
        import localrun
        run = localrun.init(project="p", id="r")
        run.log({"loss": 1.0})
        run.finish()
        print(localrun.Api().run("p/r").state)
        """,
        root,
    )
    assert out.strip() == "finished"


def test_fifo_in_place_of_a_manifest_is_one_runs_clear_error(root: Path) -> None:
    _finished_run(root, segments=1)
    localrun.init(project="p", id="other", dir=root).finish()
    run_dir = _manifest_path(root).parent
    # The copy alone: harmless, the revision log is the state (and it never hangs a reader).
    _manifest_path(root).unlink()
    os.mkfifo(_manifest_path(root))
    out = _must_not_hang(
        """
        import localrun
        print(localrun.Api().run("p/r").history(["loss"]).num_rows)
        """,
        root,
    )
    assert out.strip() == "3", out
    # Every copy of the state a FIFO: one run's clear error, the other run still listed.
    for rev in (run_dir / "log").glob("*.json"):
        rev.unlink()
        os.mkfifo(rev)
    out = _must_not_hang(
        """
        import localrun
        print([r.path for r in localrun.Api().runs()])
        try:
            localrun.Api().run("p/r")
        except localrun.CorruptRunError as exc:
            print("refused:", exc)
        """,
        root,
    )
    assert "['p/other']" in out and "refused:" in out and "FIFO" in out


# -- 4. a damaged segment is a clear error naming the file and the repair ---------------------
def _no_step_column(path: Path) -> None:
    pq.write_table(pa.table({"loss": [1.0, 2.0, 3.0]}), path)


def _wrong_kind(path: Path) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index("loss")
    pq.write_table(table.set_column(i, "loss", pa.array(["x", "y", "z"])), path)


def _fewer_rows(path: Path) -> None:
    pq.write_table(pq.read_table(path).slice(0, 1), path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: os.truncate(p, p.stat().st_size // 2),
        lambda p: p.write_bytes(os.urandom(p.stat().st_size)),
        lambda p: p.write_bytes(b""),
        _no_step_column,
        _wrong_kind,
        _fewer_rows,
    ],
    ids=["truncated", "garbage", "empty", "no-_step", "wrong-kind", "fewer-rows"],
)
def test_damaged_segment_is_a_clear_error(root: Path, damage: Any) -> None:
    run_dir = _finished_run(root, segments=2)
    seg = run_dir / "history" / "0001-000001.parquet"
    os.chmod(seg, 0o644)
    damage(seg)
    stored = localrun.Api(root).run("p/r")
    with pytest.raises(localrun.CorruptRunError) as info:
        stored.history()
    text = str(info.value)
    assert "p/r" in text and "history/0001-000001.parquet" in text
    assert "localrun verify --repair" in text


def test_verify_finds_a_damaged_segment(root: Path) -> None:
    run_dir = _finished_run(root, segments=2)
    seg = run_dir / "history" / "0001-000001.parquet"
    os.truncate(seg, seg.stat().st_size // 2)
    report = localrun.Api(root).verify("p/r")[0]
    assert not report.ok
    assert any("history/0001-000001.parquet" in p for p in report.problems)


def test_verify_over_a_root_reports_one_hostile_run_and_checks_the_others(
    root: Path, tmp_path: Path
) -> None:
    _finished_run(root, segments=1)
    with localrun.init(project="p", id="good", dir=root) as run:
        run.log({"loss": 1.0})
    history = root / "p" / "r" / "history"
    outside = tmp_path / "elsewhere"
    history.rename(outside)
    history.symlink_to(outside)  # the hostile run: its history/ leads out of the root
    reports = {r.run: r for r in localrun.Api(root).verify(repair=True)}
    assert reports["p/good"].ok
    assert not reports["p/r"].ok and "symbolic link" in " ".join(reports["p/r"].problems)
    assert sorted(p.name for p in outside.iterdir()) == ["0001-000000.parquet"]  # untouched
