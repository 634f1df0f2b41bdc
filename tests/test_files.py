"""run.save and localrun.restore: real files, versions, live saving, bad names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localrun
from tests.conftest import child_env, track


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def test_binary_round_trip_nested_paths_and_versions(root: Path, work: Path) -> None:
    blob = os.urandom(3_000_000) + bytes(range(256))
    (work / "out" / "ckpt").mkdir(parents=True)
    (work / "out" / "ckpt" / "model.bin").write_bytes(blob)
    (work / "out" / "notes.txt").write_text("v1")
    run = localrun.init(project="p", id="r", dir=root)
    assert sorted(run.save("out/**/*", base_path="out")) == ["ckpt/model.bin", "notes.txt"]
    (work / "out" / "notes.txt").write_text("v2")
    assert run.save("out/notes.txt") == ["notes.txt"]  # default base: the file's folder
    assert run.save("out/notes.txt") == []  # same content: no new version
    run.finish()
    stored = localrun.Api(root).run("p/r")
    assert stored.file_path("ckpt/model.bin").read_bytes() == blob
    assert (root / "p" / "r" / "files" / "ckpt" / "model.bin").read_bytes() == blob  # browsable
    versions = stored.file_versions("notes.txt")
    assert [stored.file_path("notes.txt", v["version"]).read_text() for v in versions] == [
        "v1",
        "v2",
    ]
    assert stored.files()["notes.txt"]["versions"] == 2
    with stored.open_file("notes.txt") as f:
        assert f.read() == b"v2"
    assert not os.access(stored.file_path("notes.txt"), os.W_OK) or os.geteuid() == 0
    assert stored.file_path("notes.txt").stat().st_mode & 0o222 == 0  # versions are read-only


@pytest.mark.parametrize(
    ("pattern", "base", "message"),
    [("secret.txt", "sub", "could escape"), ("sub", None, "is a folder")],
)
def test_names_that_escape_or_folders_are_refused(
    root: Path, work: Path, pattern: str, base: str | None, message: str
) -> None:
    (work / "secret.txt").write_text("x")
    (work / "sub").mkdir()
    run = localrun.init(project="p", id="r", dir=root)
    with pytest.raises(localrun.UsageError, match=message):
        run.save(pattern, base_path=base)
    assert localrun.Api(root).run("p/r").files() == {}


def test_save_of_nothing_and_bad_policy(root: Path, work: Path) -> None:
    run = localrun.init(project="p", id="r", dir=root)
    with pytest.raises(localrun.UsageError, match="no file matches"):
        run.save("missing.pt")
    with pytest.raises(localrun.UsageError, match="policy"):
        run.save("x", policy="sometimes")


def test_restore_inside_a_resumed_run(root: Path, work: Path) -> None:
    (work / "model.pt").write_bytes(b"weights-1")
    with localrun.init(project="p", id="r", dir=root) as run:
        run.save("model.pt")
        (work / "model.pt").write_bytes(b"weights-2")
        run.save("model.pt")
    (work / "model.pt").unlink()  # a new node: nothing local
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    restored = localrun.restore("model.pt")
    assert Path(restored.name).read_bytes() == b"weights-2"
    assert restored.run_path == "p/r" and restored.size == 9
    with pytest.raises(
        localrun.RunNotFoundError, match=r"no saved file 'best\.pt'; its files: model\.pt"
    ):
        localrun.restore("best.pt")


def test_restore_outside_a_run(root: Path, work: Path) -> None:
    with pytest.raises(localrun.UsageError, match="needs a run"):
        localrun.restore("model.pt")
    (work / "model.pt").write_bytes(b"abc")
    with localrun.init(project="p", id="src", dir=root) as run:
        run.save("model.pt")
    got = localrun.restore("model.pt", run_path="p/src", root=root)
    assert Path(got.name).read_bytes() == b"abc"
    with pytest.raises(localrun.RunNotFoundError):
        localrun.restore("model.pt", run_path="p/nope", root=root)


def test_restore_to_a_path_and_replace(root: Path, work: Path) -> None:
    (work / "model.pt").write_bytes(b"stored")
    with localrun.init(project="p", id="r", dir=root) as run:
        run.save("model.pt")
    dest = work / "restored"
    dest.mkdir()
    got = localrun.restore("model.pt", run_path="p/r", root=root, to=dest)
    assert Path(got.name) == dest / "model.pt" and (dest / "model.pt").read_bytes() == b"stored"
    (dest / "model.pt").write_bytes(b"local edit")
    with pytest.raises(localrun.UsageError, match="replace=True"):
        localrun.restore("model.pt", run_path="p/r", root=root, to=dest)
    localrun.restore("model.pt", run_path="p/r", root=root, to=dest, replace=True)
    assert (dest / "model.pt").read_bytes() == b"stored"


def _wait(cond, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_live_saving_picks_up_rewrites(root: Path, work: Path) -> None:
    (work / "metrics.json").write_text('{"epoch": 0}')
    run = localrun.init(project="p", id="r", dir=root)
    assert run.save("metrics.json", policy="live") == ["metrics.json"]
    time.sleep(0.2)
    (work / "metrics.json").write_text('{"epoch": 1}')

    def versions() -> int:
        return localrun.Api(root).run("p/r").files().get("metrics.json", {}).get("versions", 0)

    assert _wait(lambda: versions() == 2), "the rewrite was not saved while the run was alive"
    (work / "metrics.json").write_text('{"epoch": 2}')
    run.finish()  # finish saves the last change even if the watcher had not yet
    stored = localrun.Api(root).run("p/r")
    assert stored.file_path("metrics.json").read_text() == '{"epoch": 2}'


def test_live_saving_by_polling(root: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALRUN_WATCH", "poll")  # what localrun does on NFS
    run = localrun.init(project="p", id="r", dir=root)
    run.save("*.log", policy="live")
    (work / "train.log").write_text("line 1\n")
    assert _wait(lambda: "train.log" in localrun.Api(root).run("p/r").files())
    run.finish()


def test_end_policy_saves_at_finish(root: Path, work: Path) -> None:
    run = localrun.init(project="p", id="r", dir=root)
    run.save("final.txt", policy="end")
    (work / "final.txt").write_text("done")  # made after the save() call
    assert localrun.Api(root).run("p/r").files() == {}
    run.finish()
    assert localrun.Api(root).run("p/r").file_path("final.txt").read_text() == "done"


def test_saved_versions_are_bounded_and_the_newest_kept(root: Path, work: Path) -> None:
    ckpt = work / "model-best.keras"
    with localrun.init(project="p", id="r", dir=root, keep_versions=3) as run:
        for epoch in range(12):
            ckpt.write_bytes(f"weights of epoch {epoch}".encode())
            run.save(str(ckpt))
        assert run.files == ["model-best.keras"]
    stored = localrun.Api(root).run("p/r")
    versions = stored.file_versions("model-best.keras")
    assert len(versions) == 3
    assert [stored.file_path("model-best.keras", v["version"]).read_bytes() for v in versions] == [
        b"weights of epoch 9",
        b"weights of epoch 10",
        b"weights of epoch 11",
    ]
    on_disk = sorted(p.name for p in (stored.dir / "files" / ".versions").iterdir())
    assert on_disk == [v["version"] for v in versions]  # retired versions are gone from disk
    assert localrun.Api(root).verify("p/r")[0].ok


def test_keep_versions_zero_keeps_every_version(
    root: Path, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCALRUN_KEEP_VERSIONS", "0")
    ckpt = work / "ckpt.pt"
    with localrun.init(project="p", id="r", dir=root) as run:
        for epoch in range(8):
            ckpt.write_bytes(bytes([epoch]) * 10)
            run.save(str(ckpt))
    assert len(localrun.Api(root).run("p/r").file_versions("ckpt.pt")) == 8


def test_restore_missing_ok_is_the_way_to_start_from_scratch(root: Path) -> None:
    """A job killed before its first checkpoint must not wedge on every relaunch."""
    for attempt in range(3):
        run = localrun.init(project="p", id="r", dir=root, resume="allow")
        assert localrun.restore("model-best.keras", missing_ok=True) is None
        with pytest.raises(localrun.RunNotFoundError, match="no saved file"):
            localrun.restore("model-best.keras")
        assert run.files == []
        run.finish(1)  # "crashes" again before saving anything
        assert localrun.Api(root).run("p/r").attempts[-1]["attempt"] == attempt + 1


SAVE_EACH_EPOCH = """
import os, signal, localrun
run = localrun.init(project="p", id="r", flush_interval=3600)  # rows flushed only by save()
for epoch in range(run.step, 100):
    run.log({"loss": 1.0 / (epoch + 1)})
    with open("ckpt.pt", "w") as f:
        f.write(str(epoch))
    run.save("ckpt.pt")
    if epoch == 10:
        print("saved", epoch, flush=True)
        signal.pause()  # killed here, as a preempted job is
"""


def test_a_checkpoint_is_never_newer_than_the_committed_steps(root: Path, work: Path) -> None:
    """Before: a plain run.save each epoch, killed at epoch 10, resumed at step 0 with the
    epoch-10 weights. The rows and the file now commit in one revision."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVE_EACH_EPOCH],
        cwd=work,
        env=child_env(root),
        stdout=subprocess.PIPE,
        text=True,
    )
    track(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "saved 10"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = localrun.init(project="p", id="r", resume="must", dir=root)
    restored = localrun.restore("ckpt.pt")
    assert int(restored.open().read()) == 10 and run.step == 11
    run.finish()
