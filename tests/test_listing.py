"""Listing runs fast (issue 8, item 4): the project index is derived, rebuildable and never the
authority, so every listing shows each run's newest revision; nothing of pyarrow is imported."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import localrun
from localrun._store import listing, revisions
from localrun._store import manifest as mf
from tests.conftest import child_env

EXE = shutil.which("localrun", path=str(Path(sys.executable).parent)) or "localrun"


def make_run(root: Path, run_id: str, steps: int = 5, project: str = "p") -> None:
    with localrun.init(project=project, id=run_id, dir=root, config={"lr": 0.1}) as run:
        for i in range(steps):
            run.log({"loss": float(i)})


def index_of(root: Path, project: str = "p") -> Path:
    return root / project / listing.INDEX


def listed(root: Path, project: str | None = None) -> dict[str, localrun.StoredRun]:
    return {r.path: r for r in localrun.Api(root).runs(project)}


def newest(run_dir: Path) -> mf.Manifest:
    return revisions.newest(run_dir).manifest


def test_listing_and_ls_never_import_pyarrow(root: Path) -> None:
    """`import localrun`, Api().runs() and `localrun ls` leave pyarrow (most of a second to
    import) alone; history and the writer's names still work, imported on first use."""
    make_run(root, "a")
    code = (
        "import sys, localrun\n"
        f"runs = localrun.Api({str(root)!r}).runs()\n"
        "assert [r.path for r in runs] == ['p/a'] and runs[0].config == {'lr': 0.1}\n"
        "assert 'pyarrow' not in sys.modules, 'listing imported pyarrow'\n"
        "from localrun._cli import main\n"
        "sys.argv = ['localrun', '--root', sys.argv[1], 'ls']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'pyarrow' not in sys.modules, 'ls imported pyarrow'\n"
        "assert runs[0].history(['loss']).column('loss').to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]\n"
        "from localrun._run import init\n"
        "assert localrun.init is init and 'init' in vars(localrun)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        env=child_env(root),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "p/a" in done.stdout and "finished" in done.stdout


def test_the_step_columns_agree_with_the_schema() -> None:
    from localrun import _query
    from localrun._store import schema

    assert [f.name for f in schema.STEP_FIELDS] == _query.STEP_COLUMNS
    assert schema.NUMBER == _query.NUMBER


def test_a_listing_writes_the_index(root: Path) -> None:
    make_run(root, "a")
    make_run(root, "b", steps=3)
    listed(root)
    data = json.loads(index_of(root).read_text())
    assert set(data["runs"]) == {"a", "b"}
    assert data["runs"]["b"][0] == revisions.newest(root / "p" / "b").rev


def test_the_index_answers_without_reading_revisions(root: Path) -> None:
    """What the index holds is what the listing shows (the revision is not read): an entry
    whose identity still matches is used as it stands."""
    make_run(root, "a")
    listed(root)
    path = index_of(root)
    data = json.loads(path.read_text())
    data["runs"]["a"][4]["last_step"] = 12345  # only the index says so
    path.write_text(json.dumps(data))
    assert listed(root)["p/a"].last_step == 12345
    assert localrun.Api(root).run("p/a").last_step == 4  # the authority, read directly


def test_a_new_commit_is_seen_at_once(root: Path) -> None:
    run = localrun.init(project="p", id="live", dir=root, flush_interval=3600)
    run.log({"loss": 1.0})
    run.flush()
    assert listed(root)["p/live"].last_step == 0
    for i in range(1, 4):
        run.log({"loss": float(i)})
    run.flush()
    shown = listed(root)["p/live"]
    assert shown.last_step == 3 and shown.state == "running"
    run.finish()
    shown = listed(root)["p/live"]
    assert shown.state == "finished" and shown.heartbeat_age is None


def test_heartbeats_are_seen_though_the_copy_skips_them(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat-only commit leaves manifest.json behind; the listing follows log/."""
    monkeypatch.setenv("LOCALRUN_LEASE_TTL", "1")  # a heartbeat commit every third of a second
    run = localrun.init(project="p", id="live", dir=root, flush_interval=3600)
    run_dir = root / "p" / "live"
    try:
        run.log({"loss": 1.0})
        run.flush()
        listed(root)  # indexed at the flush's revision
        copy = json.loads((run_dir / "manifest.json").read_text())
        deadline = time.monotonic() + 30
        while newest(run_dir)["rev"] < copy["rev"] + 2:  # two heartbeats committed
            assert time.monotonic() < deadline, "no heartbeat commit"
            time.sleep(0.05)
        state = newest(run_dir)  # the listing below sees this revision or a newer one
        shown = listed(root)["p/live"]
        assert json.loads((run_dir / "manifest.json").read_text())["rev"] == copy["rev"]
        hb = state["owner"]["hb_time"]  # type: ignore[index]
        assert shown.heartbeat_age is not None
        assert shown.heartbeat_age <= time.time() - hb + 0.01
        assert shown.state == "running"
        assert shown.manifest["rev"] >= state["rev"]
    finally:
        run.finish()


def test_a_run_made_anew_under_the_same_id_is_read_afresh(root: Path) -> None:
    make_run(root, "a", steps=5)
    assert listed(root)["p/a"].last_step == 4
    shutil.rmtree(root / "p" / "a")
    make_run(root, "a", steps=2)  # same revision numbers, other files
    assert listed(root)["p/a"].last_step == 1


def test_a_revision_damaged_after_listing_shows_as_damaged(root: Path) -> None:
    make_run(root, "a")
    listed(root)
    for rev in (root / "p" / "a" / "log").iterdir():
        rev.write_text("{not json")
    assert listed(root) == {}
    [damaged] = localrun.Api(root).damaged_runs()
    assert damaged.path == "p/a" and "not valid JSON" in damaged.problem


def test_removed_runs_leave_the_index(root: Path) -> None:
    make_run(root, "a")
    make_run(root, "b")
    listed(root)
    shutil.rmtree(root / "p" / "b")
    assert set(listed(root)) == {"p/a"}
    assert set(json.loads(index_of(root).read_text())["runs"]) == {"a"}


@pytest.mark.parametrize(
    "content",
    [
        "{garbage",
        "[]",
        '{"index": 99, "runs": {}}',
        '{"index": 1, "fields": ["id"], "runs": {"a": [1, 2, 3, 4, {}]}}',
        "BAD_ENTRY",
    ],
)
def test_a_damaged_or_foreign_index_is_ignored_and_rebuilt(root: Path, content: str) -> None:
    make_run(root, "a")
    truth = listed(root)["p/a"]
    if content == "BAD_ENTRY":  # right header, an entry of the wrong shape
        data = json.loads(index_of(root).read_text())
        data["runs"]["a"][4]["last_step"] = "many"
        content = json.dumps(data)
    index_of(root).write_text(content)
    shown = listed(root)["p/a"]
    assert (shown.state, shown.last_step, shown.created) == (
        truth.state,
        truth.last_step,
        truth.created,
    )
    assert json.loads(index_of(root).read_text())["runs"]["a"][4]["last_step"] == 4


def test_an_index_that_cannot_be_written_costs_only_speed(root: Path) -> None:
    make_run(root, "a")
    index_of(root).mkdir()  # a rename over it fails
    assert [r.path for r in localrun.Api(root).runs()] == ["p/a"]
    assert [r.path for r in localrun.Api(root).runs()] == ["p/a"]
    assert not [p for p in (root / "p").iterdir() if ".tmp-" in p.name]  # no temp left


def test_a_listed_run_reads_the_rest_of_its_revision_later(root: Path) -> None:
    make_run(root, "a")
    listed(root)
    run = listed(root)["p/a"]  # from the index
    direct = localrun.Api(root).run("p/a")
    assert run.manifest == direct.manifest
    assert (run.config, run.summary, run.keys) == (direct.config, direct.summary, direct.keys)
    assert run.history(["loss"]).equals(direct.history(["loss"]))


def test_a_listed_revision_pruned_before_it_is_read_gives_the_newest(root: Path) -> None:
    make_run(root, "a")
    run_dir = root / "p" / "a"
    listed(root)
    run = listed(root)["p/a"]  # from the index: its revision is not read yet
    rev = revisions.newest(run_dir).rev
    mf.update(run_dir, lambda m: m.update(notes="later"))  # a new revision
    (run_dir / "log" / f"{rev:012d}.json").unlink()  # pruned, as after 64 newer ones
    assert run.notes == "later" and run.manifest["rev"] == rev + 1


def test_format_1_runs_are_listed_and_not_indexed(root: Path) -> None:
    make_run(root, "a")
    run_dir = root / "p" / "a"
    m = newest(run_dir)
    shutil.rmtree(run_dir / "log")
    m["format"] = 1
    (run_dir / "manifest.json").write_text(json.dumps(m))
    assert listed(root)["p/a"].last_step == 4
    assert not index_of(root).exists()  # reading a root of format 1 writes nothing


def test_ls_table_is_drawn_as_rich_draws_it() -> None:
    """The direct drawing of a wide enough table is rich's, character for character (wide
    characters included)."""
    from rich.console import Console

    from localrun import _cli

    columns = ["run", "state", "problem"]
    rows = [["p/a", "finished", "-"], ["p/日本-x", "damaged", "the run: log/ is é"]]
    table = _cli._table(*columns)
    for row in rows:
        table.add_row(*row)
    console = Console(file=io.StringIO(), soft_wrap=True, width=_cli.PIPE_WIDTH)
    console.print(table)
    drawn = io.StringIO()
    with redirect_stdout(drawn):
        _cli._print_table(columns, rows)
    assert drawn.getvalue() == console.file.getvalue()  # type: ignore[attr-defined]


def test_ls_of_many_runs_lists_each_once(root: Path) -> None:
    """Copies of one run folder under other ids (as benchmarks/bench_list.py makes them)."""
    make_run(root, "r000")
    for i in range(1, 40):
        dst = root / ("p" if i % 2 else "q") / f"r{i:03d}"
        shutil.copytree(root / "p" / "r000", dst)
        for f in [dst / "manifest.json", *(dst / "log").iterdir()]:
            m = json.loads(f.read_text())
            m.update(project=dst.parent.name, id=dst.name, name=dst.name)
            f.write_text(json.dumps(m))
    for _ in range(2):  # without, then with the index
        done = subprocess.run(
            [EXE, "--root", str(root), "ls"],
            capture_output=True,
            text=True,
            env=child_env(root),
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("│")]
        assert sorted(ln.split("│")[1].strip() for ln in lines) == sorted(
            f"{'p' if i % 2 or i == 0 else 'q'}/r{i:03d}" for i in range(40)
        )


def test_a_live_runs_commits_do_not_rewrite_the_index_but_its_end_does(root: Path) -> None:
    make_run(root, "a")
    run = localrun.init(project="p", id="live", dir=root, flush_interval=3600)
    run.log({"loss": 1.0})
    run.flush()
    listed(root)
    written = index_of(root).stat().st_ino  # a rewrite replaces the file: a new inode
    run.log({"loss": 2.0})
    run.flush()
    assert listed(root)["p/live"].last_step == 1  # read from log/: its entry is stale
    assert index_of(root).stat().st_ino == written
    run.finish()
    assert listed(root)["p/live"].state == "finished"
    assert index_of(root).stat().st_ino != written
    assert json.loads(index_of(root).read_text())["runs"]["live"][4]["state"] == "finished"


def test_runs_and_damaged_is_runs_and_damaged_runs_in_one_walk(root: Path) -> None:
    make_run(root, "a")
    make_run(root, "b")
    for rev in (root / "p" / "b" / "log").iterdir():
        rev.write_text("[]")
    (root / "p" / "empty").mkdir()  # not a run, not damaged
    api = localrun.Api(root)
    for _ in range(2):  # without, then with the index
        runs, damaged = api.runs_and_damaged()
        assert [r.path for r in runs] == [r.path for r in api.runs()] == ["p/a"]
        assert damaged == api.damaged_runs()
        assert [(d.path, "not a localrun run state" in d.problem) for d in damaged] == [
            ("p/b", True)
        ]
