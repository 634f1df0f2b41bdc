"""Reading a replica: ``localrun.Api(root="s3://bucket/prefix")`` (and ``file://``).

The replica is made the way a push makes one (objects, then revisions), here by copying a real
local root up with pyarrow; what is read from it must equal what ``Api`` reads locally: runs,
config, summary, history after a resume and a rewind, saved files and their versions. The S3 tests
run against a real Swift (``-m swift``); the same reader over ``file://`` runs in the fast suite.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyarrow import fs

import localrun
from localrun._query_remote import RemoteApi, RemoteRun
from tests.conftest import child_env
from tests.servers.swift import SwiftS3

EXE = shutil.which("localrun", path=str(Path(sys.executable).parent)) or "localrun"


def make_root(root: Path, work: Path) -> None:
    """Two projects; run p/a has two attempts, a rewind, several segments and file versions."""
    (work / "notes.txt").write_text("v1")
    run = localrun.init(
        project="p", id="a", dir=root, config={"lr": 0.1, "layers": [1, 2]}, tags=["x"]
    )
    for step in range(30):
        run.log({"loss": 1.0 / (step + 1), "acc": step / 30}, step=step)
        if step % 10 == 9:
            run.flush()  # one segment per 10 steps
    run.save(str(work / "notes.txt"), base_path=str(work))
    run.finish(exit_code=1)
    run = localrun.init(project="p", id="a", dir=root, resume="must")
    run.rewind(19)  # steps 20..29 of the first attempt are hidden from now on
    for step in range(20, 25):
        run.log({"loss": -float(step), "text": f"s{step}"}, step=step)
    (work / "notes.txt").write_text("v2")
    run.save(str(work / "notes.txt"), base_path=str(work))
    run.summary["best"] = 0.5
    run.finish()
    other = localrun.init(project="q", id="b", dir=root, notes="other project")
    other.log({"loss": 2.0})
    other.finish()


def upload(root: Path, filesystem: Any, base: str) -> None:
    """Copy a local root up as a push would: objects first, revisions (log/) last."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and "manifest" not in p.name)
    for path in sorted(files, key=lambda p: p.parent.name == "log"):
        key = f"{base}/{path.relative_to(root).as_posix()}"
        if isinstance(filesystem, fs.LocalFileSystem):  # an object store has no folders to make
            filesystem.create_dir(key.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(key) as out:
            out.write(path.read_bytes())


def same_run(remote: localrun.StoredRun, local: localrun.StoredRun) -> None:
    for field in ("id", "project", "name", "notes", "tags", "config", "state", "last_step"):
        assert getattr(remote, field) == getattr(local, field), field
    assert remote.summary == local.summary
    assert remote.keys == local.keys
    assert remote.history().equals(local.history())
    assert remote.history(all_attempts=True).equals(local.history(all_attempts=True))
    assert remote.history(["loss"]).equals(local.history(["loss"]))
    assert remote.files().keys() == local.files().keys()
    for name in local.files():
        for v in local.file_versions(name):
            with (
                remote.open_file(name, v["version"]) as r,
                local.open_file(name, v["version"]) as f,
            ):
                assert r.read() == f.read()


def check_replica(api: localrun.Api, local_root: Path) -> None:
    local = localrun.Api(local_root)
    assert isinstance(api, RemoteApi)
    assert api.projects() == ["p", "q"]
    assert [r.path for r in api.runs()] == [r.path for r in local.runs()]
    assert [r.path for r in api.runs("q")] == ["q/b"]
    for run in local.runs():
        same_run(api.run(run.path), run)
    a = api.run("p/a")
    assert a.history().column("_step").to_pylist() == list(range(25))  # the rewind applied
    with a.open_file("notes.txt") as f:
        assert f.read() == b"v2"
    assert len(a.file_versions("notes.txt")) == 2
    api.check("p/a")
    with pytest.raises(localrun.RunNotFoundError, match="no run 'p/zz'"):
        api.run("p/zz")
    assert api.damaged_runs() == []


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local root for the module: the tests only read it (each makes its own replica)."""
    base = tmp_path_factory.mktemp("local")
    work = base / "work"
    work.mkdir()
    make_root(base / "runs", work)
    return base / "runs"


def test_file_url_replica_reads_like_the_local_root(local_root: Path, tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    upload(local_root, fs.LocalFileSystem(), str(replica))
    check_replica(localrun.Api(root=replica.as_uri()), local_root)


def test_a_revision_whose_objects_are_not_all_there_is_not_used(
    local_root: Path, tmp_path: Path
) -> None:
    """A push killed between objects and revision: readers see the previous complete one."""
    replica = tmp_path / "replica"
    upload(local_root, fs.LocalFileSystem(), str(replica))
    run_dir = replica / "p" / "a"
    newest = localrun.Api(replica.as_uri()).run("p/a")
    newest_rev, newest_rows = newest.manifest["rev"], newest.history().num_rows
    last_segment = max((run_dir / "history").iterdir())
    last_segment.unlink()  # the newest revision's newest segment is not there (yet)
    older = localrun.Api(replica.as_uri()).run("p/a")
    assert older.manifest["rev"] < newest_rev
    assert last_segment.name not in {s["file"].split("/")[-1] for s in older.manifest["segments"]}
    assert older.history().num_rows < newest_rows
    # A reader holding the newer snapshot finds the segment gone and reads the complete one.
    assert newest.history().equals(older.history())
    for rev in (run_dir / "log").iterdir():
        rev.unlink()  # objects without any revision: not a run yet, and said so
    assert [d.path for d in localrun.Api(replica.as_uri()).damaged_runs()] == ["p/a"]
    assert [r.path for r in localrun.Api(replica.as_uri()).runs()] == ["q/b"]


def test_what_needs_a_local_root_is_refused_clearly(local_root: Path, tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    upload(local_root, fs.LocalFileSystem(), str(replica))
    api = localrun.Api(replica.as_uri())
    run = api.run("p/a")
    assert isinstance(run, RemoteRun)
    with pytest.raises(localrun.UsageError, match="open_file"):
        run.file_path("notes.txt")
    with pytest.raises(localrun.UsageError, match="segment_urls"):
        run.segment_paths()
    assert all(u.startswith(replica.as_uri()) for u in run.segment_urls())
    with pytest.raises(localrun.UsageError, match="read-only"):
        api.verify()
    with pytest.raises(localrun.UsageError, match="resume markers"):
        api.resume_markers()
    with pytest.raises(AttributeError, match="no local path"):
        _ = api.root
    with pytest.raises(localrun.UsageError, match="ftp:// is not a root"):
        localrun.Api("ftp://host/x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(localrun.RunNotFoundError, match="holds no localrun runs"):
        localrun.Api(empty.as_uri()).check()


def test_the_command_line_reads_a_replica(local_root: Path, tmp_path: Path) -> None:
    replica = tmp_path / "replica"
    upload(local_root, fs.LocalFileSystem(), str(replica))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = child_env(local_root, LOCALRUN_DIR=replica.as_uri())  # the variable takes a URL
        return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=120)

    listed = cli("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["path"], r["steps"]) for r in json.loads(listed.stdout)] == [("p/a", 25), ("q/b", 1)]
    history = cli("history", "p/a")
    assert history.returncode == 0, history.stderr
    assert len(history.stdout.splitlines()) == 1 + 25  # header, then steps 0..24 (rewound)
    missing = cli("ls", "nope")
    assert missing.returncode != 0
    assert "no project 'nope'" in missing.stderr and "its projects: p, q" in missing.stderr
    verify = cli("verify")
    assert verify.returncode != 0
    assert "read-only" in verify.stderr and "Traceback" not in verify.stderr


@pytest.mark.swift
def test_s3_replica_on_swift_reads_like_the_local_root(
    swift_s3: SwiftS3, local_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"{swift_s3.bucket}/replica-{secrets.token_hex(4)}"
    upload(local_root, swift_s3.filesystem(), prefix)
    # As a user sets it up: the AWS tools' variables, then a plain s3:// URL.
    monkeypatch.setenv("AWS_ENDPOINT_URL", swift_s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", swift_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", swift_s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", swift_s3.region)
    api = localrun.Api(root=f"s3://{prefix}")
    check_replica(api, local_root)
    monkeypatch.setenv("LOCALRUN_DIR", f"s3://{prefix}")  # the variable takes a URL too
    assert [r.path for r in localrun.Api().runs()] == ["p/a", "q/b"]
    assert api.run("p/a").segment_urls()[0].startswith(f"s3://{prefix}/p/a/history/")
    listed = subprocess.run(
        [EXE, "--root", f"s3://{prefix}", "ls", "--json"],
        capture_output=True,
        text=True,
        env=child_env(local_root),
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert [r["path"] for r in json.loads(listed.stdout)] == ["p/a", "q/b"]
    # The endpoint in the URL's query instead of the environment:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    query = f"?endpoint_override={swift_s3.host_port}&scheme=http"
    in_query = localrun.Api(f"s3://{prefix}{query}")
    assert in_query.location == f"s3://{prefix}"  # messages never show the query (keys)
    assert in_query.run("q/b").notes == "other project"
    # What a user gets wrong is said, not a traceback from the AWS SDK:
    with pytest.raises(localrun.RunNotFoundError, match="holds no localrun runs"):
        localrun.Api(f"s3://no-such-bucket{query}").check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(localrun.RemoteUnavailableError, match="endpoint and keys are right"):
        localrun.Api(f"s3://{prefix}{query}").runs()
