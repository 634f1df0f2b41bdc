"""The resume contract (DESIGN §4), every cell, in argument and variable form."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import localrun
from tests.conftest import child_env, run_py, spawn


def _existing(root: Path, rid: str = "r1", steps: int = 3) -> None:
    with localrun.init(project="p", id=rid, dir=root, config={"lr": 0.1}, notes="old") as run:
        for i in range(steps):
            run.log({"loss": float(i)})


def _init(form: str, mode: object, rid: str | None, root: Path, mp: pytest.MonkeyPatch):
    """init() with the mode and id as arguments, or as LOCALRUN_RESUME / LOCALRUN_RUN_ID."""
    if form == "arg":
        return localrun.init(project="p", id=rid, resume=mode, dir=root)
    if mode is not None:
        mp.setenv("LOCALRUN_RESUME", str(mode).lower())
    if rid is not None:
        mp.setenv("LOCALRUN_RUN_ID", rid)
    else:
        mp.delenv("LOCALRUN_RUN_ID", raising=False)
    mp.setenv("LOCALRUN_DIR", str(root))
    mp.setenv("LOCALRUN_PROJECT", "p")
    return localrun.init()


FORMS = ["arg", "env"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("mode", [None, False, "never"])
def test_never_refuses_an_existing_id_and_creates_a_new_one(form, mode, root, monkeypatch) -> None:
    _existing(root)
    with pytest.raises(localrun.RunExistsError, match=r"p/r1 .*already exists.*resume='allow'"):
        _init(form, mode, "r1", root, monkeypatch)
    run = _init(form, mode, "fresh", root, monkeypatch)
    assert (run.id, run.resumed, run.step, run.attempt) == ("fresh", False, 0, 1)


@pytest.mark.parametrize("form", FORMS)
def test_allow_resumes_or_creates(form, root, monkeypatch) -> None:
    _existing(root)
    run = _init(form, "allow", "r1", root, monkeypatch)
    assert (run.resumed, run.step, run.starting_step, run.attempt) == (True, 3, 3, 2)
    run.finish()
    run = _init(form, "allow", "new-id", root, monkeypatch)
    assert (run.id, run.resumed, run.step) == ("new-id", False, 0)


@pytest.mark.parametrize("form", FORMS)
def test_must_resumes_or_refuses(form, root, monkeypatch) -> None:
    _existing(root)
    run = _init(form, "must", "r1", root, monkeypatch)
    assert run.resumed and run.step == 3
    run.finish()
    with pytest.raises(
        localrun.RunNotFoundError, match=r"no run p/nope .*Runs there: r1.*resume='allow'"
    ):
        _init(form, "must", "nope", root, monkeypatch)
    with pytest.raises(localrun.UsageError, match="needs the id"):
        _init(form, "must", None, root, monkeypatch)


def test_resume_with_a_run_id(root) -> None:
    _existing(root)
    run = localrun.init(project="p", resume="r1", dir=root)
    assert (run.id, run.resumed, run.step) == ("r1", True, 3)
    run.finish()
    with pytest.raises(localrun.RunNotFoundError):
        localrun.init(project="p", resume="missing", dir=root)
    with pytest.raises(localrun.UsageError, match="two different runs"):
        localrun.init(project="p", id="r1", resume="other", dir=root)


def test_run_id_as_resume_in_env_form_is_must_plus_id(root, monkeypatch) -> None:
    _existing(root)
    run = _init("env", "must", "r1", root, monkeypatch)
    assert run.id == "r1" and run.resumed


def test_argument_beats_variable(root, monkeypatch) -> None:
    _existing(root)
    monkeypatch.setenv("LOCALRUN_RESUME", "never")
    monkeypatch.setenv("LOCALRUN_RUN_ID", "r1")
    run = localrun.init(project="p", resume="allow", dir=root)
    assert run.resumed and run.id == "r1"
    run.finish()
    run = localrun.init(project="p", id="other", resume="allow", dir=root)
    assert run.id == "other" and not run.resumed


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("mode", [True, "auto"])
def test_auto_resumes_an_unclean_run_and_starts_anew_after_a_clean_one(
    form, mode, root, monkeypatch
) -> None:
    monkeypatch.setenv("LOCALRUN_RESUME_KEY", f"job-{form}-{mode}")
    first = _init(form, mode, None, root, monkeypatch)
    assert not first.resumed
    first.log({"loss": 1.0})
    first.finish(exit_code=1)  # failed: not clean, the marker stays
    second = _init(form, mode, None, root, monkeypatch)
    assert (second.id, second.resumed, second.step) == (first.id, True, 1)
    second.finish()  # clean: the marker goes
    third = _init(form, mode, None, root, monkeypatch)
    assert third.id != first.id and not third.resumed


def test_auto_marker_pointing_at_a_deleted_run_starts_a_new_run(root, monkeypatch, caplog) -> None:
    monkeypatch.setenv("LOCALRUN_RESUME_KEY", "job")
    run = localrun.init(project="p", resume=True, dir=root)
    run.finish(exit_code=1)
    shutil.rmtree(run.dir)
    again = localrun.init(project="p", resume=True, dir=root)
    assert again.id != run.id and not again.resumed
    assert "no longer exists" in caplog.text


def test_auto_resume_across_a_simulated_slurm_requeue(root, tmp_path) -> None:
    """The job dies on node A; SLURM requeues it (same job id) on node B, in another folder."""
    script = textwrap.dedent("""
        import os, signal, localrun
        run = localrun.init(project="p", resume=True, flush_interval=0.05)
        print(run.id, run.resumed, run.step, flush=True)
        for step in range(run.step, 20):
            run.log({"loss": 1.0 / (step + 1)})
            if step == 9 and not run.resumed:
                run.flush()
                os.kill(os.getpid(), signal.SIGKILL)   # the node dies
    """)
    node_a, node_b = tmp_path / "nodeA", tmp_path / "nodeB"
    node_a.mkdir()
    node_b.mkdir()
    (node_a / "train.py").write_text(script)
    (node_b / "train_copy.py").write_text(script)

    def job(node: Path, program: str, task: str = "3") -> subprocess.CompletedProcess[str]:
        """The job script as SLURM would start it: same job id, this node's folder."""
        env = child_env(root, SLURM_JOB_ID="4242", SLURM_ARRAY_TASK_ID=task)
        return subprocess.run(
            [sys.executable, program], cwd=node, env=env, capture_output=True, text=True, timeout=60
        )

    first = job(node_a, "train.py")
    assert first.returncode == -signal.SIGKILL
    run_id, resumed, step = first.stdout.split()
    assert resumed == "False" and step == "0"
    second = job(node_b, "train_copy.py")  # requeued on another node, in another folder
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == [run_id, "True", "10"]
    stored = localrun.Api(root).run(f"p/{run_id}")
    assert stored.history().column("_step").to_pylist() == list(range(20))
    assert [a["state"] for a in stored.attempts] == ["crashed", "finished"]
    assert not list((root / "p" / ".resume").glob("*.json"))  # clean finish removed the marker
    other_task = job(node_a, "train.py", task="4")
    assert other_task.stdout.split()[0] != run_id  # another array task is another run


