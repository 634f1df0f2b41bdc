"""The dashboard's JSON API through HTTP (httpx on the ASGI app), on runs written by localrun.

One root per module holds the runs the read-only tests share (written once: a resumed run made
by a real SIGKILL and a rewind, media, files, configs); tests that damage runs make their own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import localrun
from localrun._server.app import create_app
from tests.conftest import run_py, spawn

pytestmark = pytest.mark.filterwarnings("ignore::localrun.LocalrunWarning")

FIRST_ATTEMPT = """
import os, signal, localrun
run = localrun.init(project="p", id="resumed", flush_interval=0.05, system_metrics=False,
                    config={"lr": 0.1, "opt": {"name": "adam"}})
print("first attempt says hi", flush=True)
for step in range(10):
    run.log({"loss": 1.0 / (step + 1), "acc": step})
run.flush()
os.kill(os.getpid(), signal.SIGKILL)   # the node dies
"""

SECOND_ATTEMPT = """
import localrun
run = localrun.init(project="p", id="resumed", resume="must", rewind_to=5, system_metrics=False)
print("second attempt says hi", flush=True)
for step in range(6, 15):
    run.log({"loss": 100.0 + step, "acc": step})
run.finish()
"""


def _write_root(root: Path) -> None:
    first = run_py(FIRST_ATTEMPT, root)
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = run_py(SECOND_ATTEMPT, root)
    assert second.returncode == 0, second.stderr
    configs = [
        ("a", 0.001, "adam", 0.9, ["base"], "g1"),
        ("b", 0.01, "sgd", 0.5, ["base", "wide"], "g1"),
        ("c", 0.1, "adam", 0.2, ["wide"], "g2"),
    ]
    for run_id, lr, opt, loss, tags, group in configs:
        with localrun.init(
            project="q",
            id=run_id,
            name=f"run {run_id}",
            notes=f"notes of {run_id}\nsecond line",
            tags=tags,
            group=group,
            config={"lr": lr, "opt": {"name": opt}, "layers": [1, 2]},
            dir=root,
            console=False,
            system_metrics=False,
        ) as run:
            for step in range(5):
                run.log({"loss": loss + step, "x2": 2.0 * step})
            run.summary["best"] = loss


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "runs"
    _write_root(root)
    return root


class Client:
    """Synchronous calls into the ASGI app over httpx (no socket, the real app)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.app = create_app(root, token=None, pushes=False)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await c.get(url, **kwargs)

        return asyncio.run(call())

    def json(self, url: str, status: int = 200, **kwargs: Any) -> Any:
        r = self.get(url, **kwargs)
        assert r.status_code == status, r.text
        return r.json()


@pytest.fixture(scope="module")
def client(shared_root: Path) -> Client:
    return Client(shared_root)


# -- 1. runs ---------------------------------------------------------------------------------


def test_runs_lists_every_run_with_its_fields(client: Client) -> None:
    page = client.json("/api/v1/runs")
    assert page["total"] == 4 and page["offset"] == 0 and page["limit"] == 100
    assert page["projects"] == ["p", "q"]
    rows = {r["path"]: r for r in page["runs"]}
    resumed = rows["p/resumed"]
    assert resumed["state"] == "finished" and resumed["attempts"] == 2
    assert resumed["config"] == {"lr": 0.1, "opt.name": "adam"}
    assert resumed["last_step"] == 14
    b = rows["q/b"]
    assert b["name"] == "run b" and b["tags"] == ["base", "wide"] and b["group"] == "g1"
    assert b["notes"] == "notes of b"  # the first line only
    assert b["summary"]["best"] == 0.5 and "layers" not in b["config"]  # scalars only
    assert page["columns"]["config"] == ["lr", "opt.name"]
    assert "best" in page["columns"]["summary"]


def test_runs_default_order_is_newest_first(client: Client) -> None:
    paths = [r["path"] for r in client.json("/api/v1/runs")["runs"]]
    assert paths == ["q/c", "q/b", "q/a", "p/resumed"]
    asc = client.json("/api/v1/runs", params={"order": "asc"})["runs"]
    assert [r["path"] for r in asc] == list(reversed(paths))


def test_runs_filters(client: Client) -> None:
    def paths(**params: Any) -> list[str]:
        return sorted(r["path"] for r in client.json("/api/v1/runs", params=params)["runs"])

    assert paths(project="q") == ["q/a", "q/b", "q/c"]
    assert paths(q="RUN B") == ["q/b"]  # case-insensitive, in the name
    assert paths(q="second line") == []  # notes: their first line only
    assert paths(tag=["base", "wide"]) == ["q/b"]  # every tag must match
    assert paths(group="g1") == ["q/a", "q/b"]
    assert paths(state="finished", project="p") == ["p/resumed"]
    assert paths(state=["failed", "crashed"]) == []
    assert paths(where="config.lr>=0.01") == ["p/resumed", "q/b", "q/c"]
    assert paths(where=["config.lr>=0.01", "config.opt.name=adam"]) == ["p/resumed", "q/c"]
    assert paths(where="summary.best<0.6") == ["q/b", "q/c"]  # numbers as numbers
    assert paths(where="config.opt.name~SG") == ["q/b"]
    assert paths(where="config.opt.name!=adam") == ["q/b"]
    assert paths(where="config.lr=1e-1") == ["p/resumed", "q/c"]
    assert paths(where="config.missing=1") == []


def test_runs_sort_and_paging(client: Client) -> None:
    def order(**params: Any) -> list[str]:
        return [r["id"] for r in client.json("/api/v1/runs", params=params)["runs"]]

    assert order(sort="config.lr", order="asc") == ["a", "b", "resumed", "c"]
    # a run without the key comes last whatever the order
    assert order(sort="summary.best", order="desc") == ["a", "b", "c", "resumed"]
    assert order(sort="summary.best", order="asc") == ["c", "b", "a", "resumed"]
    assert order(sort="attempts")[0] == "resumed"
    assert order(sort="id", order="asc") == ["a", "b", "c", "resumed"]
    page = client.json(
        "/api/v1/runs", params={"sort": "id", "order": "asc", "limit": 2, "offset": 1}
    )
    assert page["total"] == 4 and [r["id"] for r in page["runs"]] == ["b", "c"]


def test_runs_by_host_and_by_group(tmp_path: Path) -> None:
    """Filter by host (where each run last ran), sort by host, group and project."""
    root = tmp_path / "runs"
    for project, run_id, group, host in [
        ("p", "a", "g2", "node-b"),
        ("q", "b", "g1", "node-a"),
        ("p", "c", None, "node-a"),
    ]:
        code = (
            f"import socket\nsocket.gethostname = lambda: {host!r}\nimport localrun\n"
            f"localrun.init(project={project!r}, id={run_id!r}, group={group!r}).finish()\n"
        )
        done = run_py(code, root)
        assert done.returncode == 0, done.stderr
    client = Client(root)

    def ids(**params: Any) -> list[str]:
        return [r["id"] for r in client.json("/api/v1/runs", params=params)["runs"]]

    assert sorted(ids(host="node-a")) == ["b", "c"] and ids(host="node-b") == ["a"]
    assert ids(host="node-z") == []
    assert ids(sort="host", order="asc")[-1] == "a"
    assert ids(sort="group", order="asc") == ["b", "a", "c"]  # a run without one comes last
    assert ids(sort="project", order="desc")[0] == "b"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"order": "up"}, "order"),
        ({"sort": "colour"}, "sort"),
        ({"state": "sleeping"}, "state"),
        ({"where": "lr>1"}, "where"),
        ({"project": "../etc"}, "project"),
    ],
)
def test_runs_bad_parameters_are_400_naming_them(
    client: Client, params: dict[str, str], named: str
) -> None:
    r = client.get("/api/v1/runs", params=params)
    assert r.status_code == 400
    assert named in r.json()["error"]


