"""LocalrunLogger in real Lightning training on CPU: killed with SIGKILL after a checkpoint,
resumed with ``trainer.fit(ckpt_path="last")`` into the same run; and a two-process DDP run that
writes one run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

import localrun  # noqa: E402
from tests.integrations._training import log_tail, start_training  # noqa: E402

# Real training loops of a framework, SIGKILLed and resumed: minutes, so a target of their own.
pytestmark = pytest.mark.frameworks

# The training script of every test here: a tiny regression model, 8 batches an epoch, a
# validation pass each epoch (logged at the same step as that step's training row), a
# checkpoint every 5 optimizer steps plus last.ckpt. Its settings come from the environment.
TRAIN = r"""
import os, time
import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from localrun.integrations.lightning import LocalrunLogger

class Tiny(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

class StopHere(Callback):
    # After optimizer step KILL_AFTER: say so, and wait there for the test to SIGKILL it.
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(os.environ.get("KILL_AFTER", "-1")):
            open("stopped", "w").close()
            time.sleep(600)

def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = x.sum(1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)

if __name__ == "__main__":
    ddp = os.environ.get("DDP") == "1"
    logger = LocalrunLogger(project="p", id=os.environ.get("RUN_ID"), save_dir="lightning",
                            checkpoints=os.environ.get("CHECKPOINTS") or None)
    trainer = pl.Trainer(
        max_steps=int(os.environ["MAX_STEPS"]), logger=logger, log_every_n_steps=1,
        callbacks=[ModelCheckpoint(every_n_train_steps=5, save_last=True, save_top_k=-1),
                   StopHere()],
        accelerator="cpu", devices=2 if ddp else 1, strategy="ddp" if ddp else "auto",
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(), data(), data(), ckpt_path="last")
    print("RUN", logger.version, flush=True)
"""


def _start(tmp: Path, root: Path, **env: str) -> subprocess.Popen[str]:
    return start_training(tmp, root, TRAIN, **env)


def _log(tmp: Path) -> str:
    return log_tail(tmp)


def _committed_step(root: Path, path: str) -> int:
    try:
        return localrun.Api(root).run(path).last_step
    except localrun.RunNotFoundError:
        return -1


@pytest.mark.slow
def test_sigkill_then_fit_ckpt_last_continues_the_same_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(
        tmp_path, root, RUN_ID="lit-1", MAX_STEPS="100", KILL_AFTER="14", CHECKPOINTS="last"
    )
    # Killed in the middle of fit: after optimizer step 14, four steps past the checkpoint
    # of step 10, once the rows logged so far (but the step in progress) are committed.
    deadline = time.monotonic() + 240
    while not (tmp_path / "stopped").exists() or _committed_step(root, "p/lit-1") < 11:
        assert proc.poll() is None, _log(tmp_path)
        assert time.monotonic() < deadline, _log(tmp_path)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    killed = localrun.Api(root).run("p/lit-1")
    logged_before = killed.last_step
    last = tmp_path / "lightning" / "p" / "lit-1" / "checkpoints" / "last.ckpt"
    ckpt_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert ckpt_step == 10 < logged_before  # rows past the checkpoint were committed
    assert "last.ckpt" in killed.files()  # checkpoints="last" copied it into the run

    end = ckpt_step + 12
    proc = _start(tmp_path, root, RUN_ID="lit-1", MAX_STEPS=str(end))
    assert proc.wait(timeout=240) == 0, _log(tmp_path)
    assert "RUN lit-1" in _log(tmp_path)

    stored = localrun.Api(root).run("p/lit-1")
    assert [a["state"] for a in stored.attempts] == ["crashed", "finished"]
    steps = stored.history(["loss"]).column("_step").to_pylist()
    assert steps == list(range(end)), steps  # each optimizer step exactly once
    assert stored.config["lr"] == 0.05  # the model's hyperparameters
    val = [v for v in stored.history(["val_loss"]).column("val_loss").to_pylist() if v is not None]
    assert val, "validation rows are merged into their step's row"

    every = stored.history(["loss"], all_attempts=True)
    rows = list(
        zip(every.column("_attempt").to_pylist(), every.column("_step").to_pylist(), strict=True)
    )
    hidden = [s for a, s in rows if a == 1 and s >= ckpt_step]
    assert hidden and max(hidden) == logged_before  # the redone steps are kept, hidden
    shown_first = [s for a, s in rows if a == 1 and s < ckpt_step]
    assert shown_first == list(range(ckpt_step))


@pytest.mark.slow
def test_ddp_two_cpu_processes_write_one_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(tmp_path, root, DDP="1", MAX_STEPS="6", PL_TORCH_DISTRIBUTED_BACKEND="gloo")
    assert proc.wait(timeout=300) == 0, _log(tmp_path)
    runs = localrun.Api(root).runs("p")
    assert len(runs) == 1, [r.path for r in runs]  # rank 1 made no run of its own
    [stored] = runs
    assert [a["state"] for a in stored.attempts] == ["finished"]  # one writer, one attempt
    assert stored.history(["loss"]).column("_step").to_pylist() == list(range(6))
    assert f"RUN {stored.path.split('/')[1]}" in _log(tmp_path)


# -- in this process: what goes into the run's files and config --------------------------------
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from localrun.integrations.lightning import LocalrunLogger  # noqa: E402


class _Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05, act: type = torch.nn.ReLU) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _fit(tmp: Path, logger: LocalrunLogger, cb: ModelCheckpoint, steps: int) -> None:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4
    )
    trainer = pl.Trainer(
        max_steps=steps, logger=logger, callbacks=[cb], log_every_n_steps=1,
        default_root_dir=tmp, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(_Tiny(), data)


@pytest.mark.slow
def test_checkpoints_all_and_best_go_into_the_run(tmp_path: Path, root: Path) -> None:
    logger = LocalrunLogger(project="p", id="all", dir=root, checkpoints="all")
    _fit(tmp_path, logger, ModelCheckpoint(every_n_train_steps=2, save_top_k=-1), steps=6)
    stored = localrun.Api(root).run("p/all")
    assert sorted(stored.files()) == [
        f"epoch={e}-step={s}.ckpt" for e, s in ((0, 2), (0, 4), (1, 6))
    ]
    assert stored.config["act"] == str(torch.nn.ReLU)  # a class is stored as its str
    assert [a["state"] for a in stored.attempts] == ["finished"]

    logger = LocalrunLogger(project="p", id="best", dir=root, checkpoints="best")
    cb = ModelCheckpoint(monitor="loss", mode="min", every_n_train_steps=1, save_top_k=1)
    _fit(tmp_path / "b", logger, cb, steps=6)
    stored = localrun.Api(root).run("p/best")
    assert list(stored.files()) == ["best.ckpt"]
    assert stored.file_path("best.ckpt").read_bytes() == Path(cb.best_model_path).read_bytes()
    assert logger.restore_checkpoint("best.ckpt") == str(stored.file_path("best.ckpt"))
    assert logger.restore_checkpoint("last.ckpt") is None


def test_a_bad_checkpoints_value_is_refused() -> None:
    with pytest.raises(localrun.UsageError, match="checkpoints='every'"):
        LocalrunLogger(project="p", checkpoints="every")


@pytest.mark.slow
def test_a_relaunch_without_a_checkpoint_starts_the_history_over(
    tmp_path: Path, root: Path
) -> None:
    """The job died before its first checkpoint, so the relaunch has none to resume and trains
    from step 0 again: the run's old rows are hidden, each step is once in the history."""
    no_ckpt = ModelCheckpoint(every_n_train_steps=1000)
    _fit(tmp_path, LocalrunLogger(project="p", id="again", dir=root), no_ckpt, steps=5)
    _fit(tmp_path, LocalrunLogger(project="p", id="again", dir=root), no_ckpt, steps=3)
    stored = localrun.Api(root).run("p/again")
    assert stored.history(["loss"]).column("_step").to_pylist() == [0, 1, 2]
    every = stored.history(["loss"], all_attempts=True)
    assert every.column("_attempt").to_pylist() == [1] * 5 + [2] * 3
