"""LocalrunCallback in a real Transformers Trainer on CPU (a 2-layer GPT-2 made from a config,
in-memory data): SIGKILLed after a checkpoint, resumed with
``trainer.train(resume_from_checkpoint=True)`` into the same run, found again from the
checkpoint alone."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import localrun
from tests.integrations._training import log_tail, start_training

# Real training loops of a framework, SIGKILLed and resumed: minutes, so a target of their own.
pytestmark = pytest.mark.frameworks

TRAIN = r"""
import os, time
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments
from localrun.integrations.transformers import LocalrunCallback

class Tokens(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randint(0, 32, (n, 8), generator=g)
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}

class StopHere(TrainerCallback):
    # After optimizer step KILL_AFTER: say so, and wait there for the test to SIGKILL it.
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == int(os.environ.get("KILL_AFTER", "-1")):
            open("stopped", "w").close()
            time.sleep(600)

torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2))
args = TrainingArguments(
    output_dir="out", max_steps=int(os.environ["MAX_STEPS"]), per_device_train_batch_size=4,
    logging_steps=1, save_steps=5, eval_strategy="steps", eval_steps=5, report_to="none",
    use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    # The resumed attempt rebuilds its callbacks from the checkpoint (the callback's state()):
    # the id is found either way (docs/integrations/transformers.md runs the default).
    restore_callback_states_from_checkpoint=os.environ.get("RESUME") == "1",
)
callback = LocalrunCallback(project="p", save_checkpoints=os.environ.get("SAVE") == "1")
trainer = Trainer(model=model, args=args, train_dataset=Tokens(64), eval_dataset=Tokens(8),
                  callbacks=[callback, StopHere()])
trainer.train(resume_from_checkpoint=os.environ.get("RESUME") == "1" or None)
[used] = [c for c in trainer.callback_handler.callbacks if isinstance(c, LocalrunCallback)]
print("RUN", used.run_id, "REBUILT", used is not callback, flush=True)
"""


def _start(tmp: Path, root: Path, **env: str) -> subprocess.Popen[str]:
    return start_training(tmp, root, TRAIN, **env)


def _log(tmp: Path) -> str:
    return log_tail(tmp)


def _committed_step(root: Path) -> int:
    runs = localrun.Api(root).runs("p") if (root / "p").exists() else []
    return runs[0].last_step if runs else -1


@pytest.mark.slow
def test_sigkill_then_resume_from_checkpoint_continues_the_same_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(tmp_path, root, MAX_STEPS="40", KILL_AFTER="14", SAVE="1")
    deadline = time.monotonic() + 240
    # Killed in the middle of train(): after optimizer step 14, past the checkpoint of step 10,
    # once the rows logged up to step 12 are committed (13 is still being filled).
    while not (tmp_path / "stopped").exists() or _committed_step(root) < 12:
        assert proc.poll() is None, _log(tmp_path)
        assert time.monotonic() < deadline, _log(tmp_path)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    [killed] = localrun.Api(root).runs("p")
    run_id = killed.path.split("/")[1]
    logged_before = killed.last_step
    state = json.loads((tmp_path / "out" / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["LocalrunCallback"]["attributes"]["run_id"] == run_id
    assert "checkpoint/trainer_state.json" in killed.files()  # save_checkpoints=True

    # The relaunch gives no id: the callback finds the run in the checkpoint it resumes.
    proc = _start(tmp_path, root, MAX_STEPS="20", RESUME="1", SAVE="1")
    assert proc.wait(timeout=240) == 0, _log(tmp_path)
    assert f"RUN {run_id} REBUILT True" in _log(tmp_path)

    [stored] = localrun.Api(root).runs("p")
    assert stored.path == f"p/{run_id}"
    assert [a["state"] for a in stored.attempts] == ["crashed", "finished"]
    table = stored.history(["loss", "eval_loss"])
    assert table.column("_step").to_pylist() == list(range(1, 21))  # each step exactly once
    evals = [
        s
        for s, v in zip(
            table.column("_step").to_pylist(), table.column("eval_loss").to_pylist(), strict=True
        )
        if v is not None
    ]
    assert evals == [5, 10, 15, 20]  # evaluation merged into its step's row
    assert stored.config["model"]["n_layer"] == 2
    assert stored.config["args"]["max_steps"] == 20
    assert "train_runtime" in stored.summary

    every = stored.history(["loss"], all_attempts=True)
    rows = list(
        zip(every.column("_attempt").to_pylist(), every.column("_step").to_pylist(), strict=True)
    )
    hidden = [s for a, s in rows if a == 1 and s > 10]
    assert hidden and max(hidden) == logged_before  # the redone steps are kept, hidden
    assert [s for a, s in rows if a == 2] == list(range(11, 21))

    # The latest stored checkpoint folder, restored where output_dir never was, is the last
    # one the Trainer wrote (what another node resumes from).
    from localrun.integrations.transformers import LocalrunCallback

    folder = LocalrunCallback(project="p", dir=str(root)).restore_checkpoint(
        tmp_path / "elsewhere", run_id=run_id
    )
    assert folder is not None
    written = tmp_path / "out" / "checkpoint-20"
    assert sorted(p.name for p in Path(folder).iterdir()) == sorted(
        p.name for p in written.iterdir()
    )
    for name in ("model.safetensors", "trainer_state.json"):
        assert (Path(folder) / name).read_bytes() == (written / name).read_bytes()
    nothing = LocalrunCallback(project="p", dir=str(root)).restore_checkpoint(
        tmp_path / "x", run_id="nope"
    )
    assert nothing is None


@pytest.mark.slow
def test_a_fixed_id_relaunched_without_a_checkpoint_starts_over(tmp_path: Path) -> None:
    """In this process: a run with a fixed id trained without saving, then trained again from
    scratch: the second attempt's steps replace the first's, which stay (hidden)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from localrun.integrations.transformers import LocalrunCallback

    root = tmp_path / "runs"
    ids = torch.randint(0, 32, (16, 8), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    for steps in (4, 3):
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2)
        )
        args = TrainingArguments(
            output_dir=str(tmp_path / "out"), max_steps=steps, logging_steps=1,
            per_device_train_batch_size=4, save_strategy="no", report_to="none", use_cpu=True,
            disable_tqdm=True,
        )  # fmt: skip
        callback = LocalrunCallback(project="p", id="fixed", dir=str(root))
        Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    stored = localrun.Api(root).run("p/fixed")
    assert stored.history(["loss"]).column("_step").to_pylist() == [1, 2, 3]
    every = stored.history(["loss"], all_attempts=True)
    assert every.column("_attempt").to_pylist() == [1] * 4 + [2] * 3
    assert [a["state"] for a in stored.attempts] == ["finished", "finished"]