def test_runs_answers_304_to_its_etag(client: Client) -> None:
    first = client.get("/api/v1/runs", params={"project": "q"})
    tag = first.headers["etag"]
    again = client.get("/api/v1/runs", params={"project": "q"}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.headers["etag"] == tag and not again.content
    other = client.get("/api/v1/runs", params={"project": "p"}, headers={"If-None-Match": tag})
    assert other.status_code == 200


def test_runs_cache_rereads_only_changed_runs(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for i in range(3):
        with localrun.init(
            project="p", id=f"r{i}", dir=root, config={"i": i}, console=False, system_metrics=False
        ) as run:
            run.log({"loss": 1.0})
    client = Client(root)
    index = _index(client)
    deadline = time.monotonic() + 60
    while index.reads < 3 and time.monotonic() < deadline:  # the app fills it unasked
        time.sleep(0.01)
    assert index.reads == 3
    assert len(client.json("/api/v1/runs")["runs"]) == 3
    assert index.reads == 3
    client.json("/api/v1/runs", params={"q": "r1"})
    assert index.reads == 3  # nothing changed: nothing re-read
    with localrun.init(
        project="p", id="r1", dir=root, resume="must", console=False, system_metrics=False
    ) as run:
        run.config.update({"extra": 5})
    rows = {r["id"]: r for r in client.json("/api/v1/runs")["runs"]}
    assert index.reads == 4 and rows["r1"]["config"]["extra"] == 5 and rows["r1"]["attempts"] == 2


def _behind(client: Client, path: str, kind: type) -> Any:
    """The ``kind`` object the handler of the route ``path`` ends with closes over (the tests
    count its reads)."""
    for route in client.app.routes:
        if getattr(route, "path", "").endswith(path):
            for cell in route.endpoint.__closure__ or ():
                for inner in getattr(cell.cell_contents, "__closure__", None) or ():
                    if isinstance(inner.cell_contents, kind):
                        return inner.cell_contents
    raise AssertionError(f"no {kind.__name__} behind {path}")


def _index(client: Client) -> Any:
    """The RunsIndex behind the app's runs route."""
    from localrun._server.runs_index import RunsIndex

    return _behind(client, "/api/v1/runs", RunsIndex)


# -- 2. one run ------------------------------------------------------------------------------


@pytest.mark.parametrize("disk", ["waits", "computes"])
def test_runs_are_read_in_threads_only_when_the_disk_makes_them_wait(disk: str) -> None:
    """The runs index reads a project's runs in threads when the first reads waited on the
    disk (NFS), and in its own thread when they only computed (a local disk: threads would
    only contend for the GIL). A read that sleeps waits like a remote disk; one that spins
    computes."""
    from localrun._server import runs_index

    folders = [f"run{i}" for i in range(runs_index.PARALLEL * 3)]
    threads: dict[str, str] = {}

    def read(folder: str, listed: dict[str, Any]) -> None:
        if disk == "waits":
            time.sleep(0.002)
        else:
            until = time.thread_time() + 0.002
            while time.thread_time() < until:
                pass
        threads[folder] = threading.current_thread().name

    found = runs_index._each(read, folders, {})
    assert found == [None] * len(folders)  # every folder read, answers in order
    assert set(threads) == set(folders)
    main = threading.current_thread().name
    first = {threads[f] for f in folders[: runs_index.PARALLEL]}
    rest = {threads[f] for f in folders[runs_index.PARALLEL :]}
    assert first == {main}  # the probe: in the calling thread
    if disk == "waits":
        assert main not in rest and len(rest) > 1, rest
    else:
        assert rest == {main}, rest


def test_run_detail(client: Client) -> None:
    r = client.get("/api/v1/runs/p/resumed")
    assert r.status_code == 200
    run = r.json()
    assert run["path"] == "p/resumed" and run["state"] == "finished" and run["problem"] is None
    assert r.headers["etag"].startswith(f'"{run["rev"]}')
    attempts = run["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert attempts[0]["state"] == "crashed" and attempts[1]["state"] == "finished"
    assert attempts[1]["first_step"] == 6 and attempts[1]["exit_code"] == 0
    assert isinstance(attempts[0]["pid"], int) and attempts[0]["host"]
    assert run["keys"] == {"acc": "number", "loss": "number"}
    assert run["config"] == {"lr": 0.1, "opt": {"name": "adam"}}
    assert run["console"] == {"attempts": [1, 2]}
    again = client.get("/api/v1/runs/p/resumed", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_unknown_run_is_404(client: Client) -> None:
    r = client.get("/api/v1/runs/p/nope")
    assert r.status_code == 404
    assert "no run p/nope" in r.json()["error"]
    assert client.get("/api/v1/runs/nope/x/series").status_code == 404


# -- 3. series -------------------------------------------------------------------------------


def test_series_hides_rewound_rows_and_marks_the_resume(client: Client) -> None:
    answer = client.json("/api/v1/runs/p/resumed/series", params={"key": "loss"})
    (loss,) = answer["series"]
    assert loss["key"] == "loss" and loss["downsampled"] is False
    assert loss["x"] == list(range(15)) and loss["count"] == 15
    # steps 0..5 of the first attempt, then 6.. of the second; 6..9 of the first never appear
    assert loss["y"] == [1.0 / (s + 1) for s in range(6)] + [100.0 + s for s in range(6, 15)]
    (marker,) = answer["attempts"]
    assert marker["attempt"] == 2 and marker["step"] == 6 and marker["x"] == 6.0
    assert marker["host"]


def test_series_default_keys_and_other_x_axes(client: Client) -> None:
    answer = client.json("/api/v1/runs/p/resumed/series")
    assert sorted(s["key"] for s in answer["series"]) == ["acc", "loss"]
    stored = localrun.Api(client.root).run("p/resumed")
    table = stored.history()
    for x, column in (("time", "_timestamp"), ("relative", "_runtime")):
        s = client.json("/api/v1/runs/p/resumed/series", params={"key": "loss", "x": x})
        (loss,) = s["series"]
        assert sorted(loss["x"]) == loss["x"]
        assert loss["x"] == sorted(table[column].to_pylist())
        at6 = table[column][table["_step"].to_pylist().index(6)].as_py()
        assert s["attempts"][0]["x"] == at6
    by_acc = client.json("/api/v1/runs/p/resumed/series", params={"key": "loss", "x": "acc"})
    assert by_acc["series"][0]["x"] == [float(s) for s in range(15)]
    assert by_acc["attempts"][0]["x"] == 6.0


def test_series_zoom(client: Client) -> None:
    s = client.json("/api/v1/runs/p/resumed/series", params={"key": "loss", "xmin": 3, "xmax": 7})[
        "series"
    ][0]
    assert s["x"] == [3, 4, 5, 6, 7] and s["count"] == 5


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"key": "nope"}, "key"),
        ({"x": "wall"}, "x="),
        ({"width": "0"}, "width"),
        ({"width": "4001"}, "width"),
        ({"xmin": "abc"}, "xmin"),
        ({"xmin": "5", "xmax": "1"}, "xmin"),
        ({"stream": "disk"}, "stream"),
        ({"stream": "system", "x": "step"}, "x="),
    ],
)
def test_series_bad_parameters(client: Client, params: dict[str, str], named: str) -> None:
    r = client.get("/api/v1/runs/p/resumed/series", params=params)
    assert r.status_code == 400, r.text
    assert named in r.json()["error"]


