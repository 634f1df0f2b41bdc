"""localrun.integrations.torch: the checkpoint helpers keep the name they are given and act on
the run they are given, not only on the process's current run."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import localrun  # noqa: E402
from localrun.integrations.torch import load_checkpoint, save_checkpoint  # noqa: E402


def test_a_nested_name_keeps_its_folders(root: Path) -> None:
    run = localrun.init(project="p", id="nested", dir=root)
    save_checkpoint({"epoch": 3, "w": torch.ones(2)}, name="ckpt/model.pt")
    assert run.files == ["ckpt/model.pt"]
    loaded = load_checkpoint("ckpt/model.pt")
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["w"], torch.ones(2))
    run.finish()
    stored = localrun.Api(root).run("p/nested")
    assert list(stored.files()) == ["ckpt/model.pt"]


def test_load_reads_the_given_run_not_the_current_one(root: Path) -> None:
    """``run=`` names the run to read: an earlier run of this process (``init`` finished it)
    while another run is current, each with its own version of the same name."""
    mine = localrun.init(project="p", id="mine", dir=root / "a")
    save_checkpoint({"who": "mine"}, name="c.pt", run=mine)
    current = localrun.init(project="p", id="current", dir=root / "b")  # finishes `mine`
    assert load_checkpoint("c.pt") is None  # the current run has none yet
    save_checkpoint({"who": "current"}, name="c.pt")
    assert load_checkpoint("c.pt", run=mine) == {"who": "mine"}
    assert load_checkpoint("c.pt", run=current) == {"who": "current"}
    assert load_checkpoint("c.pt") == {"who": "current"}
    current.finish()
    assert load_checkpoint("c.pt", run=mine) == {"who": "mine"}  # no current run at all


def test_save_goes_to_the_run_argument(root: Path) -> None:
    target = localrun.init(project="p", id="target", dir=root)
    target.log({"loss": 0.5}, step=4, commit=True)
    save_checkpoint({"epoch": 4}, run=target)
    assert target.files == ["checkpoint.pt"]
    stored = localrun.Api(root).run("p/target")
    assert stored.last_step == 4  # the rows logged before it were committed with it
    target.finish()
    with pytest.raises(localrun.UsageError, match="finished"):
        save_checkpoint({"epoch": 5}, run=target)


@pytest.mark.parametrize("bad", ["", "../x.pt", "/abs/x.pt", "dir/"])
def test_a_bad_name_is_refused_with_a_clear_error(root: Path, bad: str) -> None:
    localrun.init(project="p", id="bad", dir=root)
    with pytest.raises(localrun.UsageError, match="name"):
        save_checkpoint({"x": 1}, name=bad)
