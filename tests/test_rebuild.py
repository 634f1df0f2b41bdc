"""A run whose every revision is lost is rebuilt (``localrun verify --repair``) with all it had
on disk: not only its history but its captured output, its system samples and every saved file
version, which the user would otherwise find on disk and not in the run."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pyarrow as pa

import localrun
from localrun._store import system as system_store
from tests.conftest import run_py

ATTEMPT = """
import os, signal, time, localrun
run = localrun.init(project="p", id="r", resume="allow", flush_interval=3600,
                    system_metrics=0.05)
print(f"output of attempt {run.attempt}", flush=True)
with open("ckpt.bin", "wb") as f:
    f.write(bytes([run.attempt]) * 1000)
run.save("ckpt.bin")
for _ in range(3):
    run.log({"loss": 1.0 / (run.step + 1)})
run.flush()
if run.attempt == 1:
    # samples are written once the oldest is 6 intervals old: flush until this attempt's are
    # committed (a condition, not a sleep: a fast machine gets here before the first is due)
    deadline = time.monotonic() + 60
    while not any(e["attempt"] == 1 for e in localrun.Api().run("p/r").manifest.get("system") or []):
        assert time.monotonic() < deadline, "attempt 1 never committed a system sample"
        time.sleep(0.05)
        run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
run.finish()
"""


def _lose_every_revision(rdir: Path) -> None:
    shutil.rmtree(rdir / "log")
    (rdir / "manifest.json").unlink()


def test_a_rebuilt_run_keeps_its_output_samples_and_file_versions(
    root: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for expected in (-signal.SIGKILL, 0):
        out = run_py(f"import os; os.chdir({str(work)!r})\n" + ATTEMPT, root)
        assert out.returncode == expected, out.stderr
    before = localrun.Api(root).run("p/r")
    samples = before.history(stream="system").num_rows
    assert samples >= 2 and len(before.file_versions("ckpt.bin")) == 2
    _lose_every_revision(root / "p" / "r")

    report = localrun.Api(root).verify("p/r", repair=True)[0]
    assert any("rebuilt" in r for r in report.repaired), report.as_dict()
    run = localrun.Api(root).run("p/r")
    assert run.history(["loss"]).column("_step").to_pylist() == list(range(6))
    text = run.console()
    assert "output of attempt 1\n" in text and "output of attempt 2\n" in text
    system = run.history(stream="system")
    assert system.num_rows == samples
    assert sorted(set(system.column("_attempt").to_pylist())) == [1, 2]
    versions = run.file_versions("ckpt.bin")
    assert [v["attempt"] for v in versions] == [1, 2]
    for v in versions:
        with run.open_file("ckpt.bin", v["version"]) as f:
            assert f.read() == bytes([v["attempt"]]) * 1000
    assert localrun.Api(root).verify("p/r")[0].ok


def test_a_merge_of_system_samples_left_with_its_parts_counts_each_sample_once(
    root: Path,
) -> None:
    """A crash between a merge's commit and the removal of its parts leaves both on disk; the
    rebuilt run lists the merged file only and sets the parts aside."""
    run = localrun.init(project="p", id="m", dir=root, system_metrics=False, console=False)
    run.log({"x": 1.0})
    run.finish()
    rdir = root / "p" / "m"

    def samples(times: list[float]) -> pa.Table:
        return system_store.to_table([(t, t, {"cpu": t}) for t in times])

    system_store.write(rdir, 1, 1, samples([1.0, 2.0]))
    system_store.write(rdir, 1, 2, samples([3.0, 4.0]))
    system_store.write(rdir, 1, 3, samples([1.0, 2.0, 3.0, 4.0, 5.0]), level=1)
    system_store.write(rdir, 2, 1, samples([9.0]))  # another attempt's: kept
    _lose_every_revision(rdir)

    localrun.Api(root).verify("p/m", repair=True)
    rebuilt = localrun.Api(root).run("p/m")
    times = rebuilt.history(stream="system").column("_timestamp").to_pylist()
    assert times == [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]
    assert sorted(p.name for p in (rdir / "quarantine").iterdir()) == [
        "system__0001-000001.parquet",
        "system__0001-000002.parquet",
    ]
