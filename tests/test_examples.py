"""End to end: the preemptible examples, SIGKILLed in the middle of training, then run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import localrun
from tests.conftest import REPO, child_env, track

EPOCHS = 12  # keras: about 0.5 s an epoch on CPU
TORCH_EPOCHS = 60  # torch: about 0.1 s an epoch; enough that a kill lands mid-training
FLUSH = 0.2


# The first attempt is given so many epochs that it can never finish before the kill, however
# slow or loaded the machine: the test does not race the training.
ENDLESS = 100_000


def _start(
    script: str, root: Path, cwd: Path, epochs: int | None = None, **env: str
) -> subprocess.Popen[str]:
    if epochs is None:
        epochs = TORCH_EPOCHS if script.startswith("torch") else EPOCHS
    return track(
        subprocess.Popen(
            [sys.executable, str(REPO / "examples" / script)],
            cwd=cwd,
            env=child_env(
                root,
                EPOCHS=str(epochs),
                LOCALRUN_FLUSH_INTERVAL=str(FLUSH),
                LOCALRUN_KEEP_VERSIONS="0",  # these tests read every checkpoint version back
                KERAS_BACKEND="torch",
                **env,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def _kill_mid_training(
    proc: subprocess.Popen[str], root: Path, project: str, at: int, epochs: int = EPOCHS
) -> int:
    """SIGKILL the job once `at` epochs are committed.

    Returns the last step a resume must continue after: the last committed step, or the last
    step of a segment the killed writer published but did not commit (an orphan the resume
    adopts), whichever is later.
    """
    api = localrun.Api(root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited early"
        runs = api.runs(project)
        if runs and runs[0].last_step >= at:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (run,) = api.runs(project)
    listed = {s["file"] for s in run.manifest["segments"]}
    last = run.last_step
    for seg in sorted((run.dir / "history").glob("*.parquet")):
        if f"history/{seg.name}" not in listed:
            steps = pq.read_table(seg, columns=["_step"]).column("_step").to_pylist()
            if steps and steps[0] == last + 1:
                last = steps[-1]
    assert last < epochs - 1, "training finished before the kill: nothing to resume"
    return last


def _check_history(run: localrun.StoredRun, epochs: int = EPOCHS) -> list[float]:
    table = run.history(["loss", "epoch"])
    steps = table.column("_step").to_pylist()
    assert steps == list(range(epochs))  # every epoch once, no gap at all
    assert table.column("epoch").to_pylist() == [float(s) for s in steps]
    return table.column("loss").to_pylist()


@pytest.mark.slow
def test_keras_example_survives_sigkill(root: Path, tmp_path: Path) -> None:
    first = _start("keras_preemptible.py", root, tmp_path, epochs=ENDLESS)
    killed_after = _kill_mid_training(first, root, "preemptible", at=3, epochs=ENDLESS)
    epochs = max(EPOCHS, killed_after + 4)
    # same folder and script: auto-resume
    second = _start("keras_preemptible.py", root, tmp_path, epochs=epochs)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    (run,) = localrun.Api(root).runs("preemptible")
    assert f"resumed run {run.path} at epoch {killed_after + 1}" in out  # run.resumed, run.step
    losses = _check_history(run, epochs)
    assert [a["state"] for a in run.attempts] == ["crashed", "finished"]
    assert run.attempts[1]["start_step"] == killed_after + 1
    # the summary's best value is the best epoch of the history
    assert run.summary["best_loss"] == pytest.approx(min(losses))
    assert losses[int(run.summary["best_epoch"])] == pytest.approx(min(losses))
    # the best model was restored from the run: the second attempt read its first version
    versions = run.file_versions("model-best.keras")
    assert versions[0]["attempt"] == 1
    os.environ.setdefault("KERAS_BACKEND", "torch")  # keras reads it when first imported
    import keras

    model = keras.models.load_model(str(run.file_path("model-best.keras")))
    assert model.output_shape == (None, 10)


@pytest.mark.slow
def test_torch_example_survives_sigkill(root: Path, tmp_path: Path) -> None:
    env = {"LOCALRUN_RUN_ID": "torch-job"}
    first = _start("torch_preemptible.py", root, tmp_path, epochs=ENDLESS, **env)
    killed_after = _kill_mid_training(first, root, "preemptible-torch", 3, ENDLESS)
    epochs = max(TORCH_EPOCHS, killed_after + 4)
    second = _start("torch_preemptible.py", root, tmp_path, epochs=epochs, **env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "resumed run preemptible-torch/torch-job" in out
    run = localrun.Api(root).run("preemptible-torch/torch-job")
    _check_history(run, epochs)
    assert run.attempts[1]["start_step"] == killed_after + 1
    ckpt_epochs = [v["attempt"] for v in run.file_versions("checkpoint.pt")]
    assert ckpt_epochs.count(1) >= 3 and ckpt_epochs[-1] == 2


@pytest.mark.slow
def test_torch_example_rewinds_to_an_older_checkpoint(root: Path, tmp_path: Path) -> None:
    """Only epoch 0 is checkpointed: a resume after more epochs reloads it and rewinds the log."""
    env = {"LOCALRUN_RUN_ID": "rw", "CHECKPOINT_EVERY": str(ENDLESS)}
    first = _start("torch_preemptible.py", root, tmp_path, epochs=ENDLESS, **env)
    killed_after = _kill_mid_training(first, root, "preemptible-torch", 3, ENDLESS)
    epochs = max(TORCH_EPOCHS, killed_after + 4)
    second = _start("torch_preemptible.py", root, tmp_path, epochs=epochs, **env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    run = localrun.Api(root).run("preemptible-torch/rw")
    _check_history(run, epochs)  # the rewound epochs appear once, from attempt 2
    assert [r["step"] for r in run.manifest["rewinds"]] == [0]
    assert "at epoch 1 from checkpoint epoch 0" in out
    everything = run.history(["loss"], all_attempts=True)
    assert everything.num_rows == epochs + killed_after  # attempt 1's redone epochs are kept


def test_core_never_imports_keras_or_torch() -> None:
    code = "import sys, localrun; print(sorted(m for m in ('keras', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
