"""Round trip of every value type, wandb's step semantics, summary, config, run lifecycle."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import localrun


def _history(root: Path, path: str, **kw):
    return localrun.Api(root).run(path).history(**kw)


def test_every_value_type_round_trips(root: Path) -> None:
    import torch  # imported by the test: localrun must use it only because it is loaded

    run = localrun.init(project="p", id="types", dir=root)
    run.log(
        {
            "py_float": 1.5,
            "py_int": 3,
            "py_bool": True,
            "np_f32": np.float32(2.5),
            "np_i64": np.int64(7),
            "np_bool": np.bool_(False),
            "zero_d": np.array(4.25),
            "torch_scalar": torch.tensor(0.5),
            "text": "hello",
            "nothing": None,
            "nan": math.nan,
            "pinf": math.inf,
            "ninf": -math.inf,
            "pylist": [1, 2.5, None],
            "tuple": (1, 2),
            "np_1d": np.arange(3, dtype=np.float32),
            "torch_1d": torch.tensor([1.0, 2.0]),
            "strings": ["a", "b"],
        }
    )
    run.finish()
    row = _history(root, "p/types").to_pylist()[0]
    assert row["_step"] == 0
    expected = {
        "py_float": 1.5,
        "py_int": 3.0,
        "py_bool": 1.0,
        "np_f32": 2.5,
        "np_i64": 7.0,
        "np_bool": 0.0,
        "zero_d": 4.25,
        "torch_scalar": 0.5,
        "text": "hello",
        "pinf": math.inf,
        "ninf": -math.inf,
        "pylist": [1.0, 2.5, None],
        "tuple": [1.0, 2.0],
        "np_1d": [0.0, 1.0, 2.0],
        "torch_1d": [1.0, 2.0],
        "strings": ["a", "b"],
    }
    for key, value in expected.items():
        assert row[key] == value, key
    assert math.isnan(row["nan"])
    assert "nothing" not in row  # None for a never-logged key records nothing
    table = _history(root, "p/types")
    assert table.schema.field("text").type == pa.string()
    assert table.schema.field("np_1d").type == pa.list_(pa.float64())
    summary = localrun.Api(root).run("p/types").summary
    assert math.isnan(summary["nan"]) and summary["pinf"] == math.inf and summary["text"] == "hello"


def test_steps_follow_wandb_semantics(root: Path) -> None:
    run = localrun.init(project="p", id="steps", dir=root)
    run.log({"a": 1})  # step 0
    run.log({"a": 2}, commit=False)  # accumulates into step 1 ...
    run.log({"b": 3})  # ... and commits it
    run.log({"a": 4}, step=5)  # jumps to 5, not committed yet (commit defaults False)
    run.log({"b": 5}, step=5)  # same step: merged
    run.log({"a": 6}, step=7, commit=True)  # commits 5, then 7
    assert run.step == 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.log({"a": 99}, step=3)
        run.log({"a": 98}, step=4)
    assert len(caught) == 1 and "lower than the run's current step" in str(caught[0].message)
    run.finish()
    rows = _history(root, "p/steps").select(["_step", "a", "b"]).to_pylist()
    assert rows == [
        {"_step": 0, "a": 1.0, "b": None},
        {"_step": 1, "a": 2.0, "b": 3.0},
        {"_step": 5, "a": 4.0, "b": 5.0},
        {"_step": 7, "a": 6.0, "b": None},
    ]
    assert localrun.Api(root).run("p/steps").dropped_steps == 2


def test_pending_step_is_committed_at_finish(root: Path) -> None:
    run = localrun.init(project="p", id="pending", dir=root)
    run.log({"x": 1.0}, step=3)
    run.finish()
    assert _history(root, "p/pending").select(["_step", "x"]).to_pylist() == [
        {"_step": 3, "x": 1.0}
    ]


def test_summary_is_last_value_unless_set(root: Path) -> None:
    run = localrun.init(project="p", id="summary", dir=root)
    for i in range(5):
        run.log({"loss": 1.0 / (i + 1), "acc": i * 0.1})
    run.summary["loss"] = 0.01  # explicit: later logs of "loss" no longer change it
    run.log({"loss": 7.0, "acc": 0.9})
    assert run.summary["acc"] == 0.9 and run.summary["loss"] == 0.01
    run.finish()
    assert localrun.Api(root).run("p/summary").summary == {"loss": 0.01, "acc": 0.9}


def test_config_persists_and_refuses_silent_change(root: Path) -> None:
    run = localrun.init(project="p", id="cfg", dir=root, config={"lr": 0.1, "layers": [1, 2]})
    run.config["batch"] = np.int64(32)
    assert run.config.lr == 0.1
    with pytest.raises(localrun.UsageError, match="'lr' is stored as 0.1"):
        run.config["lr"] = 0.2
    run.config.update({"lr": 0.2}, allow_val_change=True)
    with pytest.raises(localrun.UsageError, match="JSON data"):
        run.config["obj"] = object()
    run.finish()
    assert localrun.Api(root).run("p/cfg").config == {"lr": 0.2, "layers": [1, 2], "batch": 32}


def test_module_level_api(root: Path) -> None:
    with pytest.raises(localrun.UsageError, match="call localrun.init"):
        localrun.log({"a": 1})
    run = localrun.init(
        project="p",
        id="mod",
        dir=root,
        name="nice",
        notes="n",
        tags=["t"],
        group="g",
        job_type="train",
    )
    assert localrun.run is run
    localrun.log({"a": 1})
    localrun.finish()
    assert localrun.run is None
    stored = localrun.Api(root).run("p/mod")
    assert (stored.name, stored.notes, stored.tags, stored.group, stored.job_type) == (
        "nice",
        "n",
        ["t"],
        "g",
        "train",
    )
    assert stored.state == "finished" and stored.attempts[0]["exit_code"] == 0
    with pytest.raises(localrun.UsageError, match="finished"):
        run.log({"a": 2})


def test_context_manager_marks_failure(root: Path) -> None:
    with pytest.raises(RuntimeError), localrun.init(project="p", id="boom", dir=root) as run:
        run.log({"a": 1})
        raise RuntimeError("training diverged")
    stored = localrun.Api(root).run("p/boom")
    assert stored.state == "failed"
    assert stored.attempts[-1]["exit_code"] == 1
    assert stored.history().num_rows == 1


def test_finish_with_exit_code_is_failed(root: Path) -> None:
    localrun.init(project="p", id="code", dir=root).finish(exit_code=3)
    last = localrun.Api(root).run("p/code").attempts[-1]
    assert (last["state"], last["exit_code"]) == ("failed", 3)


def test_new_run_with_used_id_is_refused(root: Path) -> None:
    localrun.init(project="p", id="dup", dir=root).finish()
    with pytest.raises(localrun.RunExistsError, match="resume='allow'"):
        localrun.init(project="p", id="dup", dir=root)


def test_history_formats_and_keys(root: Path) -> None:
    run = localrun.init(project="p", id="fmt", dir=root)
    for i in range(3):
        run.log({"loss": float(i), "acc": i / 10})
    run.finish()
    stored = localrun.Api(root).run("p/fmt")
    assert stored.history(["loss"]).column_names == ["_step", "_timestamp", "_runtime", "loss"]
    assert list(stored.history(format="pandas")["loss"]) == [0.0, 1.0, 2.0]
    assert stored.history(format="polars")["acc"].to_list() == [0.0, 0.1, 0.2]
    with pytest.raises(localrun.UsageError, match="no key 'los'"):
        stored.history(["los"])
    with pytest.raises(localrun.UsageError, match="format"):
        stored.history(format="excel")