def test_series_etag_depends_on_query_and_revision(client: Client) -> None:
    url = "/api/v1/runs/p/resumed/series"
    a = client.get(url, params={"key": "loss"})
    assert (
        client.get(
            url, params={"key": "loss"}, headers={"If-None-Match": a.headers["etag"]}
        ).status_code
        == 304
    )
    assert (
        client.get(
            url, params={"key": "acc"}, headers={"If-None-Match": a.headers["etag"]}
        ).status_code
        == 200
    )


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Client, int]]:
    """A run of 1e6 steps: logged for real would take minutes, so its segment is written with
    pyarrow in the run's own format and listed by a second commit (the run logs 10 rows first,
    whose segment is then replaced by one of the same name with a million rows)."""
    root = tmp_path_factory.mktemp("million") / "runs"
    n = 1_000_000
    spike = 654_321
    with localrun.init(project="big", id="m", dir=root, console=False, system_metrics=False) as run:
        for _ in range(10):
            run.log({"loss": 1.0})
    _replace_history(root / "big" / "m", n, spike)
    yield Client(root), spike


def _replace_history(rdir: Path, n: int, spike: int) -> None:
    """Rewrite the run's one segment with ``n`` rows (loss = a slow curve, one spike) and list
    it in a new revision and manifest.json as a writer would."""
    import pyarrow.compute as pc

    manifest = json.loads((rdir / "manifest.json").read_text())
    (seg,) = manifest["segments"]
    steps = pa.array(range(n), pa.int64())
    loss = pc.divide(pa.scalar(1000.0), pc.add(pc.cast(steps, pa.float64()), 1.0))
    values = loss.to_pylist()
    values[spike] = 1e6
    loss = pa.array(values)
    table = pa.table(
        {
            "_step": steps,
            "_timestamp": pc.add(pc.cast(steps, pa.float64()), 1.7e9),
            "_runtime": pc.cast(steps, pa.float64()),
            "loss": loss,
        }
    )
    meta = pq.ParquetFile(rdir / seg["file"]).schema_arrow.metadata
    table = table.replace_schema_metadata(meta)
    pq.write_table(table, rdir / seg["file"])
    seg.update(rows=n, min_step=0, max_step=n - 1, bytes=(rdir / seg["file"]).stat().st_size)
    manifest["last_step"] = n - 1
    manifest["rev"] += 1
    text = json.dumps(manifest)
    (rdir / "log" / f"{manifest['rev']:012d}.json").write_text(text)
    (rdir / "manifest.json").write_text(text)


def test_million_steps_downsampled_keeps_the_spike(million: tuple[Client, int]) -> None:
    client, spike = million
    width = 500
    s = client.json("/api/v1/runs/big/m/series", params={"key": "loss", "width": width})
    (loss,) = s["series"]
    assert loss["count"] == 1_000_000 and loss["downsampled"] is True
    assert len(loss["x"]) <= 2 * width and len(loss["x"]) == len(loss["y"])
    assert loss["x"] == sorted(loss["x"])
    assert max(loss["y"]) == 1e6 and loss["x"][loss["y"].index(1e6)] == spike
    assert loss["x"][0] == 0 and loss["y"][0] == 1000.0  # the first bucket's max, at its x
    assert loss["x"][-1] == 999_999  # the last bucket's min
    # zoomed in around the spike: still there, x within the range
    z = client.json(
        "/api/v1/runs/big/m/series",
        params={"key": "loss", "width": 100, "xmin": spike - 5000, "xmax": spike + 5000},
    )["series"][0]
    assert z["count"] == 10_001 and len(z["x"]) <= 200
    assert 1e6 in z["y"] and min(z["x"]) >= spike - 5000 and max(z["x"]) <= spike + 5000


def test_a_series_asked_again_is_the_same_and_never_another_runs(client: Client) -> None:
    """Series bodies are kept by their ETag (revision and query): asked again, the same body;
    two runs whose ETags agree (same revision, same query) still get their own rows."""
    params = {"key": "loss", "width": 5}
    first = client.get("/api/v1/runs/q/a/series", params=params)
    other = client.get("/api/v1/runs/q/b/series", params=params)
    again = client.get("/api/v1/runs/q/a/series", params=params)
    assert first.headers["etag"] == other.headers["etag"]  # the ETag does not name the run
    assert first.content == again.content
    assert first.json()["series"][0]["y"] != other.json()["series"][0]["y"]


def _tables(client: Client) -> Any:
    """The Tables behind the app's series route."""
    from localrun._server.tables import Tables

    return _behind(client, "/series", Tables)


def test_a_chart_reads_its_keys_and_its_x_column_only(shared_root: Path) -> None:
    """A chart against steps decodes neither clock column (a quarter of the read of a run of
    five metrics); against time it reads that one. The rows are history()'s, rewind included."""
    from localrun._query_series import read_history

    run = localrun.Api(shared_root).run("p/resumed")
    whole = run.history(["loss"])
    by_step = read_history(run, ["_step", "loss"])
    assert by_step.column_names == ["_step", "loss"]
    assert by_step.equals(whole.select(["_step", "loss"]))
    by_time = read_history(run, ["_timestamp", "loss"])
    assert by_time.column_names == ["_step", "_timestamp", "loss"]
    assert by_time.equals(whole.select(["_step", "_timestamp", "loss"]))
    assert whole.column("_step").to_pylist() == list(range(15))  # the rewind to 5 holds


def test_a_zoom_or_a_resize_reads_the_run_once_a_commit_reads_it_again(tmp_path: Path) -> None:
    """A chart asks for the same columns with another range or width (a zoom, a resize) and
    the compare page's bands ask for them too: one read per revision while it is kept, and a
    new commit is read again (its rows are there)."""
    root = tmp_path / "runs"
    with localrun.init(project="p", id="z", dir=root, console=False, system_metrics=False) as run:
        for i in range(100):
            run.log({"loss": float(i)})
    client = Client(root)
    tables = _tables(client)
    url = "/api/v1/runs/p/z/series"
    whole = client.json(url, params={"key": "loss", "width": 10})["series"][0]
    zoomed = client.json(url, params={"key": "loss", "width": 10, "xmin": 20, "xmax": 29})
    wider = client.json(url, params={"key": "loss", "width": 40})["series"][0]
    bands = client.json("/api/v1/group-series", params={"run": "p/z", "key": "loss", "width": 10})
    assert tables.reads == 1
    assert whole["count"] == 100 and wider["count"] == 100 and bands["runs"] == 1
    assert zoomed["series"][0]["x"] == list(range(20, 30))
    with localrun.init(
        project="p", id="z", dir=root, resume="must", console=False, system_metrics=False
    ) as run:
        run.log({"loss": 100.0})
    after = client.json(url, params={"key": "loss", "width": 10})["series"][0]
    assert tables.reads == 2 and after["count"] == 101 and max(after["y"]) == 100.0


