"""The command line, through the real `localrun` executable."""

from __future__ import annotations

import csv
import io
import json
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
    (run_dir / "manifest.json").write_text("{ not json")
    report = cli(two_runs, "verify", "p/a", "--json")
    assert report.returncode == 1
    problems = json.loads(report.stdout)[0]["problems"]
    assert any("manifest" in p for p in problems)
    repaired = cli(two_runs, "verify", "p/a", "--repair")
    assert "rebuilt manifest.json" in repaired.stdout
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
