"""Each attempt records where it ran: git state, command line, interpreter, packages, job id."""

from __future__ import annotations

import subprocess
from pathlib import Path

import localrun
from tests.conftest import run_py
from tests.test_cli import cli


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _attempt_context(root: Path, path: str, attempt: int) -> dict:
    run = localrun.Api(root).run(path)
    return next(a for a in run.attempts if a["attempt"] == attempt)["context"]


def test_each_attempt_records_its_git_state_and_job(root: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("print('v1')\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "v1")
    first_commit = _git(repo, "rev-parse", "HEAD")
    code = f"""
    import os, sys, localrun
    os.chdir({str(repo)!r})
    sys.argv = ["train.py", "--lr", "0.1"]
    with localrun.init(project="c", id="r", resume="allow") as run:
        run.log({{"loss": 1.0}})
    """
    out = run_py(code, root, SLURM_JOB_ID="4242", SLURM_ARRAY_TASK_ID="3")
    assert out.returncode == 0, out.stderr
    ctx = _attempt_context(root, "c/r", 1)
    assert ctx["git"] == {"commit": first_commit, "branch": "main", "dirty": False}
    assert ctx["argv"] == ["train.py", "--lr", "0.1"]
    assert ctx["cwd"] == str(repo)
    assert ctx["job"] == {"scheduler": "slurm", "id": "4242", "array_task": "3"}
    assert "localrun-tracker" in ctx["packages"] and "pyarrow" in ctx["packages"]
    assert ctx["python"].count(".") == 2 and ctx["host"]
    # The second attempt, from a changed checkout: its own context, with the uncommitted diff.
    (repo / "train.py").write_text("print('v2')\n")
    out = run_py(code, root)
    assert out.returncode == 0, out.stderr
    second = _attempt_context(root, "c/r", 2)
    assert second["git"]["commit"] == first_commit and second["git"]["dirty"] is True
    diff = (root / "c" / "r" / second["git"]["diff_file"]).read_text()
    assert "+print('v2')" in diff and len(diff.encode()) == second["git"]["diff_bytes"]
    assert "diff" not in second["git"]  # a blob of its own, not a part of every revision
    assert second["job"] is None
    assert _attempt_context(root, "c/r", 1)["git"]["dirty"] is False  # the first one is kept
    shown = cli(root, "show", "c/r", COLUMNS="200")
    assert shown.returncode == 0, shown.stderr
    assert f"{first_commit[:10]} main +dirty" in shown.stdout and "slurm 4242" in shown.stdout


def test_outside_a_checkout_there_is_no_git_and_a_short_run_still_has_its_context(
    root: Path, tmp_path: Path
) -> None:
    code = f"""
    import os, localrun
    os.chdir({str(tmp_path)!r})
    localrun.init(project="c", id="short").finish()
    """
    out = run_py(code, root, GIT_CEILING_DIRECTORIES=str(tmp_path.parent))
    assert out.returncode == 0, out.stderr
    ctx = _attempt_context(root, "c/short", 1)
    assert ctx["git"] is None
    assert ctx["cwd"] == str(tmp_path)