def test_downsample_unit_cases() -> None:
    from localrun._query_series import downsample

    # nulls and NaN dropped per series; a short series comes back whole and x-sorted
    s = downsample(
        "k", pa.array([3.0, 1.0, 2.0, 4.0]), pa.array([None, 1.0, float("nan"), 4.0]), 10
    )
    assert (s.x, s.y, s.count, s.downsampled) == ([1.0, 4.0], [1.0, 4.0], 2, False)
    # 3 buckets over 0..8: each bucket gives its min and max point at their own x
    xs = pa.array([float(i) for i in range(9)])
    ys = pa.array([5.0, 9.0, 1.0, 2.0, 2.0, 2.0, 7.0, 0.0, 3.0])
    d = downsample("k", xs, ys, 3)
    assert d.downsampled and d.count == 9
    assert list(zip(d.x, d.y, strict=True)) == [
        (1.0, 9.0),
        (2.0, 1.0),
        (3.0, 2.0),
        (6.0, 7.0),
        (7.0, 0.0),
    ]


# -- 4. group series -------------------------------------------------------------------------


def test_group_series_mean_and_band_on_one_grid(client: Client) -> None:
    g = client.json(
        "/api/v1/group-series",
        params={"run": ["q/a", "q/b", "q/c"], "key": "loss", "width": 5},
    )
    assert g["runs"] == 3 and g["n"] == [3] * 5
    assert g["x"] == pytest.approx([0.4, 1.2, 2.0, 2.8, 3.6])
    losses = (0.9, 0.5, 0.2)
    mean = sum(losses) / 3
    std = (sum((v - mean) ** 2 for v in losses) / 3) ** 0.5
    assert g["mean"] == pytest.approx([mean + s for s in range(5)])
    assert g["min"] == pytest.approx([0.2 + s for s in range(5)])
    assert g["max"] == pytest.approx([0.9 + s for s in range(5)])
    assert g["std"] == pytest.approx([std] * 5)
    zoomed = client.json(
        "/api/v1/group-series",
        params={"run": ["q/a", "q/b"], "key": "loss", "width": 2, "xmin": 2, "xmax": 4},
    )
    assert zoomed["x"] == [2.5, 3.5] and zoomed["n"] == [2, 2]  # 2 | 3,4 in two buckets
    assert zoomed["mean"] == pytest.approx([0.7 + 2, 0.7 + 3.5])
    assert g["attempts"] == zoomed["attempts"] == []  # never resumed
    # a resumed run in a group: where its second attempt starts (after the rewind to step 5)
    resumed = client.json(
        "/api/v1/group-series", params={"run": ["p/resumed", "q/a"], "key": "loss"}
    )
    (marker,) = resumed["attempts"]
    assert (marker["run"], marker["attempt"], marker["step"], marker["x"]) == (
        "p/resumed",
        2,
        6,
        6.0,
    )


def test_group_series_refusals(client: Client) -> None:
    assert "run=" in client.json("/api/v1/group-series", 400, params={"key": "loss"})["error"]
    assert "key=" in client.json("/api/v1/group-series", 400, params={"run": "q/a"})["error"]
    r = client.get("/api/v1/group-series", params={"run": ["q/a", "q/zz"], "key": "loss"})
    assert r.status_code == 404 and "q/zz" in r.json()["error"]
    r = client.get("/api/v1/group-series", params={"run": "q/a", "key": "acc"})
    assert r.status_code == 400 and "acc" in r.json()["error"]


# -- 5. console ------------------------------------------------------------------------------


