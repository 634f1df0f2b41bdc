"""Sync to replica remotes (file://, s3://): each guarantee of DESIGN §8 with real processes.

A synced remote is a localrun root: ``localrun.Api`` reads it and must see exactly what it sees
locally. Syncers run as real ``localrun sync`` processes (killed with SIGKILL at random instants,
raced at a barrier); writers run in subprocesses while their run is pushed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import localrun
from tests.conftest import child_env, run_py, spawn, start_at_barrier, track

TRIALS = int(os.environ.get("LOCALRUN_SYNC_TRIALS", "10"))


# -- helpers ----------------------------------------------------------------------------------


def make_run(root: Path, project: str, run_id: str, steps: int = 50, **init: object) -> None:
    """A finished run with history over a few flushes, config and two versions of a file."""
    run = localrun.init(project=project, id=run_id, dir=root, config={"lr": 0.1}, **init)
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1), "acc": i / steps, "tag": f"s{i}"})
        if i % 10 == 9:
            run.flush()
    base = root.parent / f"payload-{project}-{run_id}"
    (base / "ckpt").mkdir(parents=True, exist_ok=True)
    for size in (3000, 5000):
        (base / "ckpt/model.bin").write_bytes(os.urandom(size))
        run.save(str(base / "ckpt/model.bin"), base_path=str(base))
    run.finish()


def cli(
    root: Path, *args: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localrun._cli", "--root", str(root), *args],
        env=child_env(root, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sync(root: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = cli(root, "sync", "--to", url, *args, **env)
    return done


def url_of(path: Path) -> str:
    return "file://" + str(path)


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path -> (size, mtime_ns)."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath, n)
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def newest_revision_bytes(run_dir: Path) -> bytes:
    return max(p for p in (run_dir / "log").iterdir() if ".tmp-" not in p.name).read_bytes()


def assert_same(local_root: Path, remote_root: Path, killed: bool = False) -> None:
    """The remote holds every local run exactly: state, rows (all attempts too), files.

    ``killed``: a syncer was SIGKILLed mid-copy, which leaves its temp file (ignored by every
    reader, like a killed writer's); without a kill there must be none.
    """
    here, there = localrun.Api(local_root), localrun.Api(remote_root)
    local_runs = {r.path: r for r in here.runs()}
    remote_runs = {r.path: r for r in there.runs()}
    assert sorted(remote_runs) == sorted(local_runs)
    for path, mine in local_runs.items():
        theirs = remote_runs[path]
        assert theirs.manifest == mine.manifest, path
        assert theirs.history().equals(mine.history()), path
        assert theirs.history(all_attempts=True).equals(mine.history(all_attempts=True)), path
        for name in mine.files():
            for v in mine.file_versions(name):
                with (
                    mine.open_file(name, v["version"]) as a,
                    theirs.open_file(name, v["version"]) as b,
                ):
                    assert a.read() == b.read(), (path, name, v["version"])
        newest = newest_revision_bytes(mine.dir)
        assert newest_revision_bytes(theirs.dir) == newest
        assert (theirs.dir / "manifest.json").read_bytes() == newest
    if not killed:
        assert not [p for p in files_of(remote_root) if ".tmp-" in p]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "remote"


# -- a synced root is a root --------------------------------------------------------------------


def test_a_synced_remote_reads_like_the_local_root_and_a_second_sync_changes_nothing(
    root: Path, remote: Path
) -> None:
    make_run(root, "vision", "a")
    make_run(root, "vision", "b", steps=5)
    make_run(root, "nlp", "c")
    done = sync(root, url_of(remote))
    assert done.returncode == 0, done.stderr
    assert "3 runs, 3 pushed" in done.stdout
    assert_same(root, remote)

    before = files_of(remote)
    again = sync(root, url_of(remote))
    assert again.returncode == 0, again.stderr
    assert "0 pushed" in again.stdout and "3 already there" in again.stdout
    # Without cursors (a new node, a lost .sync/) the remote is asked, and still nothing moves.
    shutil.rmtree(root / ".sync")
    third = sync(root, url_of(remote))
    assert third.returncode == 0, third.stderr
    assert files_of(remote) == before  # no file added, none rewritten (mtimes unchanged)


def test_sync_never_changes_local_data(root: Path, remote: Path) -> None:
    make_run(root, "p", "a")
    runs = {p: v for p, v in files_of(root).items() if not p.startswith(".sync/")}
    assert sync(root, url_of(remote)).returncode == 0
    after = {p: v for p, v in files_of(root).items() if not p.startswith(".sync/")}
    assert after == runs


def test_duckdb_reads_the_remote_segments_in_place(root: Path, remote: Path) -> None:
    make_run(root, "p", "a", steps=40)
    make_run(root, "p", "b", steps=7)
    assert sync(root, url_of(remote)).returncode == 0
    rows = duckdb.sql(
        f"SELECT count(*), sum(loss) FROM read_parquet('{remote}/p/*/history/*.parquet', "
        "union_by_name = true)"
    ).fetchall()[0]
    local = [localrun.Api(root).run(f"p/{r}").history(format="pandas") for r in ("a", "b")]
    assert rows[0] == 47
    assert rows[1] == pytest.approx(sum(float(t["loss"].sum()) for t in local))


# -- kills, races, live runs ------------------------------------------------------------------


def _big_root(root: Path) -> None:
    """Runs with enough bytes that a sync takes a while (so kills land inside it)."""
    for i in range(4):
        make_run(root, "p", f"r{i}", steps=60)
        with localrun.init(project="p", id=f"r{i}", dir=root, resume="must") as run:
            big = root.parent / "big" / "weights.bin"
            big.parent.mkdir(exist_ok=True)
            big.write_bytes(os.urandom(4_000_000))
            run.save(str(big), base_path=str(big.parent))


def test_sigkill_at_random_instants_then_a_rerun_makes_the_remote_equal(
    root: Path, tmp_path: Path
) -> None:
    _big_root(root)
    started = time.monotonic()
    probe = sync(root, url_of(tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr
    full = time.monotonic() - started
    rng = random.Random(int(os.environ.get("LOCALRUN_SYNC_SEED", "0")) or None)
    killed_inside = 0
    for trial in range(TRIALS):
        remote = tmp_path / f"remote-{trial}"
        proc = track(
            subprocess.Popen(
                [sys.executable, "-m", "localrun._cli", "--root", str(root), "sync", "--to",
                 url_of(remote)],
                env=child_env(root),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        time.sleep(rng.uniform(0, full))
        proc.send_signal(signal.SIGKILL)
        killed_inside += proc.wait() == -signal.SIGKILL
        if trial % 2:  # half the reruns start without the cursors the killed syncer wrote
            shutil.rmtree(root / ".sync", ignore_errors=True)
        done = sync(root, url_of(remote))
        assert done.returncode == 0, (trial, done.stderr)
        assert_same(root, remote, killed=True)
    print(f"{killed_inside} of {TRIALS} syncers were killed before they finished")
    assert killed_inside > 0


def test_two_syncers_racing_on_one_remote_converge(
    root: Path, remote: Path, tmp_path: Path
) -> None:
    _big_root(root)
    go = tmp_path / "go"
    code = f"""
        from pathlib import Path
        from localrun._sync import engine, urls
        root = Path({str(root)!r})
        remote = urls.open_remote({url_of(remote)!r})
        summary = engine.sync_pass(root, remote, engine.select(root, None))
        assert not summary.failed, summary.failed
        print(summary.line(), flush=True)
    """
    procs = start_at_barrier(code, 2, root, go)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert_same(root, remote)


WRITER = """
import sys, time, localrun
run = localrun.init(project="live", id="w", flush_interval=0.1)
print("started", flush=True)
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 400):
    run.log({"x": float(i)})
    time.sleep(0.01)
