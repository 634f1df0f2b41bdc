"""Sync to a real MLflow tracking server (``make test-mlflow``), checked through its REST API.

One ``mlflow server`` per module (it takes ~35 s to start on a loaded machine); each test uses
projects of its own, so tests do not see each other's runs.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

import localrun
from localrun._store import revisions
from localrun._store.revisions import rev_path
from localrun._sync.mlflow import MlflowRemote, points
from localrun._sync.remote import Cursor, LocalRun
from localrun.errors import RemoteConflictError, RemoteUnavailableError, UsageError
from tests.conftest import child_env, start_at_barrier, track
from tests.mlflow_server import MlflowServer, Rest, mlflow_bin

# The first test also waits for the server to start (a fresh store migrates first). Tests that
# need the server are marked ``mlflow`` (``make test-mlflow``); the others run in ``make test``.
pytestmark = pytest.mark.timeout(900)

KILL_TRIALS = int(os.environ.get("MLFLOW_KILL_TRIALS", "3"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    running = os.environ.get("TEST_MLFLOW_HTTP")  # a server started by hand, while developing
    if running:
        yield MlflowServer.at(running)
        return
    exe, asked = mlflow_bin()
    if exe is None or not exe.exists():
        if asked:
            pytest.fail(f"TEST_MLFLOW_BIN={exe} does not exist: run `make test-mlflow`")
        pytest.skip("no MLflow server venv: `make test-mlflow` builds .venv-mlflow and runs these")
    srv = MlflowServer(exe, tmp_path_factory.mktemp("mlflow"))
    yield srv
    srv.stop()


@pytest.fixture
def rest(server: MlflowServer) -> Rest:
    return Rest(server.http)


@pytest.fixture
def remote(server: MlflowServer) -> Iterator[MlflowRemote]:
    r = MlflowRemote(server.url, None)
    yield r
    r.close()


class Bytes:
    def __init__(self) -> None:
        self.n = 0

    def advance(self, nbytes: int) -> None:
        self.n += nbytes


def local_run(root: Path, project: str, run_id: str) -> LocalRun:
    """The newest revision of a run as the sync engine hands it to a remote (until the
    engine's ``local.py`` lands, built here the same way: ``revisions.newest``)."""
    d = root / project / run_id
    snap = revisions.newest(d)
    return LocalRun(project, run_id, d, snap.rev, snap.manifest, rev_path(d, snap.rev).read_bytes())


def push(
    remote: MlflowRemote, root: Path, project: str, run_id: str, cursor: Cursor | None = None
) -> Cursor:
    return remote.push(local_run(root, project, run_id), cursor, Bytes())


def expected(root: Path, project: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """What localrun's reader shows for ``key`` (visible rows, non-null), as (step, value)."""
    t = localrun.Api(root).run(f"{project}/{run_id}").history([key])
    return [
        (s, v)
        for s, v in zip(t["_step"].to_pylist(), t[key].to_pylist(), strict=True)
        if v is not None
    ]


def stored(rest: Rest, mlflow_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((s, v) for s, v, _ in rest.history(mlflow_id, key))


def same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Local points ``a`` equal MLflow's ``b``, NaN equal to NaN and +-inf as MLflow stores them (+-max double)."""
    if len(a) != len(b):
        return False
    for (s1, v1), (s2, v2) in zip(a, b, strict=True):
        if s1 != s2:
            return False
        if math.isnan(v1) or math.isnan(v2):
            if not (math.isnan(v1) and math.isnan(v2)):
                return False
        elif math.isinf(v1):
            if v2 != math.copysign(sys.float_info.max, v1):
                return False
        elif v1 != v2:
            return False
    return True


def write_run(
    root: Path, project: str, run_id: str, steps: int, keys: int = 3, **init: Any
) -> None:
    run = localrun.init(project=project, id=run_id, dir=root, **init)
    for i in range(steps):
        run.log({f"k{j}": i * 10.0 + j for j in range(keys)}, step=i)
    run.finish()


# -- the mapping --------------------------------------------------------------------------------


@pytest.mark.mlflow
def test_a_finished_run_lands_as_params_tags_metrics_artifacts_and_status(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    run = localrun.init(
        project="map",
        id="r1",
        name="first try",
        dir=root,
        notes="baseline with adam",
        tags=["baseline", "mlflow.user", "a b?"],
        group="sweep-3",
        config={"lr": 0.001, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "long": "x" * 7000},
    )
    for i in range(300):
        run.log({"loss": 1.0 / (i + 1), "acc": i / 300, "phase": "train"}, step=i)
    run.log({"loss": math.nan, "weird": math.inf}, step=300)
    run.log({"weird": -math.inf}, step=301)
    src = root.parent / "ckpt"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(3 << 20))  # several upload chunks
    (src / "notes.txt").write_text("hello")
    run.save(str(src / "*"), base_path=str(src))
    run.summary["best_acc"] = 0.97
    run.finish()

    c = push(remote, root, "map", "r1")
    mid = str(c.extra["mlflow_run_id"])
    got = rest.run(mid)
    info = got["info"]
    assert info["status"] == "FINISHED" and info["run_name"] == "first try"
    stored_run = localrun.Api(root).run("map/r1")
    assert info["start_time"] == int(stored_run.created * 1000)
    assert info["end_time"] == int(stored_run.attempts[-1]["ended"] * 1000)

    params = rest.params(mid)
    assert params["lr"] == "0.001" and params["opt/name"] == "adam"
    assert params["opt/betas"] == "[0.9, 0.99]"
    assert params["long"] == "x" * 6000  # MLflow's limit for a param value

    tags = rest.tags(mid)
    assert tags["mlflow.note.content"] == "baseline with adam"
    assert tags["mlflow.runName"] == "first try"
    assert tags["localrun.id"] == "map/r1" and tags["localrun.uid"] == stored_run.manifest["uid"]
    assert tags["localrun.state"] == "finished" and tags["localrun.group"] == "sweep-3"
    assert tags["baseline"] == "true" and tags["a b_"] == "true"
    assert tags["tag.mlflow.user"] == "true"  # never overwrites MLflow's own tags
    assert json.loads(tags["localrun.summary.best_acc"]) == 0.97

    for key in ("loss", "acc", "weird"):
        assert same(expected(root, "map", "r1", key), stored(rest, mid, key)), key
    assert "phase" not in {
        m["key"] for m in got["data"].get("metrics", [])
    }  # strings are not metrics
    # Timestamps are the rows' own, in ms.
    t = stored_run.history(["loss"])
    first = rest.history(mid, "loss")[0]
    assert first[2] == round(t["_timestamp"][0].as_py() * 1000)

    assert rest.artifacts(mid) == {"model.bin": 3 << 20, "notes.txt": 5}
    assert rest.download(got, "model.bin") == (src / "model.bin").read_bytes()


@pytest.mark.mlflow
def test_syncing_twice_changes_nothing_even_without_a_cursor(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    write_run(root, "twice", "r1", 1500, keys=2, config={"lr": 0.1}, tags=["t"])
    c1 = push(remote, root, "twice", "r1")
    before = {k: rest.history(str(c1.extra["mlflow_run_id"]), k) for k in ("k0", "k1")}
    c2 = push(remote, root, "twice", "r1", c1)  # the engine's usual call: a cursor at this rev
    c3 = push(remote, root, "twice", "r1", None)  # the cursor was lost: found again by tag
    assert c1.extra["mlflow_run_id"] == c2.extra["mlflow_run_id"] == c3.extra["mlflow_run_id"]
    assert len(rest.runs("twice")) == 1
    mid = str(c1.extra["mlflow_run_id"])
    for k in ("k0", "k1"):
        assert rest.history(mid, k) == before[k]
        assert len(before[k]) == 1500
        assert same(expected(root, "twice", "r1", k), stored(rest, mid, k))


@pytest.mark.mlflow
def test_a_resumed_run_continues_the_same_mlflow_run(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    write_run(root, "resume", "r1", 100, keys=2, config={"lr": 0.1, "bs": 32}, tags=["old"])
    c1 = push(remote, root, "resume", "r1")
    mid = str(c1.extra["mlflow_run_id"])
    assert rest.run(mid)["info"]["status"] == "FINISHED"

    run = localrun.init(
        project="resume",
        id="r1",
        dir=root,
        resume="must",
        config={"lr": 0.05},
        allow_val_change=True,
        tags=["new"],
    )
    for i in range(100, 180):
        run.log({"k0": i * 10.0, "k1": i * 10.0 + 1}, step=i)
    run.finish(exit_code=1)

    c2 = push(remote, root, "resume", "r1", c1)
    assert c2.extra["mlflow_run_id"] == mid
    assert len(rest.runs("resume")) == 1
    for k in ("k0", "k1"):
        assert same(expected(root, "resume", "r1", k), stored(rest, mid, k))
        assert [s for s, _ in stored(rest, mid, k)] == list(range(180))
    got = rest.run(mid)
    assert got["info"]["status"] == "FAILED"
    params, tags = rest.params(mid), rest.tags(mid)
    # MLflow params are immutable: the first value stays, the current one is a tag.
    assert params["lr"] == "0.1" and tags["localrun.config.lr"] == "0.05"
    assert params["bs"] == "32" and "localrun.config.bs" not in tags
    assert tags["new"] == "true" and "old" not in tags  # localrun tags replaced: so are MLflow's
    assert tags["localrun.attempts"] == "2"


@pytest.mark.mlflow
def test_a_live_run_is_pushed_while_it_runs_then_finishes(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    run = localrun.init(project="live", id="r1", dir=root)
    for i in range(50):
        run.log({"x": float(i)}, step=i)
    run._flush()  # what the flusher thread does every few seconds
    c1 = push(remote, root, "live", "r1")
    mid = str(c1.extra["mlflow_run_id"])
    info = rest.run(mid)["info"]
    assert info["status"] == "RUNNING" and "end_time" not in info
    # Exactly what a local reader sees now (the writer holds its current row back).
    first = expected(root, "live", "r1", "x")
    assert stored(rest, mid, "x") == first and len(first) >= 49
    for i in range(50, 90):
        run.log({"x": float(i)}, step=i)
    run.finish()
    push(remote, root, "live", "r1", c1)
    assert rest.run(mid)["info"]["status"] == "FINISHED"
    assert [s for s, _ in stored(rest, mid, "x")] == list(range(90))


def _wait_line(proc: subprocess.Popen[str], want: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == want, f"child said {line!r}: {proc.stderr.read() if proc.stderr else ''}"


@pytest.mark.mlflow
def test_states_map_to_mlflow_statuses(root: Path, remote: MlflowRemote, rest: Rest) -> None:
    writer = """
        import os, signal, time, localrun
        run = localrun.init(project="states", id=os.environ["RID"])
        run.log({"x": 1.0}, step=0)
        run._flush()
        print("logged", flush=True)
        time.sleep(120)
    """
    # SIGKILL: the writer dies without a word; its lease shows it dead on this host: crashed.
    crashed = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(writer)],
        env=child_env(root, RID="crashed"),
        stdout=subprocess.PIPE,
        text=True,
    )
    track(crashed)
    _wait_line(crashed, "logged")
    crashed.kill()
    crashed.wait()
    # SIGTERM: what a scheduler sends to preempt a job.
    preempted = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(writer)],
        env=child_env(root, RID="preempted"),
        stdout=subprocess.PIPE,
        text=True,
    )
    track(preempted)
    _wait_line(preempted, "logged")
    preempted.terminate()
    preempted.wait(timeout=60)
    write_run(root, "states", "failed", 1)
    localrun.init(project="states", id="failed", dir=root, resume="must").finish(exit_code=3)
    write_run(root, "states", "finished", 1)

    want = {"crashed": "FAILED", "preempted": "KILLED", "failed": "FAILED", "finished": "FINISHED"}
    for rid, status in want.items():
        c = push(remote, root, "states", rid)
        mid = str(c.extra["mlflow_run_id"])
        info = rest.run(mid)["info"]
        assert (info["status"], rest.tags(mid)["localrun.state"]) == (status, rid), rid
        assert info["end_time"] >= info["start_time"]


# -- rewinds --------------------------------------------------------------------------------------


@pytest.mark.mlflow
def test_a_rewind_before_the_push_pushes_only_visible_rows(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    write_run(root, "rewind", "early", 100, keys=1)
    run = localrun.init(project="rewind", id="early", dir=root, resume="must", rewind_to=49)
    for i in range(50, 60):
        run.log({"k0": -float(i)}, step=i)
    run.finish()
    c = push(remote, root, "rewind", "early")
    mid = str(c.extra["mlflow_run_id"])
    got = stored(rest, mid, "k0")
    assert got == expected(root, "rewind", "early", "k0")
    assert [s for s, _ in got] == list(range(60)) and got[55] == (55, -55.0)


@pytest.mark.mlflow
def test_a_rewind_after_the_push_keeps_old_points_and_says_so(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    write_run(root, "rewind", "late", 100, keys=1)
    c1 = push(remote, root, "rewind", "late")
    mid = str(c1.extra["mlflow_run_id"])
    run = localrun.init(project="rewind", id="late", dir=root, resume="must", rewind_to=49)
    for i in range(50, 60):
        run.log({"k0": -float(i)}, step=i)
    run.finish()
    push(remote, root, "rewind", "late", c1)
    got = stored(rest, mid, "k0")
    # The 100 points pushed before the rewind stay (MLflow cannot delete points); the resumed
    # attempt's 10 follow, once each.
    assert len(got) == 110
    assert sorted(got) == sorted(
        [(i, i * 10.0) for i in range(100)] + [(i, -float(i)) for i in range(50, 60)]
    )
    assert "resumed from step 49" in rest.tags(mid)["localrun.rewind.1"]
    push(remote, root, "rewind", "late", None)  # and again, with no cursor: nothing more
    assert len(stored(rest, mid, "k0")) == 110


# -- crash safety ---------------------------------------------------------------------------------

PUSHER = """
    import os
    from pathlib import Path
    from localrun._store import revisions
    from localrun._sync.mlflow import MlflowRemote
    from localrun._sync.remote import LocalRun
    root, project, rid = Path(os.environ["MLF_ROOT"]), os.environ["MLF_PROJECT"], os.environ["MLF_RID"]
    d = root / project / rid
    snap = revisions.newest(d)
    run = LocalRun(project, rid, d, snap.rev, snap.manifest,
                   revisions.rev_path(d, snap.rev).read_bytes())
    class P:
        def advance(self, n): pass
    MlflowRemote(os.environ["MLF_URL"], None).push(run, None, P())
    print("done", flush=True)
"""


def _pusher(root: Path, project: str, rid: str, url: str) -> subprocess.Popen[str]:
    env = child_env(root, MLF_ROOT=str(root), MLF_PROJECT=project, MLF_RID=rid, MLF_URL=url)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PUSHER)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return track(proc)


@pytest.mark.mlflow
@pytest.mark.slow
def test_two_syncers_pushing_one_run_at_once_converge(
    root: Path, server: MlflowServer, rest: Rest, remote: MlflowRemote, tmp_path: Path
) -> None:
    write_run(root, "pair", "r1", 500, keys=10, config={"lr": 0.1}, tags=["x"])
    go = tmp_path / "go"
    procs = start_at_barrier(
        PUSHER,
        2,
        root,
        go,
        MLF_ROOT=str(root),
        MLF_PROJECT="pair",
        MLF_RID="r1",
        MLF_URL=server.url,
    )
    go.touch()
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        outcomes.append(proc.returncode)
        # The one whose MLflow run the other moved to the trash mid-push stops with a clear
        # error (the daemon pushes again later); nothing else may happen.
        assert (proc.returncode == 0 and out.strip().endswith("done")) or "SyncError" in err, err[
            -2000:
        ]
    assert 0 in outcomes
    made = rest.post(
        "/runs/search",
        {"experiment_ids": [rest.runs("pair")[0]["info"]["experiment_id"]], "run_view_type": "ALL"},
    )["runs"]
    print(f"syncers' exit codes {outcomes}; MLflow runs made {len(made)}")
    push(remote, root, "pair", "r1")  # the daemon's next pass
    (only,) = rest.runs("pair")
    mid = only["info"]["run_id"]
    for j in range(10):
        assert stored(rest, mid, f"k{j}") == expected(root, "pair", "r1", f"k{j}"), j
    assert rest.params(mid) == {"lr": "0.1"} and rest.run(mid)["info"]["status"] == "FINISHED"


@pytest.mark.mlflow
@pytest.mark.slow
def test_sigkill_of_the_pusher_mid_push_then_a_rerun_pushes_every_point_once(
    root: Path, server: MlflowServer, rest: Rest
) -> None:
    rng = random.Random(int(os.environ.get("MLFLOW_KILL_SEED", str(time.time_ns()))))

    def make(rid: str, trial: int) -> Path:
        write_run(root, "kill", rid, 2000, keys=10, config={"trial": trial})
        src = root.parent / f"f{rid}"
        src.mkdir()
        (src / "weights.bin").write_bytes(os.urandom(1 << 20))
        run = localrun.init(project="kill", id=rid, dir=root, resume="must")
        run.save(str(src / "weights.bin"), base_path=str(src))
        run.finish()
        return src

    def pushing(rid: str) -> subprocess.Popen[str]:
        """A pusher of ``rid``, returned once its push is under way (a real barrier: the
        MLflow run exists)."""
        proc = _pusher(root, "kill", rid, server.url)
        deadline = time.monotonic() + 120
        while not rest.runs("kill") or not any(
            r["data"].get("tags") and any(t["value"] == f"kill/{rid}" for t in r["data"]["tags"])
            for r in rest.runs("kill")
        ):
            assert proc.poll() is None or proc.returncode == 0, (
                proc.stderr.read() if proc.stderr else ""
            )
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return proc

    # How long the rest of a whole push takes on this machine, so that the kills land inside
    # one: a fixed range (0 to 6 s) let a fast machine finish every push before its kill
    # (CI, 2026-11-26: three trials, none mid-push).
    make("calibrate", -1)
    proc = pushing("calibrate")
    started = time.monotonic()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and out.strip() == "done", err[-2000:]
    rest_of_push = time.monotonic() - started

    mid_push = 0
    for trial in range(KILL_TRIALS):
        rid = f"kill{trial}"
        src = make(rid, trial)
        proc = pushing(rid)
        time.sleep(rng.uniform(0.0, 0.8 * rest_of_push))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        (mine,) = [
            r
            for r in rest.runs("kill")
            if {"key": "localrun.id", "value": f"kill/{rid}"} in r["data"]["tags"]
        ]
        mid = mine["info"]["run_id"]
        tags = rest.tags(mid)
        if mine["info"]["status"] == "RUNNING":
            mid_push += 1
        print(
            f"trial {trial}: killed at pushed={tags.get('localrun.pushed')} status={mine['info']['status']}"
        )

        again = _pusher(root, "kill", rid, server.url)
        out, err = again.communicate(timeout=600)
        assert again.returncode == 0 and out.strip() == "done", err[-2000:]
        assert (
            len([r for r in rest.runs("kill") if f"kill/{rid}" in json.dumps(r["data"]["tags"])])
            == 1
        )
        for j in range(10):
            assert stored(rest, mid, f"k{j}") == expected(root, "kill", rid, f"k{j}"), (trial, j)
        assert rest.run(mid)["info"]["status"] == "FINISHED"
        assert rest.artifacts(mid) == {"weights.bin": 1 << 20}
        assert rest.download(rest.run(mid), "weights.bin") == (src / "weights.bin").read_bytes()
    assert mid_push >= 1, (
        f"no trial killed the pusher before it finished (a whole push took {rest_of_push:.2f} s "
        "after its run existed): the test proved nothing"
    )


# -- identity and errors ---------------------------------------------------------------------------


@pytest.mark.mlflow
def test_a_different_run_under_the_same_id_is_refused(
    root: Path, remote: MlflowRemote, rest: Rest
) -> None:
    write_run(root, "clash", "r1", 5, keys=1)
    push(remote, root, "clash", "r1")
    shutil.rmtree(root / "clash" / "r1")
    write_run(root, "clash", "r1", 7, keys=1)  # same project/id, another run (another uid)
    with pytest.raises(RemoteConflictError, match=r"clash/r1.*uid"):
        push(remote, root, "clash", "r1")
    (only,) = rest.runs("clash")
    assert len(rest.history(only["info"]["run_id"], "k0")) == 5  # nothing merged into it


class _Refusing(BaseHTTPRequestHandler):
    status = 503

    def _answer(self) -> None:
        body = json.dumps({"error_code": "X", "message": "go away"}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_a_refusing_server_is_unavailable_naming_the_url(root: Path, status: int) -> None:
    handler = type("H", (_Refusing,), {"status": status})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        write_run(root, "down", "r1", 3, keys=1)
        url = f"mlflow+http://127.0.0.1:{httpd.server_address[1]}"
        r = MlflowRemote(url, "secret")
        with pytest.raises(RemoteUnavailableError, match=str(status)) as err:
            r.push(local_run(root, "down", "r1"), None, Bytes())
        assert url in str(err.value) and "secret" not in str(err.value)
        r.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_server_that_is_down_is_unavailable(root: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        write_run(root, "down", "r2", 3, keys=1)
        url = f"mlflow+http://127.0.0.1:{port}"
        r = MlflowRemote(url, None)
        with pytest.raises(RemoteUnavailableError, match=re.escape(url)):
            r.push(local_run(root, "down", "r2"), None, Bytes())
        r.close()


@pytest.mark.parametrize(
    "url", ["http://h:5000", "mlflow+ftp://h", "mlflow+http://user:pw@h:5000", "mlflow+http://"]
)
def test_a_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="mlflow"):
        MlflowRemote(url, None)


def test_points_follow_compaction_and_skip_pushed_segments(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push order is (attempt, step, key): unchanged when the writer compacts segments, so
    a position taken before a compaction still says exactly what was pushed."""
    monkeypatch.setenv("LOCALRUN_COMPACT_FANOUT", "4")
    run = localrun.init(project="order", id="r1", dir=root)

    def listed(lr: LocalRun, after: tuple[int, int, str]) -> list[tuple[int, int, str, float]]:
        return [(p.attempt, p.step, p.key, p.value) for p in points(lr.dir, lr.manifest, after)]

    for i in range(40):
        run.log({"a": float(i), "b": -float(i)}, step=i)
        if i % 5 == 4:
            run._flush()
        if i == 14:
            early = listed(local_run(root, "order", "r1"), (0, -1, ""))
    run.finish()
    final = local_run(root, "order", "r1")
    assert len(final.manifest["segments"]) < 8  # the writer did compact
    everything = listed(final, (0, -1, ""))
    assert len(everything) == 80 and everything[: len(early)] == early and len(early) >= 20
    tail = listed(final, (1, 20, "a"))
    assert tail == everything[41:]
    assert tail[0][1:3] == (20, "b")


@pytest.mark.mlflow
def test_a_push_whose_segments_were_compacted_away_reads_the_newest_revision(
    root: Path, remote: MlflowRemote, rest: Rest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer compacts while a push holds an older revision: the segments it names are gone,
    so the push reads the newest revision instead and still sends every point once."""
    monkeypatch.setenv("LOCALRUN_COMPACT_FANOUT", "4")
    run = localrun.init(project="compact", id="r1", dir=root)
    for i in range(60):
        run.log({"a": float(i), "b": -float(i)}, step=i)
        if i == 12:
            stale = local_run(root, "compact", "r1")  # what a push took before compacting
        if i % 5 == 4:
            run._flush()
    run.finish()
    assert not all(
        (root / "compact" / "r1" / s["file"]).exists() for s in stale.manifest["segments"]
    )
    c = remote.push(stale, None, Bytes())
    mid = str(c.extra["mlflow_run_id"])
    for key in ("a", "b"):
        assert stored(rest, mid, key) == expected(root, "compact", "r1", key)
        assert len(stored(rest, mid, key)) == 60
    push(remote, root, "compact", "r1", c)
    assert rest.run(mid)["info"]["status"] == "FINISHED"
    assert len(stored(rest, mid, "a")) == 60
