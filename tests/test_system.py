"""System metrics: a sampler thread records the process's and the host's load in a stream of
its own, keyed by time; never the user's steps. Real processes doing real work."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

import localrun
from tests.conftest import run_py

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc only")

WORKER = """
import threading, time, localrun
run = localrun.init(project="s", id="{id}", system_metrics=0.05)
for step in range(10):
    run.log({{"loss": float(step)}})
if {busy}:
    hog = bytearray(300 * 2**20)  # touched, so it is resident
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    end = time.time() + 1.5
    x = 0
    while time.time() < end:
        x += 1
else:
    time.sleep(1.5)
run.finish()
"""


def test_a_busy_process_shows_in_its_samples_and_the_steps_are_untouched(root: Path) -> None:
    for rid, busy in (("busy", True), ("idle", False)):
        out = run_py(WORKER.format(id=rid, busy=busy), root)
        assert out.returncode == 0, out.stderr
    api = localrun.Api(root)
    busy, idle = (api.run(f"s/{r}").history(stream="system") for r in ("busy", "idle"))
    assert busy.num_rows >= 3 and idle.num_rows >= 3
    assert "_step" not in busy.column_names
    for key in (
        "cpu/process_percent",
        "cpu/host_percent",
        "memory/process_rss_mb",
        "memory/host_percent",
        "disk/write_mb_s",
        "net/recv_mb_s",
        "process/threads",
    ):
        assert key in busy.column_names, key
    peak = pc.max(busy["memory/process_rss_mb"]).as_py()
    assert peak > 250, f"300 MB resident, the samples say {peak:.0f} MB"
    assert pc.max(idle["memory/process_rss_mb"]).as_py() < peak - 200
    assert (
        pc.mean(busy["cpu/process_percent"]).as_py() > pc.mean(idle["cpu/process_percent"]).as_py()
    )
    times = busy["_timestamp"].to_pylist()
    assert times == sorted(times)
    # The user's steps are the user's: ten rows, steps 0..9, whatever was sampled meanwhile.
    assert api.run("s/busy").history(["loss"]).column("_step").to_pylist() == list(range(10))


def test_many_samples_merge_into_few_segments_and_keep_every_sample(root: Path) -> None:
    api = localrun.Api(root)
    with localrun.init(project="s", id="m", dir=root, system_metrics=0.01, flush_interval=0.02):
        deadline = time.monotonic() + 120
        while not any(e.get("level") == 1 for e in api.run("s/m").manifest.get("system", [])):
            assert time.monotonic() < deadline, "no merge of system segments in 120 s"
            time.sleep(0.05)
    stored = api.run("s/m")
    entries = stored.manifest["system"]
    table = stored.history(stream="system")
    assert len(entries) < 16
    assert table.num_rows == sum(e["rows"] for e in entries) >= 16
    on_disk = {f"system/{p.name}" for p in (stored.dir / "system").iterdir()}
    assert on_disk == {e["file"] for e in entries}, "merged-away segments were not removed"


def test_samples_survive_sigkill_up_to_the_last_flush(root: Path) -> None:
    code = """
    import os, signal, time, localrun
    run = localrun.init(project="s", id="k", system_metrics=0.05, flush_interval=0.05)
    while not localrun.Api().run("s/k").manifest.get("system"):
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
    """
    out = run_py(code, root, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert localrun.Api(root).run("s/k").history(stream="system").num_rows >= 1


def test_off_means_no_sampler(root: Path) -> None:
    with localrun.init(project="s", id="off", dir=root, system_metrics=False) as run:
        run.log({"x": 1.0})
    out = run_py(
        'import localrun\nlocalrun.init(project="s", id="off2").finish()',
        root,
        LOCALRUN_SYSTEM_METRICS="0",
    )
    assert out.returncode == 0, out.stderr
    for rid in ("off", "off2"):
        stored = localrun.Api(root).run(f"s/{rid}")
        assert not stored.manifest.get("system")
        assert stored.history(stream="system").num_rows == 0
    with pytest.raises(localrun.UsageError, match="system_metrics"):
        localrun.init(project="s", dir=root, system_metrics=-1)
    with pytest.raises(localrun.UsageError, match="stream"):
        localrun.Api(root).run("s/off").history(stream="gpu")
