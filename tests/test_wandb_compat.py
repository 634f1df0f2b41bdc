"""``import localrun.wandb as wandb``: wandb scripts run unchanged but for the import.

The acceptance test is wandb's own resuming example (examples/wandb_keras_seed.py): killed with
SIGKILL mid-training and run again, it resumes at the right epoch from the best model.
"""

from __future__ import annotations

import difflib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import localrun
import localrun.wandb as wandb
from tests.conftest import REPO, child_env, run_py, track

# wandb's documented example, as its docs print it (the reference: shared/seed/resuming.md).
ORIGINAL = """\
import keras
import numpy as np
import wandb
from wandb.keras import WandbCallback

wandb.init(project="preemptable", resume=True)
if wandb.run.resumed:
    # restore the best model
    model = keras.models.load_model(wandb.restore("model-best.h5").name)
else:
    a = keras.layers.Input(shape=(32,))
    b = keras.layers.Dense(10)(a)
    model = keras.models.Model(input=a,output=b)
model.compile("adam", loss="mse")
model.fit(np.random.rand(100, 32), np.random.rand(100, 10),
    # set the resumed epoch
    initial_epoch=wandb.run.step, epochs=300,
    # save the best model if it improved each epoch
    callbacks=[WandbCallback(save_model=True, monitor="loss")])
"""
SEED = REPO / "examples" / "wandb_keras_seed.py"


def test_the_seed_script_differs_only_in_its_imports_and_keras3_spelling() -> None:
    body = [ln for ln in SEED.read_text().splitlines() if not ln.startswith("#")]
    diff = list(difflib.ndiff(ORIGINAL.splitlines(), body))
    removed = [d[2:] for d in diff if d.startswith("- ")]
    added = [d[2:] for d in diff if d.startswith("+ ")]
    assert removed == [
        "import wandb",
        "from wandb.keras import WandbCallback",
        "    model = keras.models.Model(input=a,output=b)",
    ]
    assert added == [
        "import localrun.wandb as wandb",
        "from localrun.wandb.keras import WandbCallback",
        "    model = keras.models.Model(inputs=a,outputs=b)",
    ]


