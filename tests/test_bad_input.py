"""Bad input gets a clear error naming the problem, and nothing committed is lost."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import localrun

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def committed(root: Path) -> localrun.Run:
    """A run with three committed rows."""
    run = localrun.init(project="p", id="r", dir=root)
    for i in range(3):
        run.log({"loss": float(i), "name": f"s{i}"})
    run.flush()
    return run


def _rows(root: Path) -> list[float]:
    return localrun.Api(root).run("p/r").history(["loss"]).column("loss").to_pylist()


def test_kind_change_is_refused_and_nothing_is_lost(committed: localrun.Run, root: Path) -> None:
    with pytest.raises(
        localrun.LogValueError, match="'loss' was logged as number and is now string"
    ):
        committed.log({"loss": "high"})
    with pytest.raises(localrun.LogValueError, match="'name' was logged as string"):
        committed.log({"name": 3})
    committed.log({"loss": 3.0})  # the run goes on
    committed.finish()
    assert _rows(root) == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "values of type object are not supported"),
        (np.zeros((2, 2)), "2-d array cannot be logged"),
        ([1, "a"], "only numbers or only strings"),
        ([[1, 2]], "only numbers or only strings"),
        ({1, 2}, "values of type set are not supported"),
        (10**400, "too large for a float64 column"),
    ],
)
def test_unsupported_values_are_refused(
    committed: localrun.Run, root: Path, value: object, message: str
) -> None:
    with pytest.raises(localrun.LogValueError, match=message) as info:
        committed.log({"bad": value, "loss": 9.0})
    assert "'bad'" in str(info.value)
    committed.finish()
    assert _rows(root) == [0.0, 1.0, 2.0]  # the refused row left nothing behind


def test_log_needs_a_mapping(committed: localrun.Run) -> None:
    with pytest.raises(localrun.UsageError, match="dict"):
        committed.log([("a", 1)])  # type: ignore[arg-type]


def test_bad_variables_are_named(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALRUN_RESUME", "sometimes")
    with pytest.raises(localrun.UsageError, match="LOCALRUN_RESUME='sometimes'"):
        localrun.init(project="p", dir=root)
    monkeypatch.delenv("LOCALRUN_RESUME")
    monkeypatch.setenv("LOCALRUN_FLUSH_INTERVAL", "soon")
    with pytest.raises(localrun.UsageError, match="LOCALRUN_FLUSH_INTERVAL"):
        localrun.init(project="p", dir=root)
    monkeypatch.delenv("LOCALRUN_FLUSH_INTERVAL")
    monkeypatch.setenv("LOCALRUN_RUN_ID", "x" * 65)
    with pytest.raises(localrun.InvalidIdError, match="limit is 64"):
        localrun.init(project="p", dir=root)


@needs_root
def test_full_disk_keeps_committed_data_and_recovers(tmpfs: Path) -> None:
    run = localrun.init(project="p", id="r", dir=tmpfs, flush_interval=3600)
    for i in range(3):
        run.log({"loss": float(i)})
    run.flush()
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last byte
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    for i in range(3, 6):
        run.log({"loss": float(i), "big": [float(j) for j in range(2000)]})
    with pytest.raises(localrun.StorageError, match="disk is full") as info:
        run.flush()
    assert isinstance(info.value, OSError)
    assert _rows(tmpfs) == [0.0, 1.0, 2.0]  # committed rows still read
    assert not [p for p in (tmpfs / "p" / "r").rglob("*") if ".tmp-" in p.name]  # no debris
    filler.unlink()
    run.finish()  # a later flush succeeds with the rows the failed one held
    assert _rows(tmpfs) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert localrun.Api(tmpfs).verify()[0].ok


@needs_root
def test_read_only_root_is_a_clear_error(tmpfs: Path) -> None:
    localrun.init(project="p", id="r", dir=tmpfs).finish()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(localrun.StorageError, match="read-only"):
        localrun.init(project="p", id="other", dir=tmpfs)
    with pytest.raises(localrun.StorageError, match="read-only"):
        localrun.init(project="p", id="r", dir=tmpfs, resume="must")
    assert localrun.Api(tmpfs).run("p/r").state == "finished"  # reading still works


def test_root_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(localrun.StorageError, match="cannot create the root"):
        localrun.init(project="p", dir=target)


def test_an_empty_key_is_named_as_empty_not_as_reserved(
    committed: localrun.Run, root: Path
) -> None:
    with pytest.raises(localrun.LogValueError, match="must not be empty; got '' at the top") as e:
        committed.log({"": 1.0})
    assert "reserved" not in str(e.value)
    with pytest.raises(
        localrun.LogValueError, match="inside 'opt'. Name the value, e.g. 'opt/loss'"
    ):
        committed.log({"opt": {"": 1.0}})
    committed.finish()
    assert _rows(root) == [0.0, 1.0, 2.0]  # the refused rows left nothing behind