def test_resumed_run_restores_and_merges(root) -> None:
    with localrun.init(
        project="p",
        id="r",
        dir=root,
        name="n1",
        notes="old",
        tags=["a"],
        config={"lr": 0.1, "bs": 32},
    ) as run:
        run.log({"loss": 1.0, "acc": 0.5})
        run.summary["best"] = 0.9
    run = localrun.init(
        project="p",
        id="r",
        resume="must",
        dir=root,
        notes="new notes",
        config={"bs": 32, "epochs": 10},
    )
    assert run.config.as_dict() == {"lr": 0.1, "bs": 32, "epochs": 10}
    assert run.summary["best"] == 0.9 and run.summary["loss"] == 1.0
    run.finish()
    stored = localrun.Api(root).run("p/r")
    assert (stored.notes, stored.name, stored.tags) == ("new notes", "n1", ["a"])
    with pytest.raises(localrun.UsageError, match="'lr' is stored as 0.1"):
        localrun.init(project="p", id="r", resume="must", dir=root, config={"lr": 0.2})
    run = localrun.init(
        project="p", id="r", resume="must", dir=root, config={"lr": 0.2}, allow_val_change=True
    )
    assert run.config["lr"] == 0.2


def test_attempts_record_the_whole_story(root) -> None:
    proc = spawn(
        """
        import os, signal, localrun
        run = localrun.init(project="p", id="r", flush_interval=0.05)
        for i in range(5):
            run.log({"x": float(i)})
        run.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """,
        root,
    )
    proc.wait()
    result = run_py(
        """
        import localrun
        run = localrun.init(project="p", id="r", resume="allow")
        for i in range(run.step, 8):
            run.log({"x": float(i)})
        run.finish(exit_code=2)
    """,
        root,
    )
    assert result.returncode == 0, result.stderr
    run = localrun.init(project="p", id="r", resume="allow", dir=root)
    run.finish()
    attempts = localrun.Api(root).run("p/r").attempts
    assert [(a["attempt"], a["state"], a["exit_code"], a["start_step"]) for a in attempts] == [
        (1, "crashed", None, 0),
        (2, "failed", 2, 5),
        (3, "finished", 0, 8),
    ]
    assert attempts[0]["pid"] == proc.pid and all(a["host"] for a in attempts)
    assert all(a["ended"] >= a["started"] for a in attempts)


def test_keras_pattern_initial_epoch_is_run_step(root) -> None:
    with localrun.init(project="p", id="k", dir=root) as run:
        for epoch in range(4):
            run.log({"loss": 1.0 / (epoch + 1)}, step=epoch, commit=True)
    run = localrun.init(project="p", id="k", resume="allow", dir=root)
    epochs = list(range(run.step, 6))  # model.fit(initial_epoch=run.step, epochs=6)
    assert epochs == [4, 5]