def _start_seed(root: Path, cwd: Path) -> subprocess.Popen[str]:
    env = child_env(
        root, KERAS_BACKEND="torch", LOCALRUN_FLUSH_INTERVAL="0.2", LOCALRUN_RESUME_KEY="seed-job"
    )
    return track(
        subprocess.Popen(
            [sys.executable, str(SEED)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    )


def _kill_when(proc: subprocess.Popen[str], root: Path, done: object) -> localrun.StoredRun:
    """SIGKILL ``proc`` once ``done(run)`` holds for its committed state."""
    api = localrun.Api(root)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the script exited ({proc.returncode}): {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        runs = api.runs("preemptable")
        if runs and done(runs[0]):  # type: ignore[operator]
            break
        time.sleep(0.05)
    else:
        pytest.fail("the script made no progress in 240 s")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run,) = api.runs("preemptable")
    return run


@pytest.mark.slow
def test_wandbs_keras_example_resumes_at_the_right_epoch_after_sigkill(
    root: Path, tmp_path: Path
) -> None:
    first = _kill_when(
        _start_seed(root, tmp_path),
        root,
        lambda r: r.last_step >= 3 and "model-best.h5" in r.manifest["files"],
    )
    killed_at = first.last_step
    # The rerun: resume=True finds the job's run (its last attempt did not finish), restores the
    # best model (a crash there would end the process before it logs anything) and continues.
    second = _kill_when(_start_seed(root, tmp_path), root, lambda r: r.last_step >= killed_at + 2)
    assert second.id == first.id
    assert [a["attempt"] for a in second.attempts] == [1, 2]
    # Attempt 2 starts right after attempt 1's last row on disk: the rows committed before the
    # kill, and any the dead writer wrote but had not committed yet, which the resume adopts
    # (docs/resuming.md; a kill between a segment's write and its commit leaves one).
    start = second.attempts[1]["start_step"]
    assert start >= killed_at + 1
    rows = second.history(["loss"], all_attempts=True)
    steps, attempts = rows.column("_step").to_pylist(), rows.column("_attempt").to_pylist()
    assert [s for s, a in zip(steps, attempts, strict=True) if a == 1] == list(range(start))
    assert min(s for s, a in zip(steps, attempts, strict=True) if a == 2) == start
    epochs = second.history(["loss"]).column("_step").to_pylist()
    assert epochs == list(range(len(epochs))), "an epoch was logged twice or skipped"
    assert second.summary["best_epoch"] >= 0


def test_init_log_config_summary_and_finish(root: Path) -> None:
    run = wandb.init(project="p", config={"lr": 0.1}, dir=root, entity="team", tags=["a"])
    assert wandb.run is run and wandb.config is run.config
    wandb.config.batch = 32  # attribute, item and update access, as wandb has them
    wandb.config["layers"] = 2
    wandb.config.update({"lr": 0.2}, allow_val_change=True)
    assert wandb.config.lr == 0.2
    for i in range(3):
        wandb.log({"loss": 1.0 / (i + 1), "val": {"acc": 0.5 + i / 10}})
    wandb.log({"extra": 1.0}, step=5, commit=False)
    wandb.log({"more": 2.0}, step=5)
    wandb.summary["best"] = 0.9
    run_path = run.path
    wandb.finish()
    assert wandb.run is None
    stored = localrun.Api(root).run("/".join(run_path.split("/")[1:]))
    assert stored.config == {"lr": 0.2, "batch": 32, "layers": 2}
    assert "entity:team" in stored.tags and "a" in stored.tags
    rows = stored.history().to_pylist()
    assert [r["_step"] for r in rows] == [0, 1, 2, 5]
    assert rows[1]["val/acc"] == pytest.approx(0.6)
    assert rows[3]["extra"] == 1.0 and rows[3]["more"] == 2.0
    assert stored.summary["best"] == 0.9
    assert stored.state == "finished"


def test_define_metric_keeps_wandb_summaries_across_a_resume(root: Path) -> None:
    run = wandb.init(project="p", id="dm", dir=root)
    wandb.define_metric("val/*", step_metric="epoch", summary="min,max,mean")
    for v in (3.0, 1.0, 2.0):
        wandb.log({"val": {"loss": v}, "epoch": v})
    assert run.summary["val/loss"]["min"] == 1.0  # wandb's nested reading
    wandb.finish()
    wandb.init(project="p", id="dm", dir=root, resume="must")
    wandb.define_metric("val/*", summary="min,max,mean")
    wandb.log({"val": {"loss": 6.0}})
    wandb.finish()
    s = wandb.Api(root=root).run("p/dm").summary
    assert s["val/loss"] == {"min": 1.0, "max": 6.0, "mean": 3.0, "count": 4}
    with pytest.raises(localrun.UsageError, match="goal"):
        wandb.init(project="p", dir=root).define_metric("x", summary="best")


def test_save_and_restore_a_file_and_resume_by_wandb_variables(root: Path, tmp_path: Path) -> None:
    code = """
    import localrun.wandb as wandb, sys
    from pathlib import Path
    run = wandb.init(project="p")
    if run.resumed:
        print("restored", Path(wandb.restore("ckpt.txt").name).read_text(), run.step)
    else:
        Path("ckpt.txt").write_text("epoch 4")
        wandb.save("ckpt.txt", policy="now")
        for i in range(5):
            wandb.log({"loss": float(i)})
        sys.exit(3)  # a failed attempt: "allow" resumes it
    """
    env = {"WANDB_RUN_ID": "fixed", "WANDB_RESUME": "allow"}
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + textwrap.dedent(code)
    first = run_py(code, root, **env)
    assert first.returncode == 3, first.stderr
    again = run_py(code, root, **env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["restored", "epoch", "4", "5"]


def test_api_runs_with_wandb_filters(root: Path) -> None:
    for i, (state_code, tags) in enumerate([(0, ["base"]), (1, ["base", "big"]), (0, ["big"])]):
        run = wandb.init(project="q", id=f"r{i}", dir=root, config={"lr": 0.1 * (i + 1)}, tags=tags)
        wandb.log({"loss": float(i)})
        run.finish(exit_code=state_code)
    api = wandb.Api(root=root)

    def ids(**filters: object) -> list[str]:
        return sorted(r.id for r in api.runs("team/q", filters=filters))

    assert ids() == ["r0", "r1", "r2"]
    assert ids(state="finished") == ["r0", "r2"]
    assert ids(tags={"$in": ["big"]}) == ["r1", "r2"]
    assert ids(**{"config.lr": {"$gt": 0.15}}) == ["r1", "r2"]
    assert ids(**{"$or": [{"state": "failed"}, {"summary_metrics.loss": {"$lt": 0.5}}]}) == [
        "r0",
        "r1",
    ]
    assert ids(**{"config.missing": {"$exists": False}}) == ["r0", "r1", "r2"]
    with pytest.raises(localrun.UsageError, match=r"\$where"):
        api.runs("q", filters={"state": {"$where": "x"}})
    (r1,) = api.runs("q", filters={"display_name": "r1"})
    assert r1.history()["loss"].tolist() == [1.0]
    assert [row["loss"] for row in r1.scan_history()] == [1.0]


def test_what_is_not_supported_says_so(root: Path) -> None:
    with pytest.raises(wandb.UnsupportedError, match="wandb.watch"):
        wandb.watch  # noqa: B018
    with pytest.raises(wandb.UnsupportedError, match="artifacts"):
        wandb.Artifact("model", type="model")
    with pytest.raises(wandb.UnsupportedError, match="sync_tensorboard"):
        wandb.init(project="p", dir=root, sync_tensorboard=True)
    assert isinstance(wandb.UnsupportedError("x"), localrun.LocalrunError)
    with pytest.raises(AttributeError):
        wandb.no_such_name  # noqa: B018
    assert not list(root.glob("p/*")), "an unsupported init created a run"


def test_disabled_mode_records_nothing_and_reinit_rules(root: Path) -> None:
    off = wandb.init(project="p", dir=root, mode="disabled", config={"a": 1})
    wandb.log({"x": 1.0})
    assert off.config.a == 1
    wandb.finish()
    assert not root.exists() or not list(root.glob("p/*"))
    first = wandb.init(project="p", dir=root)
    assert wandb.init(project="p", dir=root) is first  # no reinit: the current run comes back
    second = wandb.init(project="p", dir=root, reinit=True)
    assert second is not first and first.finished
    wandb.finish()
    states = sorted(r.state for r in localrun.Api(root).runs("p"))
    assert states == ["finished", "finished"]


def test_media_values_are_localruns(root: Path) -> None:
    import numpy as np

    wandb.init(project="p", id="media", dir=root)
    wandb.log({"img": wandb.Image(np.zeros((2, 2), dtype=np.uint8), caption="c")})
    wandb.log({"h": wandb.Histogram([1.0, 2.0], num_bins=2)})
    wandb.finish()
    stored = localrun.Api(root).run("p/media")
    assert stored.media("img", 0).size == (2, 2)
    assert stored.media("h", 1)[0].tolist() == [1, 1]
