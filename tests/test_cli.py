"""The command line, through the real `localrun` executable."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import localrun
from tests.conftest import child_env

EXE = shutil.which("localrun", path=str(Path(sys.executable).parent)) or "localrun"


def cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, "--root", str(root), *args],
        capture_output=True,
        text=True,
        env=child_env(root, **env),
        timeout=120,
    )


@pytest.fixture
def two_runs(root: Path) -> Path:
    with localrun.init(project="p", id="a", dir=root, config={"lr": 0.1}, notes="first") as run:
        for i in range(5):
            run.log({"loss": 1.0 / (i + 1), "tag": f"t{i}"})
    with pytest.raises(RuntimeError), localrun.init(project="q", id="b", dir=root) as run:
        run.log({"loss": 2.0})
        raise RuntimeError("boom")
    return root


def test_ls_lists_runs_with_state_and_steps(two_runs: Path) -> None:
    result = cli(two_runs, "ls", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["path"]: r for r in json.loads(result.stdout)}
    assert rows["p/a"]["state"] == "finished" and rows["p/a"]["steps"] == 5
    assert rows["q/b"]["state"] == "failed" and rows["q/b"]["steps"] == 1
    table = cli(two_runs, "ls", "p")
    assert "p/a" in table.stdout and "q/b" not in table.stdout and "finished" in table.stdout


def test_show_prints_manifest_config_summary_attempts(two_runs: Path) -> None:
    text = cli(two_runs, "show", "p/a").stdout
    for needle in ("p/a", "first", "lr", "0.1", "loss", "attempts", "finished"):
        assert needle in text
    manifest = json.loads(cli(two_runs, "show", "p/a", "--json").stdout)
    assert manifest["config"] == {"lr": 0.1} and manifest["last_step"] == 4


def test_history_formats(two_runs: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(cli(two_runs, "history", "p/a", "-k", "loss").stdout)))
    assert [float(r["loss"]) for r in rows] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert set(rows[0]) == {"_step", "_timestamp", "_runtime", "loss"}
    lines = cli(
        two_runs, "history", "p/a", "--format", "json", "-k", "loss,tag"
    ).stdout.splitlines()
    assert json.loads(lines[-1])["tag"] == "t4"
    out = tmp_path / "h.parquet"
    assert cli(two_runs, "history", "p/a", "--format", "parquet", "-o", str(out)).returncode == 0
    assert pq.read_table(out).num_rows == 5
    refused = cli(two_runs, "history", "p/a", "--format", "parquet")
    assert refused.returncode == 2 and "--output" in refused.stderr


def test_errors_are_one_line_with_their_exit_code(two_runs: Path) -> None:
    missing = cli(two_runs, "show", "p/nope")
    assert missing.returncode == localrun.RunNotFoundError.exit_code == 3
    assert missing.stderr.strip().startswith("localrun: error: no run 'p/nope'")
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = cli(two_runs, "show", "no-slash")
    assert bad.returncode == 2 and "project/run_id" in bad.stderr
    unknown_key = cli(two_runs, "history", "p/a", "-k", "los")
    assert unknown_key.returncode == 2 and "no key 'los'" in unknown_key.stderr


def test_verify_reports_and_repairs(two_runs: Path) -> None:
    assert cli(two_runs, "verify").returncode == 0
    run_dir = two_runs / "p" / "a"
    stray = run_dir / "history" / "0001-000000.parquet.tmp-otherhost-1-abcd"
    stray.write_bytes(b"partial")
    for f in [run_dir / "manifest.json", *(run_dir / "log").glob("*.json")]:
        f.write_text("{ not json")  # every copy of the run's state damaged
    report = cli(two_runs, "verify", "p/a", "--json")
    assert report.returncode == 1
    problems = json.loads(report.stdout)[0]["problems"]
    assert any("state" in p for p in problems)
    repaired = cli(two_runs, "verify", "p/a", "--repair")
    assert "rebuilt the run's state from its segments" in repaired.stdout
    stored = localrun.Api(two_runs).run("p/a")
    assert stored.history().num_rows == 5 and stored.config == {"lr": 0.1}
    assert list(run_dir.glob("manifest.json.corrupt-*"))  # the broken one is kept, not deleted


def test_demo_tells_the_preemption_story(root: Path) -> None:
    result = cli(root, "demo", "--steps", "60")
    assert result.returncode == 0, result.stderr
    assert "preempted" in result.stdout and "each step once: True" in result.stdout
    (run,) = localrun.Api(root).runs("demo")
    assert [a["state"] for a in run.attempts] == ["crashed", "finished"]
    assert run.history().column("_step").to_pylist() == list(range(60))


# -- the command line tells the truth (issue 7, item 10) ------------------------------------------


def raw_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The executable with exactly ``args`` and ``env`` (no --root added, no LOCALRUN_DIR)."""
    base = {k: v for k, v in child_env(Path("unused")).items() if k != "LOCALRUN_DIR"}
    return subprocess.run(
        [EXE, *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=cwd,
        timeout=120,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localrun: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.stdout == ""  # never an empty table


READERS = [
    ("ls",),
    ("show", "p/a"),
    ("history", "p/a"),
    ("verify",),
    ("markers",),
]


@pytest.mark.parametrize("args", READERS, ids=lambda a: a[0])
def test_a_root_that_is_not_one_is_an_error_naming_it(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-root"
    assert_one_line_error(cli(missing, *args), 3, str(missing), "does not exist", "--root")
    assert_one_line_error(
        raw_cli(*args, LOCALRUN_DIR=str(missing)), 3, str(missing), "LOCALRUN_DIR"
    )
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a root")
    assert_one_line_error(cli(a_file, *args), 2, str(a_file), "is a file")
    foreign = tmp_path / "home"  # folders in folders, but no marker and no run
    (foreign / "src" / "pkg").mkdir(parents=True)
    (foreign / "src" / "pkg" / "x.py").write_text("")
    assert_one_line_error(cli(foreign, *args), 3, str(foreign), "not a localrun root")


def test_an_unknown_project_or_run_is_an_error_naming_it(two_runs: Path) -> None:
    for args in (("ls", "nosuch"), ("verify", "nosuch"), ("markers", "--project", "nosuch")):
        assert_one_line_error(cli(two_runs, *args), 3, "no project 'nosuch'", "p, q")
    for cmd in ("show", "history", "verify"):
        assert_one_line_error(cli(two_runs, cmd, "nosuch/a"), 3, "no project 'nosuch'", "p, q")
        assert_one_line_error(cli(two_runs, cmd, "p/nope"), 3, "no run 'p/nope'", "localrun ls p")
    assert_one_line_error(cli(two_runs, "ls", "p/a"), 2, "localrun show p/a")


def test_a_fresh_root_with_no_runs_is_not_an_error(root: Path) -> None:
    with localrun.init(project="p", id="a", dir=root):
        pass
    shutil.rmtree(root / "p")  # the root keeps its localrun.json marker
    listed = cli(root, "ls")
    assert listed.returncode == 0 and "no runs under" in listed.stdout


def _damaged_root(root: Path) -> Path:
    with localrun.init(project="p", id="good", dir=root) as run:
        for i in range(3):
            run.log({"loss": float(i)})
    good = root / "p" / "good"
    for name, content in (("garbage", "{ not json"), ("a-list", "[1, 2]")):
        shutil.copytree(good, root / "p" / name)
        state = root / "p" / name
        for f in [state / "manifest.json", *(state / "log").glob("*.json")]:
            f.write_text(content)  # every copy of the run's state damaged
    shutil.copytree(good, root / "p" / "no-manifest")
    (root / "p" / "no-manifest" / "manifest.json").unlink()  # its segments remain
    shutil.rmtree(root / "p" / "no-manifest" / "log")
    (root / "p" / "empty").mkdir()  # a stray empty folder is not a run
    shutil.copytree(good / "history", root / "p" / ".sync" / "history")  # dot-folders: never
    return root


def test_ls_shows_damaged_runs_with_a_reason(root: Path) -> None:
    _damaged_root(root)
    result = cli(root, "ls", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["path"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"p/good", "p/garbage", "p/a-list", "p/no-manifest"}
    assert rows["p/good"]["state"] == "finished" and "problem" not in rows["p/good"]
    assert set(rows["p/good"]) == {
        "path", "name", "state", "steps", "attempts", "updated", "host", "heartbeat_age"
    }  # fmt: skip
    for path in ("p/garbage", "p/a-list", "p/no-manifest"):
        assert rows[path]["state"] == "damaged" and "log/" in rows[path]["problem"]
    assert "not valid JSON" in rows["p/garbage"]["problem"]
    assert "not a localrun run state" in rows["p/a-list"]["problem"]
    assert "missing" in rows["p/no-manifest"]["problem"]
    assert "segment" in rows["p/no-manifest"]["problem"]
    table = cli(root, "ls").stdout
    for path in ("p/garbage", "p/a-list", "p/no-manifest"):
        (line,) = [ln for ln in table.splitlines() if path in ln]
        assert "damaged" in line and "log/" in line
    assert "p/empty" not in table and ".sync" not in table
    assert "localrun verify --repair" in table


def test_api_damaged_runs_are_exactly_those_runs_leaves_out(root: Path) -> None:
    api = localrun.Api(_damaged_root(root))
    assert [r.path for r in api.runs()] == ["p/good"]
    damaged = api.damaged_runs("p")
    assert [(d.path, d.project, d.id) for d in damaged] == [
        ("p/a-list", "p", "a-list"),
        ("p/garbage", "p", "garbage"),
        ("p/no-manifest", "p", "no-manifest"),
    ]
    assert all(str(root) not in d.problem for d in damaged)  # relative to the run
    with pytest.raises(AttributeError):
        damaged[0].problem = "fine"  # type: ignore[misc]
    assert isinstance(damaged[0], localrun.DamagedRun)


def test_ids_are_never_cut_when_piped(root: Path) -> None:
    run_id = "r" * 60 + "-end"
    assert len(run_id) == 64
    with localrun.init(project="a-long-project-name", id=run_id, dir=root) as run:
        run.log({"loss": 1.0})
    path = f"a-long-project-name/{run_id}"
    for args in (("ls",), ("show", path), ("verify",)):
        out = cli(root, *args, COLUMNS="40").stdout  # a pipe, and a narrow COLUMNS
        assert path in out and "…" not in out, out
        assert all(path in line for line in out.splitlines() if "rrrr" in line)
    (row,) = json.loads(cli(root, "ls", "--json").stdout)
    assert row["path"] == path and row["name"] == run_id


def test_ids_fold_but_are_not_cut_in_a_narrow_terminal(root: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    run_id = "x" * 56 + "-preempt"
    with localrun.init(project="p", id=run_id, dir=root) as run:
        run.log({"loss": 1.0})
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    proc = subprocess.Popen(
        [EXE, "--root", str(root), "ls"],
        stdout=slave,
        stderr=slave,
        env={**child_env(root), "NO_COLOR": "1", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    assert "…" not in text, text
    # the id's pieces, top to bottom in the first column, make the whole id
    first_column = [ln.split("│")[1].strip() for ln in text.splitlines() if ln.startswith("│")]
    assert run_id in "".join(first_column), text


@pytest.mark.parametrize(
    "args",
    [("ls",), ("show", "p/a"), ("history", "p/a"), ("verify",), ("markers",)],
    ids=lambda a: a[0],
)
def test_root_works_before_and_after_the_subcommand_and_from_the_env(
    args: tuple[str, ...], two_runs: Path, tmp_path: Path
) -> None:
    wrong = str(tmp_path / "wrong")
    after = raw_cli(*args, "--root", str(two_runs), LOCALRUN_DIR=wrong)
    assert after.returncode == 0, after.stderr
    both = raw_cli("--root", wrong, *args, "--root", str(two_runs))  # the later one wins
    assert both.returncode == 0, both.stderr
    before = raw_cli("--root", str(two_runs), *args, LOCALRUN_DIR=wrong)
    env = raw_cli(*args, LOCALRUN_DIR=str(two_runs))
    assert before.returncode == env.returncode == 0, (before.stderr, env.stderr)
    assert after.stdout.replace(" ", "") == before.stdout.replace(" ", "")
    assert after.stdout.strip()
    assert raw_cli(*args, LOCALRUN_DIR=wrong).returncode == 3  # the wrong one is really wrong


def test_root_after_run_and_markers_clear(root: Path, tmp_path: Path) -> None:
    result = raw_cli(
        "run",
        "--root",
        str(root),
        "--",
        sys.executable,
        "-c",
        "import os; print(os.environ['LOCALRUN_DIR'])",
        LOCALRUN_DIR=str(tmp_path / "wrong"),
    )
    assert result.returncode == 0 and result.stdout.strip() == str(root), result.stderr
    _failed_auto_run(root, tmp_path)
    cleared = raw_cli("markers", "clear", "--all", "--root", str(root))
    assert cleared.returncode == 0 and "cleared marker p/" in cleared.stdout, cleared.stderr


def test_show_lists_saved_files_and_rewinds(root: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(6):
            run.log({"loss": float(i)})
            if i in (1, 3):
                ckpt.write_bytes(b"w" * (1000 * i))
                run.save(str(ckpt))
        run.rewind(3)
        run.log({"loss": -1.0})
    stored = localrun.Api(root).run("p/r")
    latest = stored.files()["model.ckpt"]
    (rewind,) = stored.manifest["rewinds"]
    text = cli(root, "show", "p/r").stdout
    lines = text.splitlines()
    (file_row,) = [ln for ln in lines if "model.ckpt" in ln]
    cells = [c.strip() for c in file_row.split("│")[1:-1]]
    assert cells[:4] == ["model.ckpt", "2", "2.9 KiB", latest["version"]], cells
    assert "rewinds" in text
    header = lines.index(next(ln for ln in lines if ln.startswith("rewinds")))
    rewind_rows = [ln for ln in lines[header:] if ln.startswith("│")]
    cells = [c.strip() for c in rewind_rows[0].split("│")[1:-1]]
    assert cells == [str(rewind["attempt"]), str(rewind["seq"]), "3"]


def _failed_auto_run(root: Path, workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A training script with resume=True that fails: its job's marker stays behind."""
    script = workdir / "train.py"
    script.write_text(
        "import localrun\n"
        "run = localrun.init(project='p', resume=True)\n"
        "print(run.id)\n"
        "run.log({'loss': 1.0})\n"
        "raise RuntimeError('a bug')\n"
    )
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=child_env(root, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_markers_lists_and_clears_a_jobs_auto_resume_marker(root: Path, tmp_path: Path) -> None:
    first = _failed_auto_run(root, tmp_path)
    run_id = first.stdout.strip()
    again = _failed_auto_run(root, tmp_path)
    assert again.stdout.strip() == run_id  # the marker resumes the failed run: the trap
    listed = cli(root, "markers", "--json")
    assert listed.returncode == 0, listed.stderr
    (marker,) = json.loads(listed.stdout)
    assert marker["project"] == "p" and marker["run_id"] == run_id
    assert marker["state"] == "failed" and marker["written"] > 0
    key = marker["key"]
    table = cli(root, "markers").stdout
    assert key in table and run_id in table and "failed" in table
    unknown = cli(root, "markers", "clear", "no-such-key")
    assert_one_line_error(unknown, 3, "no-such-key", key)
    assert cli(root, "markers", "clear").returncode == 2  # which one?
    cleared = cli(root, "markers", "clear", key, "--project", "p")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.splitlines() == [
        f"cleared marker p/{key} (it named run {run_id}); that job's next start makes a new run"
    ]
    assert json.loads(cli(root, "markers", "--json").stdout) == []
    fresh = _failed_auto_run(root, tmp_path)
    assert fresh.stdout.strip() != run_id  # the way out: a new run


def test_markers_clear_current_and_all(root: Path, tmp_path: Path) -> None:
    _failed_auto_run(root, tmp_path, LOCALRUN_RESUME_KEY="job-7")
    (tmp_path / "other").mkdir()
    _failed_auto_run(root, tmp_path / "other")
    keys = {m.key for m in localrun.Api(root).resume_markers()}
    assert len(keys) == 2 and "key-job-7" in keys
    no_key = cli(root, "markers", "clear", "--current")
    assert_one_line_error(no_key, 2, "LOCALRUN_RESUME_KEY", "localrun markers")
    current = cli(root, "markers", "clear", "--current", LOCALRUN_RESUME_KEY="job-7")
    assert current.returncode == 0 and "p/key-job-7" in current.stdout, current.stderr
    assert {m.key for m in localrun.Api(root).resume_markers("p")} == keys - {"key-job-7"}
    everything = cli(root, "markers", "clear", "--all", "--project", "p")
    assert everything.returncode == 0 and len(everything.stdout.splitlines()) == 1
    assert localrun.Api(root).resume_markers() == []


def test_api_resume_markers(root: Path, tmp_path: Path) -> None:
    run_id = _failed_auto_run(root, tmp_path).stdout.strip()
    api = localrun.Api(root)
    (marker,) = api.resume_markers()
    assert isinstance(marker, localrun.ResumeMarker)
    assert (marker.project, marker.run_id) == ("p", run_id) and marker.file.is_file()
    with pytest.raises(localrun.RunNotFoundError, match=marker.key):
        api.clear_resume_marker("p", "nope")
    assert api.clear_resume_marker("p", marker.key) == marker
    assert not marker.file.exists() and api.resume_markers() == []


def test_the_shell_blocks_in_cli_md_run_as_written(root: Path, tmp_path: Path) -> None:
    with localrun.init(project="mnist", id="exp-42", dir=root) as run:
        for i in range(4):
            run.log({"loss": float(i)})
        (tmp_path / "model.pt").write_bytes(b"w")
        run.save(str(tmp_path / "model.pt"))
        run.rewind(1)
    script = tmp_path / "train.py"
    script.write_text("import localrun\nlocalrun.init(project='mnist', resume=True)\n1 / 0\n")
    subprocess.run([sys.executable, str(script)], env=child_env(root), timeout=120, check=False)
    assert localrun.Api(root).resume_markers("mnist")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", doc, re.S)
    assert len(blocks) >= 4
    env = {**child_env(root), "PATH": f"{Path(EXE).parent}{os.pathsep}{os.environ['PATH']}"}
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (block, result.stdout, result.stderr)
        assert "error" not in result.stderr, (block, result.stderr)
    assert localrun.Api(root).resume_markers("mnist") == []  # the clear block cleared it