def test_console_of_two_attempts(client: Client) -> None:
    r = client.get("/api/v1/runs/p/resumed/console")
    assert r.status_code == 200 and r.headers["content-type"] == "text/plain; charset=utf-8"
    text = r.text
    assert text.index("=== localrun: attempt 1") < text.index("first attempt says hi")
    assert text.index("first attempt says hi") < text.index("=== localrun: attempt 2")
    assert text.index("=== localrun: attempt 2") < text.index("second attempt says hi")
    assert int(r.headers["x-localrun-console-bytes"]) == len(text.encode())
    second = client.get("/api/v1/runs/p/resumed/console", params={"attempt": 2}).text
    assert "second attempt says hi" in second and "first attempt" not in second
    tail = client.get("/api/v1/runs/p/resumed/console", params={"tail": 15})
    assert tail.text == text[-15:]
    assert tail.headers["x-localrun-console-bytes"] == r.headers["x-localrun-console-bytes"]
    again = client.get(
        "/api/v1/runs/p/resumed/console", headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304
    bad = client.get("/api/v1/runs/p/resumed/console", params={"attempt": "x"})
    assert bad.status_code == 400 and "attempt" in bad.json()["error"]


# -- 6. to 8. media, blobs, files ------------------------------------------------------------


@pytest.fixture(scope="module")
def media_client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    import numpy as np

    base = tmp_path_factory.mktemp("media")
    root = base / "runs"
    model = base / "model.pt"
    with localrun.init(project="m", id="r", dir=root, console=False, system_metrics=False) as run:
        for step in range(3):
            pixels = np.full((4, 6, 3), step * 40, dtype=np.uint8)
            run.log(
                {
                    "samples": [localrun.Image(pixels, caption=f"s{step}")],
                    "weights": localrun.Histogram(np_histogram=([1, 2, 3], [0.0, 1.0, 2.0, 3.0])),
                    "preds": localrun.Table(
                        columns=["a", "b"], data=[[i, f"v{i}"] for i in range(1500)]
                    ),
                    "loss": float(step),
                },
                step=step * 10,
            )
            if step < 2:
                model.write_bytes(f"weights of step {step}".encode())
                run.save(str(model), base_path=str(base))
    return Client(root)


def test_media_steps_and_items(media_client: Client) -> None:
    listed = media_client.json("/api/v1/runs/m/r/media", params={"key": "samples"})
    assert listed == {"key": "samples", "kind": "list<media>", "steps": [0, 10, 20]}
    (image,) = media_client.json("/api/v1/runs/m/r/media", params={"key": "samples", "step": 10})[
        "items"
    ]
    assert image["type"] == "image" and (image["width"], image["height"]) == (6, 4)
    assert image["caption"] == "s1" and image["url"].startswith("/api/v1/runs/m/r/blob/media/")
    png = media_client.get(image["url"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert png.headers["content-type"] == "image/png"
    assert "immutable" in png.headers["cache-control"]
    assert (
        media_client.get(image["url"], headers={"If-None-Match": png.headers["etag"]}).status_code
        == 304
    )
    (hist,) = media_client.json("/api/v1/runs/m/r/media", params={"key": "weights", "step": 0})[
        "items"
    ]
    assert hist == {
        "type": "histogram",
        "counts": [1, 2, 3],
        "edges": [0, 1, 2, 3],
        "caption": None,
    }
    (table,) = media_client.json("/api/v1/runs/m/r/media", params={"key": "preds", "step": 20})[
        "items"
    ]
    assert table["type"] == "table" and table["columns"] == ["a", "b"]
    assert table["total_rows"] == 1500 and len(table["rows"]) == 1000
    assert table["rows"][7] == [7, "v7"]


def test_media_refusals(media_client: Client) -> None:
    r = media_client.get("/api/v1/runs/m/r/media", params={"key": "loss"})
    assert r.status_code == 400 and "samples" in r.json()["error"]  # names the media keys
    r = media_client.get("/api/v1/runs/m/r/media", params={"key": "samples", "step": 5})
    assert r.status_code == 404 and "step 5" in r.json()["error"]


def test_files_with_versions(media_client: Client) -> None:
    run = media_client.json("/api/v1/runs/m/r")
    (entry,) = run["files"]
    assert entry["name"] == "model.pt" and len(entry["versions"]) == 2
    first, second = entry["versions"]
    latest = media_client.get("/api/v1/runs/m/r/files/model.pt")
    assert latest.status_code == 200 and latest.content == b"weights of step 1"
    assert latest.headers["content-disposition"] == 'attachment; filename="model.pt"'
    old = media_client.get("/api/v1/runs/m/r/files/model.pt", params={"version": first["version"]})
    assert old.content == b"weights of step 0"
    assert old.headers["etag"] == f'"{first["sha256"]}"' != latest.headers["etag"]
    assert second["size"] == len(b"weights of step 1")
    r = media_client.get("/api/v1/runs/m/r/files/model.pt", params={"version": "v9"})
    assert r.status_code == 404 and first["version"] in r.json()["error"]
    r = media_client.get("/api/v1/runs/m/r/files/other.bin")
    assert r.status_code == 404 and "model.pt" in r.json()["error"]


# -- security: no URL reads outside the root ---------------------------------------------------

SECRET = b"top secret outside the root"


def raw_get(app: Any, raw_path: bytes) -> tuple[int, bytes]:
    """GET ``raw_path`` exactly as sent (httpx would normalise ``..`` away): the scope a server
    makes of it, its path percent-decoded as uvicorn does."""
    from urllib.parse import unquote_to_bytes

    target, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote_to_bytes(target).decode("utf-8", "surrogateescape"),
        "raw_path": target,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        done = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # the client hangs up once it has the whole answer
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    asyncio.run(main())
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


@pytest.fixture(scope="module")
def hostile(media_client: Client, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """The media root, plus a secret next to it, a run folder that is a symbolic link to a run
    outside the root, and a saved file and a media blob swapped for links to the secret."""
    import shutil

    root = media_client.root
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_bytes(SECRET)
    shutil.copytree(root / "m" / "r", outside / "r")
    (root / "m" / "linked").symlink_to(outside / "r")
    shutil.copytree(root / "m" / "r", root / "m" / "swapped")
    _retarget(root / "m" / "swapped")
    swapped = root / "m" / "swapped"
    for version in json.loads((swapped / "manifest.json").read_text())["files"]["model.pt"]:
        target = swapped / version["path"]
        target.unlink()
        target.symlink_to(outside / "secret.txt")
    for blob in (swapped / "media").rglob("*.png"):
        blob.unlink()
        blob.symlink_to(outside / "secret.txt")
    return Client(root)


def _retarget(rdir: Path) -> None:
    """A copied run folder renamed: its revisions say its new id."""
    for f in [rdir / "manifest.json", *(rdir / "log").iterdir()]:
        doc = json.loads(f.read_text())
        doc["id"] = rdir.name
        f.write_text(json.dumps(doc))


ESCAPES = [
    b"/api/v1/runs/%2e%2e/m",
    b"/api/v1/runs/m/%2e%2e",
    b"/api/v1/runs/m/..",
    b"/api/v1/runs/../m/r",
    b"/api/v1/runs/m%2f..%2fm/r",
    b"/api/v1/runs/m/r%2f..%2fswapped",
    b"/api/v1/runs/m/r%00",
    b"/api/v1/runs/m/linked",
    b"/api/v1/runs/m/linked/series",
    b"/api/v1/runs/m/linked/console",
    b"/api/v1/runs/m/linked/files/model.pt",
    b"/api/v1/runs/%2fetc/r",
    b"/api/v1/runs/m/r/series?x=..%2f..%2fsecret",
    b"/api/v1/runs/m/r/media?key=..%2f..%2fsecret.txt",
    b"/api/v1/runs/m/r/console?attempt=%2e%2e",
    b"/api/v1/runs/m/r/files/..%2f..%2f..%2foutside%2fsecret.txt",
    b"/api/v1/runs/m/r/files/%2e%2e/%2e%2e/manifest.json",
    b"/api/v1/runs/m/r/files//etc/passwd",
    b"/api/v1/runs/m/r/files/%2Fetc%2Fpasswd",
    b"/api/v1/runs/m/r/files/model.pt%00.txt",
    b"/api/v1/runs/m/r/files/model.pt?version=..%2f..%2fmanifest.json",
    b"/api/v1/runs/m/r/blob/..%2f..%2fmanifest.json",
    b"/api/v1/runs/m/r/blob/media/%2e%2e/%2e%2e/manifest.json",
    b"/api/v1/runs/m/r/blob//etc/passwd",
    b"/api/v1/runs/m/r/blob/media/ab/" + b"a" * 64 + b".png",
    b"/api/v1/runs/m/swapped/files/model.pt",
    b"/api/v1/group-series?run=m/..&key=loss",
    b"/api/v1/group-series?run=m/linked&key=loss",
    b"/api/v1/group-series?run=..%2fm/r&key=loss",
    b"/api/v1/runs?project=..",
    b"/api/v1/runs?project=%2fetc",
]


@pytest.mark.parametrize("raw", ESCAPES, ids=[e.decode() for e in ESCAPES])
def test_no_url_reads_outside_the_root(hostile: Client, raw: bytes) -> None:
    status, body = raw_get(hostile.app, raw)
    assert status in (400, 404, 422), (status, body[:200])
    assert SECRET not in body
    assert json.loads(body)["error"]


def test_a_symlinked_blob_is_refused(hostile: Client) -> None:
    (image,) = hostile.json("/api/v1/runs/m/swapped/media", params={"key": "samples", "step": 0})[
        "items"
    ]
    status, body = raw_get(hostile.app, image["url"].encode())
    assert status == 422 and SECRET not in body
    assert "symbolic link" in json.loads(body)["error"]


def test_the_real_files_are_still_served(hostile: Client) -> None:
    """The refusals above are about the addresses, not a broken root."""
    status, body = raw_get(hostile.app, b"/api/v1/runs/m/r/files/model.pt")
    assert status == 200 and body == b"weights of step 1"
    listed = [r["path"] for r in hostile.json("/api/v1/runs")["runs"]]
    # the symbolically linked run folder (a copy of m/r outside the root) is not listed
    assert sorted(listed) == ["m/r", "m/swapped"]


# -- damaged runs ----------------------------------------------------------------------------


def test_damaged_runs_are_listed_and_never_break_the_list(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for run_id in ("ok", "garbage", "truncated"):
        with localrun.init(
            project="d", id=run_id, dir=root, console=False, system_metrics=False
        ) as run:
            for step in range(5):
                run.log({"loss": float(step)})
    garbage = root / "d" / "garbage"
    for f in [garbage / "manifest.json", *(garbage / "log").iterdir()]:
        f.write_bytes(b"\x00not json{{{")
    truncated = root / "d" / "truncated"
    (segment,) = (truncated / "history").glob("*.parquet")
    segment.write_bytes(segment.read_bytes()[:40])
    client = Client(root)

    page = client.json("/api/v1/runs")
    rows = {r["path"]: r for r in page["runs"]}
    assert set(rows) == {"d/ok", "d/garbage", "d/truncated"} and page["total"] == 3
    assert rows["d/garbage"]["state"] == "damaged" and rows["d/garbage"]["problem"]
    assert rows["d/ok"]["state"] == "finished" and "problem" not in rows["d/ok"]
    assert [
        r["path"] for r in client.json("/api/v1/runs", params={"state": "damaged"})["runs"]
    ] == ["d/garbage"]

    detail = client.json("/api/v1/runs/d/garbage")
    assert detail["state"] == "damaged" and detail["problem"] == rows["d/garbage"]["problem"]
    r = client.get("/api/v1/runs/d/garbage/series")
    assert r.status_code == 422 and "damaged" in r.json()["error"]

    # a damaged segment: the run reads (listed, detail), its series names the repair
    assert client.json("/api/v1/runs/d/truncated")["state"] == "finished"
    r = client.get("/api/v1/runs/d/truncated/series")
    assert r.status_code == 422 and "verify --repair" in r.json()["error"]
    assert client.json("/api/v1/runs/d/ok/series")["series"][0]["y"] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_unknown_api_address_is_a_json_404(client: Client) -> None:
    r = client.get("/api/v1/nothing/here")
    assert r.status_code == 404 and "/api/v1/runs" in r.json()["error"]


# -- live runs, crashed runs, many runs, system metrics ---------------------------------------


def test_a_live_run_changes_its_etag_and_grows(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    run = localrun.init(project="live", id="r", dir=root, console=False, system_metrics=False)
    for _ in range(5):
        run.log({"loss": 1.0})
    run.flush()
    client = Client(root)
    url = "/api/v1/runs/live/r/series"
    first = client.get(url, params={"key": ["loss", "later"]})
    series = {s["key"]: s for s in first.json()["series"]}
    assert series["loss"]["count"] == 5 and series["later"]["count"] == 0  # not committed yet
    detail = client.get("/api/v1/runs/live/r")
    assert detail.json()["state"] == "running"
    for _ in range(5):
        run.log({"loss": 2.0, "later": 3.0})
    run.flush()
    tag = {"If-None-Match": first.headers["etag"]}
    second = client.get(url, params={"key": ["loss", "later"]}, headers=tag)
    assert second.status_code == 200 and second.headers["etag"] != first.headers["etag"]
    series = {s["key"]: s for s in second.json()["series"]}
    assert series["loss"]["count"] == 10 and series["later"]["y"] == [3.0] * 5
    assert (
        client.get(
            "/api/v1/runs/live/r", headers={"If-None-Match": detail.headers["etag"]}
        ).status_code
        == 200
    )
    run.finish()
    assert client.json("/api/v1/runs")["runs"][0]["state"] == "finished"


def test_a_killed_run_shows_crashed_without_a_commit(tmp_path: Path) -> None:
    """Its revision still says running; its owner is provably dead on this host."""
    root = tmp_path / "runs"
    killed = run_py(FIRST_ATTEMPT, root)
    assert killed.returncode == -signal.SIGKILL
    client = Client(root)
    (row,) = client.json("/api/v1/runs")["runs"]
    assert row["state"] == "crashed" and row["attempts"] == 1
    assert [r["id"] for r in client.json("/api/v1/runs", params={"state": "crashed"})["runs"]] == [
        "resumed"
    ]
    assert client.json("/api/v1/runs/p/resumed")["state"] == "crashed"
    assert (
        client.json("/api/v1/runs/p/resumed/series", params={"key": "loss"})["series"][0]["count"]
        == 10
    )


OTHER_NODE_WRITER = """
import time, localrun._store.lease as lease
lease.HOST = "other-node"  # this process plays a writer on another machine of the cluster
import localrun
run = localrun.init(project="p", id="far", flush_interval=0.1, console=False,
                    system_metrics=False)
print("ready", flush=True)
for i in range(100_000):
    run.log({"loss": float(i)})
    time.sleep(0.05)
"""


def test_a_still_heartbeat_on_another_node_shows_crashed_and_a_moving_one_running(
    tmp_path: Path,
) -> None:
    """The cluster's usual death: the writer's node dies, nothing on this host can see its
    pid. The dashboard watches the lease's heartbeat on its own clock (DESIGN §5): still for
    a TTL shows crashed (derived: the revision still says running), moving again shows
    running. The TTL is long enough that a loaded machine cannot starve a live heartbeat
    (every TTL/3) for all of it."""
    ttl = 6.0
    root = tmp_path / "runs"
    proc = spawn(OTHER_NODE_WRITER, root, LOCALRUN_LEASE_TTL=str(ttl))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr
    client = Client(root)

    def states() -> tuple[str, str]:
        (row,) = client.json("/api/v1/runs")["runs"]
        return row["state"], client.json("/api/v1/runs/p/far")["state"]

    def until(wanted: str) -> int:
        """Polls (every 0.2 s) until both the runs page and the run page show ``wanted``."""
        deadline = time.monotonic() + 20 * ttl  # only catches a hang
        polls = 0
        while states() != (wanted, wanted):
            polls += 1
            assert time.monotonic() < deadline, f"never {wanted}: {states()}"
            time.sleep(0.2)
        return polls

    try:
        watched_until = time.monotonic() + ttl + 2.0  # a whole TTL and more, watching it move
        seen = set()
        while time.monotonic() < watched_until:
            seen.add(states())
            time.sleep(0.2)
        assert seen == {("running", "running")}
        proc.send_signal(signal.SIGSTOP)  # a hung node: its heartbeat stands still
        assert until("crashed") >= 1
        assert localrun.Api(root).run("p/far").state == "running"  # nothing was written
        proc.send_signal(signal.SIGCONT)  # it wakes and beats again
        until("running")
        proc.kill()  # the node dies for good
        proc.wait(timeout=30)
        assert until("crashed") >= 1
        (row,) = client.json("/api/v1/runs", params={"state": "crashed"})["runs"]
        assert row["id"] == "far"
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _many_runs(root: Path, **init: Any) -> int:
    """runs_index.BULK + 10 runs in project "many" (r000, r001, ...), copies of one real run:
    enough to take the index's first-fill path. Returns how many."""
    from localrun._server.runs_index import BULK

    with localrun.init(
        project="many", id="r000", dir=root, console=False, system_metrics=False, **init
    ) as run:
        run.log({"loss": 1.0})
    n = BULK + 10
    for i in range(1, n):
        shutil.copytree(root / "many" / "r000", root / "many" / f"r{i:03d}")
        _retarget(root / "many" / f"r{i:03d}")
    return n


def test_a_project_of_many_runs_is_read_once(tmp_path: Path) -> None:
    """More than runs_index.BULK new runs in a project: read through its listing, once."""
    root = tmp_path / "runs"
    n = _many_runs(root, config={"seed": 0})
    client = Client(root)
    index = _index(client)
    page = client.json("/api/v1/runs", params={"limit": 1000, "sort": "id", "order": "asc"})
    assert page["total"] == n and [r["id"] for r in page["runs"]] == [f"r{i:03d}" for i in range(n)]
    assert index.reads == n
    client.json("/api/v1/runs", params={"where": "config.seed=0"})
    assert index.reads == n
    shutil.rmtree(root / "many" / "r005")
    assert client.json("/api/v1/runs")["total"] == n - 1 and index.reads == n


def test_a_new_server_starts_from_the_runs_page_the_last_one_saved(tmp_path: Path) -> None:
    """A server's first runs page reads every run's revision (seconds for 10,000 runs); the
    file the last server left in the project (``.runs-page.json``, runs_cache) gives it each
    run still at the revision it read, proven with two lookups and no read. A run changed
    since is read again (never a stale row), and a damaged file is ignored whole."""
    root = tmp_path / "runs"
    n = _many_runs(root, config={"seed": 0, "opt": {"lr": 0.1}}, notes="baseline", tags=["a", "b"])
    query = {"limit": 1000, "sort": "id", "order": "asc"}
    first = Client(root)
    before = first.json("/api/v1/runs", params=query)["runs"]
    assert _index(first).reads == n and (root / "many" / ".runs-page.json").is_file()

    with localrun.init(
        project="many", id="r007", dir=root, resume="must", console=False, system_metrics=False
    ) as run:
        run.log({"loss": 0.25})
    (root / "many" / ".listing.json").unlink()
    second = Client(root)
    after = second.json("/api/v1/runs", params=query)["runs"]
    assert _index(second).reads == 1  # r007 alone: the others are proven current
    assert not (root / "many" / ".listing.json").exists()  # nor read through the listing
    changed = after[7]
    assert changed["id"] == "r007" and changed["summary"]["loss"] == 0.25
    assert changed["attempts"] == 2 and changed["rev"] > before[7]["rev"]
    assert after[:7] + after[8:] == before[:7] + before[8:]
    assert after[3]["config"] == {"seed": 0, "opt.lr": 0.1} and after[3]["tags"] == ["a", "b"]
    found = second.json("/api/v1/runs", params={"q": "BASELINE", "where": "config.opt.lr=0.1"})
    assert found["total"] == n  # the search text and the values came back from the file too

    (root / "many" / ".runs-page.json").write_text('{"version": 2, "runs": {"r001": [1, 2]}}')
    third = Client(root)
    assert third.json("/api/v1/runs", params=query)["runs"] == after
    assert _index(third).reads == n


class _HeldFill:
    """The runs index's reads, held inside the ``at``-th until ``release`` is set: a first
    fill (in the server's own prefill thread) stopped at a known point, by Events, not time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int) -> None:
        from localrun._server import runs_index

        real = runs_index._read
        self.calls: list[str] = []
        self.held, self.release = threading.Event(), threading.Event()

        def read(folder: str, listed: dict[str, Any]) -> Any:
            self.calls.append(folder)
            if len(self.calls) == at:
                self.held.set()
                self.release.wait(60)
            return real(folder, listed)

        monkeypatch.setattr(runs_index, "_read", read)

    def again(self) -> None:
        """Hold the next fill at the same read."""
        self.calls.clear()
        self.held.clear()
        self.release.clear()


def test_a_runs_page_asked_during_the_first_fill_shows_the_runs_read_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first fill of many runs takes seconds (minutes on a cold NFS root): the dashboard asks
    with ``partial=1`` and gets the runs read so far, and how far the fill got; any other
    client waits for the whole list. Here the fill is held, in the server's own prefill
    thread, inside its third part's first read."""
    from localrun._server import runs_index

    root = tmp_path / "runs"
    n = _many_runs(root)
    monkeypatch.setattr(runs_index, "CHUNK", 20)
    fill = _HeldFill(monkeypatch, at=41)
    client = Client(root)  # its prefill thread starts the fill
    try:
        assert fill.held.wait(60), "the fill never reached its third part"
        query = {"sort": "id", "order": "asc", "limit": 1000}
        page = client.json("/api/v1/runs", params={**query, "partial": "1"})
        assert page["reading"] == {"read": 40, "of": n}
        assert [r["id"] for r in page["runs"]] == [f"r{i:03d}" for i in range(40)]
        assert page["total"] == 40
        assert (
            client.json("/api/v1/runs", params={**query, "partial": "1", "q": "r01"})["total"] == 10
        )  # filters and search work on what was read
        whole: list[Any] = []
        waiting = threading.Thread(target=lambda: whole.append(client.json("/api/v1/runs")))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not whole  # without partial=1: the whole list, later
    finally:
        fill.release.set()
    waiting.join(60)
    assert whole and whole[0]["total"] == n and "reading" not in whole[0]
    done = client.json("/api/v1/runs", params={**query, "partial": "1"})
    assert "reading" not in done and done["total"] == n
    assert [r["id"] for r in done["runs"]] == [f"r{i:03d}" for i in range(n)]


def test_a_root_of_small_projects_shows_the_projects_read_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress is per part of a large project, and per project where each is small; a
    small root never answers partially (its page would flicker from part to whole)."""
    from localrun._server import runs_index

    root = tmp_path / "runs"
    _many_runs(root)
    for project in ("a", "b", "c"):
        for i in range(12):
            rdir = root / project / f"r{i:02d}"
            shutil.copytree(root / "many" / "r000", rdir)
            for f in [rdir / "manifest.json", *(rdir / "log").iterdir()]:
                doc = json.loads(f.read_text())
                doc["project"], doc["id"] = project, rdir.name
                f.write_text(json.dumps(doc))
    shutil.rmtree(root / "many")
    monkeypatch.setattr(runs_index, "CHUNK", 30)  # 36 runs: enough to show progress
    fill = _HeldFill(monkeypatch, at=25)  # the first read of project c
    client = Client(root)
    try:
        assert fill.held.wait(60), "the fill never reached project c"
        page = client.json("/api/v1/runs", params={"partial": "1", "limit": 100})
        assert page["reading"] == {"read": 24, "of": 36}
        assert sorted({r["project"] for r in page["runs"]}) == ["a", "b"]
    finally:
        fill.release.set()
    assert client.json("/api/v1/runs")["total"] == 36  # waits for the fill's end
    assert "reading" not in client.json("/api/v1/runs", params={"partial": "1"})

    monkeypatch.setattr(runs_index, "CHUNK", 500)  # the same root is a small one
    fill.again()
    small = Client(root)
    assert fill.held.wait(60)
    answer: list[Any] = []
    asking = threading.Thread(
        target=lambda: answer.append(small.json("/api/v1/runs", params={"partial": "1"}))
    )
    asking.start()
    asking.join(0.5)
    assert asking.is_alive()  # it waits for the whole list
    fill.release.set()
    asking.join(60)
    assert answer and answer[0]["total"] == 36 and "reading" not in answer[0]


def test_the_dashboards_answers_never_import_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas at the first ``to_numpy``, ``group_by`` or conversion of a Python
    value (0.35 s holding the GIL): a server paid it at its first chart, beside its first runs
    page. Every route the pages use answers without it."""
    import importlib.util

    assert importlib.util.find_spec("pandas") is not None, "the dev extra installs pandas"
    code = """
        import asyncio, sys, httpx, localrun
        for rid, rewind in (("a", None), ("b", None), ("a", 150)):
            with localrun.init(project="p", id=rid, resume="allow", rewind_to=rewind,
                               config={"seed": 1}, system_metrics=0.02) as run:
                for i in range(300):
                    run.log({"loss": 1.0 / (i + 1), "epoch": i // 100} if i % 7 else {"val": 1.0})
        from localrun._server.app import create_app
        app = create_app(sys.argv[1], token=None, pushes=False)
        async def main():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                for url, params in [
                    ("/api/v1/runs", {}),
                    ("/api/v1/runs/p/a", {}),
                    ("/api/v1/runs/p/a/series", {"width": 300}),
                    ("/api/v1/runs/p/a/series", {"x": "time", "key": "val"}),
                    ("/api/v1/runs/p/a/series", {"x": "relative"}),
                    ("/api/v1/runs/p/a/series", {"x": "epoch", "key": "loss"}),
                    ("/api/v1/runs/p/a/series", {"stream": "system", "x": "time"}),
                    ("/api/v1/group-series", {"run": ["p/a", "p/b"], "key": "loss"}),
                    ("/api/v1/runs/p/a/console", {}),
                ]:
                    r = await c.get(url, params=params)
                    assert r.status_code == 200, (url, r.text)
        asyncio.run(main())
        print("pandas imported" if "pandas" in sys.modules else "no pandas")
    """
    root = tmp_path / "runs"
    done = run_py(code.replace("sys.argv[1]", repr(str(root))), root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "no pandas"


def test_system_series_by_time(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with localrun.init(project="s", id="r", dir=root, console=False, system_metrics=0.05) as run:
        for step in range(5):
            run.log({"loss": float(step)})
            time.sleep(0.05)
    client = Client(root)
    keys = client.json("/api/v1/runs/s/r")["system_keys"]
    assert "memory/process_rss_mb" in keys
    s = client.json(
        "/api/v1/runs/s/r/series",
        params={"stream": "system", "x": "time", "key": "memory/process_rss_mb"},
    )
    (rss,) = s["series"]
    assert rss["count"] >= 1 and all(v > 0 for v in rss["y"])
    assert all(abs(x - time.time()) < 600 for x in rss["x"])  # epoch seconds
    default = client.json("/api/v1/runs/s/r/series", params={"stream": "system", "x": "relative"})
    assert {d["key"] for d in default["series"]} == set(keys)


def _first_visible_steps(stored: Any) -> dict[int, int]:
    """The oracle: each attempt's first visible step, found by matching the visible rows to
    the rows of every attempt by (step, timestamp)."""
    visible = stored.history()
    everything = stored.history(all_attempts=True)
    origin = {
        (s, t): a
        for s, t, a in zip(
            everything["_step"].to_pylist(),
            everything["_timestamp"].to_pylist(),
            everything["_attempt"].to_pylist(),
            strict=True,
        )
    }
    firsts: dict[int, int] = {}
    for s, t in zip(visible["_step"].to_pylist(), visible["_timestamp"].to_pylist(), strict=True):
        a = origin[(s, t)]
        firsts[a] = min(firsts.get(a, s), s)
    return firsts


def test_resume_markers_across_rewinds_and_compaction(tmp_path: Path) -> None:
    """Many attempts, some resumed from older checkpoints and one rewound mid-attempt, then
    merged across attempts by compaction: each marker sits at its attempt's first visible row."""
    from tests.test_compaction import _make_attempts, _resume_once

    root = tmp_path / "runs"
    _make_attempts(root, n=6)
    client = Client(root)
    stored = localrun.Api(root).run("p/r")
    expected = _first_visible_steps(stored)
    assert stored.manifest["rewinds"] and len(expected) == 6

    def markers() -> dict[int, int]:
        answer = client.json("/api/v1/runs/p/r/series", params={"key": "loss"})
        return {m["attempt"]: m["step"] for m in answer["attempts"]}

    assert markers() == {a: s for a, s in expected.items() if a > 1}
    _resume_once(root)  # attempt 7 logs nothing and merges the earlier attempts' segments
    stored = localrun.Api(root).run("p/r")
    assert any(s.get("level") for s in stored.manifest["segments"])  # really merged
    assert _first_visible_steps(stored) == expected
    assert markers() == {a: s for a, s in expected.items() if a > 1}


def test_a_damaged_run_is_read_again_only_when_its_files_change(tmp_path: Path) -> None:
    """Reading a damaged revision waits for a writer that might be finishing it: a poll of
    the runs page must not pay that for a run that is still the same damaged run."""
    root = tmp_path / "runs"
    for run_id in ("ok", "bad"):
        with localrun.init(
            project="d", id=run_id, dir=root, console=False, system_metrics=False
        ) as run:
            run.log({"loss": 1.0})
    bad = root / "d" / "bad"
    revisions = sorted((bad / "log").iterdir())
    kept = revisions[-1].read_bytes()
    for f in [bad / "manifest.json", *revisions]:
        f.write_bytes(b"garbage")
    client = Client(root)
    index = _index(client)
    assert client.json("/api/v1/runs", params={"state": "damaged"})["total"] == 1
    assert index.reads == 2
    assert client.json("/api/v1/runs", params={"state": "damaged"})["total"] == 1
    assert index.reads == 2  # nothing re-read
    revisions[-1].write_bytes(kept)  # put back by hand: the run reads again
    rows = {r["id"]: r["state"] for r in client.json("/api/v1/runs")["runs"]}
    assert rows == {"ok": "finished", "bad": "finished"} and index.reads == 3


def test_a_started_server_imports_nothing_for_its_first_chart(tmp_path: Path) -> None:
    """A fresh server's first answers paid for imports and first calls (anyio's worker
    threads, the Parquet reader, numpy's kernels: 100 ms and more) that later answers do not:
    the first chart a user opened was the slowest. The app's start pays them, before the
    address is printed (``ready``): the first runs page, run page and chart of a real uvicorn
    server import none of the server's modules."""
    writer = """
        import localrun
        with localrun.init(project="p", id="a", system_metrics=False) as run:
            for i in range(300):
                run.log({"loss": 1.0 / (i + 1)})
    """
    code = """
        import http.client, socket, sys, threading, uvicorn
        from localrun._server.app import create_app
        started = threading.Event()
        seen = {}
        def ready():
            seen["modules"] = set(sys.modules)
            started.set()
        app = create_app(sys.argv[1], token=None, pushes=False, ready=ready)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # as serve() does: connections wait in the backlog, never refused
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        serving.start()
        assert started.wait(60), "the app never started"
        for url in ["/", "/api/v1/runs", "/api/v1/runs/p/a", "/api/v1/runs/p/a/series?width=300"]:
            conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=60)
            conn.request("GET", url)
            answer = conn.getresponse()
            assert answer.status == 200, (url, answer.read())
            answer.read()
            conn.close()
        ours = ("localrun", "pyarrow", "numpy", "anyio", "starlette", "uvicorn")
        new = sorted(m for m in set(sys.modules) - seen["modules"] if m.split(".")[0] in ours)
        print("imported:", " ".join(new))
        server.should_exit = True
        serving.join(60)  # a clean shutdown, not a daemon thread cut off at exit
        assert not serving.is_alive(), "the server did not stop"
    """
    root = tmp_path / "runs"
    wrote = run_py(writer, root, timeout=120)
    assert wrote.returncode == 0, wrote.stderr
    done = run_py(code.replace("sys.argv[1]", repr(str(root))), root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "imported:"