def test_rewind_to_an_older_checkpoint_hides_later_rows(root) -> None:
    with localrun.init(project="p", id="r", dir=root) as run:
        for i in range(10):
            run.log({"loss": float(i)})
    run = localrun.init(project="p", id="r", resume="must", rewind_to=4, dir=root)
    assert run.step == 5
    for i in range(5, 8):
        run.log({"loss": -float(i)})
    run.finish()
    stored = localrun.Api(root).run("p/r")
    assert stored.history(["loss"]).column("loss").to_pylist() == [0, 1, 2, 3, 4, -5, -6, -7]
    everything = stored.history(["loss"], all_attempts=True).select(["_attempt", "_step", "loss"])
    assert everything.num_rows == 13  # nothing deleted
    assert everything.to_pylist()[-3:] == [
        {"_attempt": 2, "_step": i, "loss": -float(i)} for i in (5, 6, 7)
    ]
    with pytest.raises(localrun.UsageError, match="needs a run to resume"):
        localrun.init(project="p", id="ghost", resume="allow", rewind_to=3, dir=root)


def test_live_rewind_inside_one_attempt(root) -> None:
    run = localrun.init(project="p", id="r", dir=root)
    for i in range(6):
        run.log({"loss": float(i)})
    run.rewind(2)  # e.g. a loss spike: reload the step-2 checkpoint
    assert run.step == 3
    run.log({"loss": 30.0})
    run.finish()
    assert localrun.Api(root).run("p/r").history(["loss"]).column("loss").to_pylist() == [
        0,
        1,
        2,
        30,
    ]


def test_corrupt_manifest_copy_is_harmless_the_log_is_the_state(root) -> None:
    _existing(root, steps=5)
    manifest = root / "p" / "r1" / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])  # truncated mid-write by a broken disk
    run = localrun.init(project="p", id="r1", resume="must", dir=root)
    assert run.step == 5 and run.config["lr"] == 0.1
    run.finish()
    assert json.loads(manifest.read_text())["state"] == "finished"  # rewritten by the commit


def test_corrupt_state_everywhere_is_a_clear_error_and_repairs(root) -> None:
    _existing(root, steps=5)
    run_dir = root / "p" / "r1"
    for f in [run_dir / "manifest.json", *(run_dir / "log").glob("*.json")]:
        f.write_text(f.read_text()[:40])  # every copy of the state truncated
    with pytest.raises(localrun.CorruptRunError, match="verify --repair"):
        localrun.init(project="p", id="r1", resume="must", dir=root)
    localrun.Api(root).verify("p/r1", repair=True)
    run = localrun.init(project="p", id="r1", resume="must", dir=root)
    assert run.step == 5 and run.config["lr"] == 0.1
    run.finish()


def test_missing_newest_segment_is_caught_at_resume(root) -> None:
    _existing(root)
    for seg in (root / "p" / "r1" / "history").glob("*.parquet"):
        seg.unlink()
    with pytest.raises(localrun.CorruptRunError, match="cannot be read"):
        localrun.init(project="p", id="r1", resume="must", dir=root)


def test_garbage_lease_is_treated_as_no_owner(root, caplog) -> None:
    import json

    _existing(root)
    newest = max((root / "p" / "r1" / "log").glob("*.json"))  # the state, edited by hand
    data = json.loads(newest.read_text())
    data["owner"] = {"host": 12, "junk": True}
    newest.write_text(json.dumps(data))
    run = localrun.init(project="p", id="r1", resume="must", dir=root)
    assert run.resumed and "unreadable lease" in caplog.text


def test_invalid_ids_in_variables(root, monkeypatch) -> None:
    monkeypatch.setenv("LOCALRUN_RUN_ID", "///")
    with pytest.raises(localrun.InvalidIdError, match="no letter"):
        localrun.init(project="p", resume="allow", dir=root)
    monkeypatch.setenv("LOCALRUN_RUN_ID", "ok")
    monkeypatch.setenv("LOCALRUN_PROJECT", "")
    assert localrun.init(resume="allow", dir=root).project == "uncategorized"


def test_resuming_a_cleanly_ended_run_is_quiet_and_a_takeover_is_said(root, caplog) -> None:
    """A resume of a run whose last attempt ended (finished, failed, preempted) takes it from
    nobody: not worth a warning on every requeue (the newcomer's report counted 20 in one
    `make bench`). Taking a run from an owner that died is, and says why."""
    import logging

    caplog.set_level(logging.WARNING, logger="localrun")
    with localrun.init(project="p", id="r", dir=root) as run:
        run.log({"loss": 1.0})
    with localrun.init(project="p", id="r", resume="must", dir=root) as run:
        assert run.resumed
    assert "taking over" not in caplog.text
    killed = spawn(
        """
        import localrun, time
        run = localrun.init(project="p", id="r", resume="must")
        run.log({"loss": 2.0}); run.flush()
        print("ready", flush=True)
        time.sleep(60)
        """,
        root,
    )
    assert killed.stdout is not None and killed.stdout.readline().strip() == "ready", killed.stderr
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    with localrun.init(project="p", id="r", resume="must", dir=root) as run:
        assert run.attempt == 4
    assert "taking over run" in caplog.text and "process is gone" in caplog.text
