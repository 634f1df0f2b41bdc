"""LocalrunTracker in a real Accelerate training loop on CPU: SIGKILLed after
``accelerator.save_state``, relaunched with ``load_state`` and ``run.rewind`` into the same run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("torch")

import localrun
from tests.integrations._training import log_tail, start_training

# Real training loops of a framework, SIGKILLed and resumed: minutes, so a target of their own.
pytestmark = pytest.mark.frameworks

TRAIN = r"""
import json, os, time
from pathlib import Path
import torch
from accelerate import Accelerator
from localrun.integrations.accelerate import LocalrunTracker

accelerator = Accelerator(cpu=True, log_with=[LocalrunTracker(project="p", id="acc-1")])
accelerator.init_trackers("p", config={"lr": 0.05})
run = accelerator.get_tracker("localrun", unwrap=True)
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
optim = torch.optim.SGD(model.parameters(), lr=0.05)
model, optim = accelerator.prepare(model, optim)
x = torch.randn(32, 4)
y = x.sum(1, keepdim=True)

start = 0
if Path("ckpt/step.json").exists():                 # a relaunch: continue after the checkpoint
    accelerator.load_state("ckpt")
    saved = json.loads(Path("ckpt/step.json").read_text())["step"]
    run.rewind(saved)                                 # hide what was logged after it
    start = saved + 1
elif run.step > 0:                                    # killed before its first checkpoint
    run.rewind(-1)
for step in range(start, int(os.environ["MAX_STEPS"])):
    optim.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    accelerator.backward(loss)
    optim.step()
    accelerator.log({"loss": loss.item()}, step=step, log_kwargs={"localrun": {"commit": True}})
    if step % 5 == 0:
        accelerator.save_state("ckpt")
        Path("ckpt/step.json").write_text(json.dumps({"step": step}))
    if step == int(os.environ.get("KILL_AFTER", "-1")):
        open("stopped", "w").close()
        time.sleep(600)                               # the test SIGKILLs it here
accelerator.end_training()
"""


def _start(tmp: Path, root: Path, **env: str) -> subprocess.Popen[str]:
    return start_training(tmp, root, TRAIN, **env)


def _log(tmp: Path) -> str:
    return log_tail(tmp)


def _committed(root: Path) -> int:
    try:
        return localrun.Api(root).run("p/acc-1").last_step
    except localrun.RunNotFoundError:
        return -1


@pytest.mark.slow
def test_sigkill_then_load_state_continues_the_same_run(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    proc = _start(tmp_path, root, MAX_STEPS="100", KILL_AFTER="13")
    deadline = time.monotonic() + 180
    while not (tmp_path / "stopped").exists() or _committed(root) < 13:
        assert proc.poll() is None, _log(tmp_path)
        assert time.monotonic() < deadline, _log(tmp_path)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    proc = _start(tmp_path, root, MAX_STEPS="20")
    assert proc.wait(timeout=180) == 0, _log(tmp_path)
    stored = localrun.Api(root).run("p/acc-1")
    assert [a["state"] for a in stored.attempts] == ["crashed", "finished"]
    assert stored.config["lr"] == 0.05
    assert stored.history(["loss"]).column("_step").to_pylist() == list(range(20))
    every = stored.history(["loss"], all_attempts=True)
    rows = list(
        zip(every.column("_attempt").to_pylist(), every.column("_step").to_pylist(), strict=True)
    )
    assert [s for a, s in rows if a == 1 and s > 10] == [11, 12, 13]  # hidden, kept
    assert [s for a, s in rows if a == 2] == list(range(11, 20))


def test_the_tracker_before_init_trackers_is_a_clear_error() -> None:
    from localrun.integrations.accelerate import LocalrunTracker

    with pytest.raises(localrun.UsageError, match="init_trackers"):
        LocalrunTracker(project="p").tracker  # noqa: B018