run.finish()
print("done", flush=True)
"""


def test_a_run_written_while_it_syncs_reaches_the_remote(root: Path, remote: Path) -> None:
    localrun.init(project="live", id="seed", dir=root).finish()  # the root exists
    writer = spawn(WRITER, root, LOCALRUN_COMPACT_FANOUT="4")
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "started"
    seen_live = 0
    while writer.poll() is None:
        done = sync(root, url_of(remote), "live/w")
        assert done.returncode == 0, done.stderr
        with contextlib.suppress(localrun.LocalrunError):
            r = localrun.Api(remote).run("live/w")
            if r.manifest["state"] == "running" and r.last_step >= 0:
                seen_live += 1
                assert r.history().num_rows == r.last_step + 1  # a readable, consistent state
    assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
    assert seen_live > 0  # the remote showed the run while it was being written
    assert sync(root, url_of(remote)).returncode == 0
    assert_same(root, remote)
    assert localrun.Api(remote).run("live/w").history().num_rows == 400


def test_sync_completes_while_another_process_holds_the_run_mutex(root: Path, remote: Path) -> None:
    """A push never takes the manifest mutex, so a writer can never wait on a syncer."""
    make_run(root, "p", "a")
    lock = root / "p" / "a" / "manifest.lock"
    holder = spawn(
        f"""
        import fcntl, time
        f = open({str(lock)!r}, "a")
        fcntl.flock(f, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(300)
        """,
        root,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    done = sync(root, url_of(remote), timeout=60, LOCALRUN_LOCK_TIMEOUT="120")
    assert done.returncode == 0, done.stderr
    assert_same(root, remote)
    holder.kill()


def test_resumes_rewinds_and_compaction_propagate(root: Path, remote: Path) -> None:
    make_run(root, "p", "a", steps=30)
    assert sync(root, url_of(remote)).returncode == 0
    with localrun.init(project="p", id="a", dir=root, resume="must", rewind_to=12) as run:
        for i in range(40):
            run.log({"loss": -float(i)})
            run.flush()  # many flushes: compaction replaces segments the remote already has
    segs = localrun.Api(root).run("p/a").manifest["segments"]
    assert any(s.get("level", 0) > 0 for s in segs), segs
    assert sync(root, url_of(remote)).returncode == 0
    assert_same(root, remote)
    mine = localrun.Api(root).run("p/a")
    assert len(mine.attempts) == 2 and mine.manifest["rewinds"]


def test_a_remote_holding_another_run_under_the_same_id_is_refused(
    root: Path, remote: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    make_run(other, "p", "a")
    assert sync(other, url_of(remote)).returncode == 0
    before = files_of(remote)
    make_run(root, "p", "a")
    make_run(root, "p", "b")
    done = sync(root, url_of(remote))
    assert done.returncode == localrun.errors.RemoteConflictError.exit_code, done.stderr
    assert "different run under p/a" in done.stderr and "never merged" in done.stderr
    assert {k: v for k, v in files_of(remote).items() if not k.startswith("p/b/")} == before
    assert localrun.Api(remote).run("p/b").last_step == 49  # the other run still went


def test_a_leftover_object_with_other_bytes_is_refused_not_named(root: Path, remote: Path) -> None:
    """The remote holds an object of this run with other bytes and no revision (what a killed
    push of another run under the same id leaves): the first push, which learns what the
    remote holds from one listing of the run, refuses it instead of publishing a revision that
    names it."""
    make_run(root, "p", "a")
    segment = sorted((root / "p/a/history").iterdir())[0].name
    stray = remote / "p/a/history" / segment
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not this run's segment")
    done = sync(root, url_of(remote))
    assert done.returncode == localrun.errors.CorruptRunError.exit_code, done.stderr
    assert f"p/a/history/{segment} has 22 bytes" in done.stderr
    assert not (remote / "p/a/log").exists()
    assert stray.read_bytes() == b"not this run's segment"


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_remote_is_unavailable_and_local_data_is_unchanged(
    root: Path, tmp_path: Path
) -> None:
    _big_root(root)
    local_before = {p: v for p, v in files_of(root).items() if not p.startswith(".sync/")}
    with tmpfs(tmp_path / "small", "2m") as small:
        done = sync(root, url_of(small))
        assert done.returncode == localrun.errors.RemoteUnavailableError.exit_code, done.stderr
        assert "the remote is full" in done.stderr
        assert not [p for p in files_of(small) if ".tmp-" in p]  # no half object left
    assert {p: v for p, v in files_of(root).items() if not p.startswith(".sync/")} == local_before


def test_a_read_only_remote_is_unavailable(root: Path, tmp_path: Path) -> None:
    make_run(root, "p", "a")
    with tmpfs(tmp_path / "ro", "4m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        done = sync(root, url_of(ro))
        assert done.returncode == localrun.errors.RemoteUnavailableError.exit_code, done.stderr
        assert "read-only" in done.stderr


# -- status, names, daemon --------------------------------------------------------------------


def test_status_names_what_each_remote_lacks(root: Path, remote: Path) -> None:
    make_run(root, "p", "a")
    assert cli(root, "remote", "add", "disk", url_of(remote)).returncode == 0
    status = json.loads(cli(root, "sync", "--status", "--json").stdout)
    assert [(r["run"], r["state"]) for r in status["runs"]] == [("p/a", "never pushed")]
    assert sync(root, "disk").returncode == 0
    status = json.loads(cli(root, "sync", "--status", "--json").stdout)
    [row] = status["runs"]
    assert row["state"] == "up to date" and row["pushed_rev"] == row["local_rev"]
    with localrun.init(project="p", id="a", dir=root, resume="must") as run:
        run.log({"loss": 0.0})
    status = json.loads(cli(root, "sync", "--status", "--json").stdout)
    assert status["runs"][0]["state"] == "pending"
    table = cli(root, "sync", "--status")
    assert "1 of 1 runs pending" in table.stdout
    assert cli(root, "sync").returncode == 0  # no --to: every named remote
    assert json.loads(cli(root, "sync", "--status", "--json").stdout)["runs"][0]["state"] == (
        "up to date"
    )


def test_remote_names_and_bad_urls(root: Path, remote: Path) -> None:
    make_run(root, "p", "a", steps=3)
    assert cli(root, "remote", "add", "disk", url_of(remote)).returncode == 0
    listed = json.loads(cli(root, "remote", "list", "--json").stdout)
    assert listed == {"disk": url_of(remote)}
    bad = cli(root, "remote", "add", "web", "http://user:secret@host:1")
    assert bad.returncode == 2 and "password" in bad.stderr and "LOCALRUN_TOKEN" in bad.stderr
    bad = sync(root, "ftp://host/x")
    assert bad.returncode == 2 and "not a remote URL" in bad.stderr
    bad = sync(root, "nowhere")
    assert bad.returncode == 2 and "no remote named 'nowhere'" in bad.stderr
    inside = sync(root, url_of(root / "backup"))
    assert inside.returncode == 2 and "overlap" in inside.stderr
    assert not (root / "backup").exists()
    assert cli(root, "remote", "remove", "disk").returncode == 0
    assert json.loads(cli(root, "remote", "list", "--json").stdout) == {}


def test_the_token_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localrun import _settings

    assert _settings.token() is None
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("LOCALRUN_TOKEN_FILE", str(secret))
    assert _settings.token() == "s3cr3t"
    monkeypatch.setenv("LOCALRUN_TOKEN", "direct")
    assert _settings.token() == "direct"
    monkeypatch.delenv("LOCALRUN_TOKEN")
    monkeypatch.setenv("LOCALRUN_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(localrun.UsageError, match="LOCALRUN_TOKEN_FILE"):
        _settings.token()


def test_import_localrun_does_not_import_sync(root: Path) -> None:
    done = run_py(
        "import sys, localrun; print(sorted(m for m in sys.modules if 'localrun._sync' in m))",
        root,
    )
    assert done.stdout.strip() == "[]", done.stderr


def _wait_for(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(localrun.LocalrunError, OSError):
            if callable(check) and check():
                return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_the_daemon_pushes_new_runs_and_flushes_and_stops_on_sigterm(
    root: Path, remote: Path, watch: str
) -> None:
    make_run(root, "p", "first", steps=3)
    args = ["sync", "--watch", "--to", url_of(remote), "--poll", "0.2" if watch == "poll" else "30"]
    daemon = track(
        subprocess.Popen(
            [sys.executable, "-m", "localrun._cli", "--root", str(root), *args],
            env=child_env(root, LOCALRUN_WATCH=watch),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    _wait_for(lambda: localrun.Api(remote).run("p/first").last_step == 2)
    run = localrun.init(project="p", id="second", dir=root)
    run.log({"loss": 1.0})
    run.flush()
    _wait_for(lambda: localrun.Api(remote).run("p/second").last_step == 0)
    run.log({"loss": 2.0})
    run.flush()
    _wait_for(lambda: localrun.Api(remote).run("p/second").last_step == 1)
    run.finish()
    _wait_for(lambda: localrun.Api(remote).run("p/second").state == "finished")
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "stopped" in err
    assert ("file events" in err) == (watch == "auto"), err  # poll: no events asked for
    assert_same(root, remote)


def test_the_daemon_backs_off_from_an_unavailable_remote_and_recovers(
    root: Path, tmp_path: Path
) -> None:
    make_run(root, "p", "a", steps=3)
    target = tmp_path / "later"
    target.write_text("a file where the remote folder should be")  # every write fails
    daemon = track(
        subprocess.Popen(
            [sys.executable, "-m", "localrun._cli", "--root", str(root), "sync", "--watch",
             "--to", url_of(target), "--poll", "0.2"],
            env=child_env(root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )  # fmt: skip
    _wait_for(lambda: _retry(root))
    status = json.loads(cli(root, "sync", "--status", "--json", "--to", url_of(target)).stdout)
    [d] = status["daemons"].values()
    assert d["state"] == "backing off" and d["pid"] == daemon.pid
    target.unlink()  # the remote comes back
    _wait_for(lambda: localrun.Api(target).run("p/a").last_step == 2, timeout=90)
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert "retrying in" in err and "reachable again" in err


def _retry(root: Path) -> bool:
    status = json.loads(cli(root, "sync", "--status", "--json").stdout)
    return any(d.get("state") == "backing off" for d in status["daemons"].values())


# -- S3 (moto's server on loopback) -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with a bucket; yields the remote URL."""
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(server).exists() and shutil.which("moto_server") is None:
        pytest.skip("moto[server] is not installed (it is in the dev extra)")
    port = _free_port()
    proc = track(
        subprocess.Popen(
            [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1",
             "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    )  # fmt: skip
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
        access_key="test", secret_key="test", allow_bucket_creation=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            fs.create_dir("bucket")
            break
        except OSError:
            assert time.monotonic() < deadline, "moto's server did not start"
            time.sleep(0.2)
    yield f"s3://bucket/replica?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    proc.terminate()
    proc.wait(timeout=10)


def _s3_download(url: str, dest: Path) -> dict[str, object]:
    """Copy the S3 replica into ``dest`` (to read it with Api); returns key -> mtime."""
    import pyarrow.fs as pafs

    fs, base = pafs.FileSystem.from_uri(url)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    seen: dict[str, object] = {}
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1 :]
        seen[rel] = info.mtime
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(info.path) as f:
            target.write_bytes(f.read())
    return seen


def test_s3_replica_equals_the_local_root_and_a_resync_changes_nothing(
    root: Path, tmp_path: Path, s3: str
) -> None:
    make_run(root, "p", "a")
    make_run(root, "q", "b", steps=12)
    aws = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}
    done = sync(root, s3, **aws)
    assert done.returncode == 0, done.stderr
    first = _s3_download(s3, tmp_path / "copy1")
    assert_same(root, tmp_path / "copy1")
    shutil.rmtree(root / ".sync")  # ask the remote itself this time
    again = sync(root, s3, **aws)
    assert again.returncode == 0, again.stderr
    assert "0 pushed" in again.stdout
    assert _s3_download(s3, tmp_path / "copy2") == first  # no object added or rewritten


def test_heartbeats_alone_are_not_pushed(root: Path, remote: Path) -> None:
    """An idle live run commits a heartbeat every ttl/3: the remote gets a new revision only
    when something besides the heartbeat changed."""
    idle = spawn(
        """
        import sys, time, localrun
        run = localrun.init(project="p", id="idle", flush_interval=0.1)
        run.log({"x": 1.0})
        run.flush()
        print("flushed", flush=True)
        time.sleep(300)
        """,
        root,
        LOCALRUN_LEASE_TTL="1",
    )
    assert idle.stdout is not None and idle.stdout.readline().strip() == "flushed"
    assert sync(root, url_of(remote)).returncode == 0
    pushed = sorted((remote / "p/idle/log").iterdir())
    rdir = root / "p" / "idle"

    def head() -> int:
        return max(int(p.stem) for p in (rdir / "log").iterdir() if p.stem.isdigit())

    first = head()
    _wait_for(lambda: head() >= first + 3)
    again = sync(root, url_of(remote))
    assert again.returncode == 0 and "0 pushed" in again.stdout, again
    assert sorted((remote / "p/idle/log").iterdir()) == pushed
    idle.kill()


def test_a_segment_compacted_away_mid_push_makes_the_push_take_the_newer_revision(
    root: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localrun._sync import engine, local, urls

    monkeypatch.setenv("LOCALRUN_COMPACT_FANOUT", "2")
    with localrun.init(project="p", id="a", dir=root) as run:
        run.log({"x": 0.0})
        run.flush()
        stale = local.read_run(root / "p" / "a")  # names segment 0 ...
        for i in range(1, 6):
            run.log({"x": float(i)})
            run.flush()  # ... which a compaction then replaces and removes
    gone = [s["file"] for s in stale.manifest["segments"] if not (stale.dir / s["file"]).exists()]
    assert gone, "the test needs a segment of the stale revision removed"
    pushed = urls.open_remote(url_of(remote)).push(stale, None, engine.NoProgress())
    assert pushed.rev == local.read_run(root / "p" / "a").rev > stale.rev
    assert_same(root, remote)


def test_a_remote_name_never_leaves_the_remote_root(tmp_path: Path) -> None:
    from localrun._sync.fsstore import LocalStore

    store = LocalStore(tmp_path / "remote")
    for bad in ("../x", "/etc/passwd", "p/../../x", "p//x", ""):
        with pytest.raises(localrun.errors.SyncError, match="leave the remote root"):
            store.put_bytes(bad, b"x")
    assert not (tmp_path / "x").exists()


def test_media_console_output_and_system_samples_reach_the_remote(root: Path, remote: Path) -> None:
    np = pytest.importorskip("numpy")
    code = """
    import numpy as np, localrun
    with localrun.init(project="p", id="rich", system_metrics=0.05) as run:
        print("a line of output")
        for step in range(3):
            run.log({"img": localrun.Image(np.full((4, 4), step * 40, dtype=np.uint8))})
    """
    out = run_py(code, root)
    assert out.returncode == 0, out.stderr
    done = sync(root, url_of(remote), "p/rich")
    assert done.returncode == 0, done.stderr
    here = localrun.Api(root).run("p/rich")
    there = localrun.Api(remote).run("p/rich")
    for step in range(3):
        assert np.array_equal(
            np.asarray(there.media("img", step)), np.asarray(here.media("img", step))
        )
    assert there.console() == here.console() and "a line of output" in there.console()
    assert there.history(stream="system").equals(here.history(stream="system"))
    media = {k: size for k, (size, _) in files_of(root / "p" / "rich" / "media").items()}
    assert {k: size for k, (size, _) in files_of(remote / "p" / "rich" / "media").items()} == media
