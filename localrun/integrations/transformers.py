"""Hugging Face Transformers callback: one localrun run per training, resumed with its checkpoint.

    from localrun.integrations.transformers import LocalrunCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[LocalrunCallback()])
    trainer.train(resume_from_checkpoint=True)      # after a kill: the same run, rewound

Transformers has no registry for third-party ``report_to`` names, so the callback is passed
directly (set ``report_to="none"`` to keep the built-in trackers out).

How the run travels with the checkpoint: the callback is an ``ExportableState``, so every
checkpoint's ``trainer_state.json`` records its run id under ``stateful_callbacks``. A resumed
``train()`` loads that file before ``on_train_begin``, where the callback reads the id back and
resumes the run at the checkpoint's ``global_step`` (``run.rewind``): rows an earlier
attempt logged after the checkpoint are hidden, not deleted. This works whether or not
``restore_callback_states_from_checkpoint`` is set.

Transformers is an optional extra (``localrun-tracker[transformers]``). Public localrun API only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

import localrun
from localrun import _settings
from localrun.integrations._common import restore_tree, save_tree, storable

# Keys of the final on_log call of train(): the run's summary, not a row.
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second")


class LocalrunCallback(TrainerCallback, ExportableState):  # type: ignore[misc, unused-ignore]
    """Logs the Trainer's logs at ``state.global_step`` into one localrun run (world process
    zero only), with the training arguments and the model's config as the run's config.

    The run: the id stored in the checkpoint being resumed, else ``id=``, else
    ``LOCALRUN_RUN_ID``, else a new id. ``resume`` (default ``"allow"``), ``project``, ``name``,
    ``dir`` and any other keyword (``tags``, ``group``, ``keep_versions``...) go to
    ``localrun.init``. A fixed ``id`` that existed before and no checkpoint (the job was killed
    before its first save) starts the run's history over (``rewind(-1)``), as training does.

    ``save_checkpoints=True`` copies each checkpoint folder into the run as
    ``checkpoint/<file>`` (a new version each save, the newest ``keep_versions`` kept);
    :meth:`restore_checkpoint` brings the latest back for ``resume_from_checkpoint=``, on a node
    that never saw ``output_dir``.
    """

    def __init__(
        self,
        project: str | None = None,
        id: str | None = None,
        name: str | None = None,
        dir: str | None = None,
        resume: bool | str | None = "allow",
        save_checkpoints: bool = False,
        **init_kwargs: Any,
    ) -> None:
        self.project = project
        self.id = id
        self.name = name
        self.dir = None if dir is None else os.fspath(dir)
        self.resume = resume
        self.save_checkpoints = save_checkpoints
        self.init_kwargs = init_kwargs
        self.run: localrun.Run | None = None
        self.run_id: str | None = None  # the run's id once known: what a checkpoint records
        self._row: dict[str, Any] = {}
        self._row_step = -1

    # -- ExportableState: the run id inside every checkpoint -----------------------------------
    def state(self) -> dict[str, Any]:
        """Saved in each checkpoint's trainer_state.json. ``args`` rebuilds this callback when
        ``restore_callback_states_from_checkpoint`` is set (JSON values only)."""
        given = {
            "project": self.project,
            "id": self.id,
            "name": self.name,
            "dir": self.dir,
            "resume": self.resume,
            "save_checkpoints": self.save_checkpoints,
            **self.init_kwargs,
        }
        args = {k: v for k, v in given.items() if _is_json(v)}
        project = self.run.project if self.run is not None else self.project
        return {"args": args, "attributes": {"run_id": self.run_id, "project": project}}

    # -- the training's life ------------------------------------------------------------------
    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero:
            return
        stored = _stored_attributes(state)
        run_id = self.id or stored.get("run_id") or _settings.env_text("LOCALRUN_RUN_ID")
        config = {"args": storable(args.to_dict())}  # type: ignore[no-untyped-call, unused-ignore]
        model_config = getattr(kwargs.get("model"), "config", None)
        if model_config is not None and hasattr(model_config, "to_dict"):
            config["model"] = storable(model_config.to_dict())
        run = localrun.init(
            project=self.project or stored.get("project"),
            id=run_id,
            name=self.name,
            dir=self.dir,
            resume=self.resume,
            config=config,
            # Arguments such as max_steps or logging_dir may differ from the killed attempt's;
            # the relaunch's values are the ones in force.
            allow_val_change=True,
            **self.init_kwargs,
        )
        if run.resumed:
            # Training continues after the checkpoint's step (state.global_step, 0 without a
            # checkpoint): rows an earlier attempt logged after it are hidden, not deleted.
            checkpoint_step = state.global_step if state.global_step > 0 else -1
            if run.step > checkpoint_step + 1:
                run.rewind(checkpoint_step)
        self.run, self.run_id = run, run.id
        self._row, self._row_step = {}, -1

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        run = self.run
        if run is None or not state.is_world_process_zero or not logs:
            return
        values = {k: v for k, v in logs.items() if _is_number(v)}
        if any(k in values for k in _SUMMARY_KEYS):
            run.summary.update(values)
            return
        if state.global_step != self._row_step:
            self._commit()
        self._row.update(values)
        self._row_step = state.global_step

    def _commit(self) -> None:
        """Log the step's row: one row per global step, whatever number of on_log calls
        (training logs, then evaluation logs) filled it."""
        if self.run is not None and self._row:
            self.run.log(self._row, step=self._row_step, commit=True)
        self._row = {}

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Commit every row up to this checkpoint's step (and its files, if asked), so a kill
        after the save loses nothing the checkpoint covers."""
        run = self.run
        if run is None or not state.is_world_process_zero:
            return
        self._commit()
        folder = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
        if self.save_checkpoints and folder.is_dir():
            save_tree(run, folder, "checkpoint")
        run.flush()

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        run = self.run
        if run is None or not state.is_world_process_zero:
            return
        self._commit()
        self.run = None
        run.finish()

    # -- resuming on another node ---------------------------------------------------------------
    def restore_checkpoint(
        self, to: str | os.PathLike[str], run_id: str | None = None
    ) -> str | None:
        """The run's latest stored checkpoint folder (``save_checkpoints=True``) copied to
        ``to``, as a path for ``trainer.train(resume_from_checkpoint=...)``; None when the run
        has none. The run is ``run_id``, else ``id=``, else ``LOCALRUN_RUN_ID``."""
        rid = run_id or self.id or _settings.env_text("LOCALRUN_RUN_ID")
        if rid is None:
            raise localrun.UsageError(
                "restore_checkpoint needs the run's id: LocalrunCallback(id=...) or run_id="
            )
        project = self.project or _settings.env_text("LOCALRUN_PROJECT") or "uncategorized"
        folder = restore_tree(f"{project}/{rid}", "checkpoint", to, self.dir)
        return None if folder is None else str(folder)


def _stored_attributes(state: TrainerState) -> dict[str, Any]:
    """The attributes this callback saved in the checkpoint being resumed (empty if none)."""
    callbacks: Any = state.stateful_callbacks  # a dict of name -> state once a state is loaded
    saved = callbacks.get(LocalrunCallback.__name__) if isinstance(callbacks, dict) else None
    if isinstance(saved, list):  # several LocalrunCallbacks: the first one's run
        saved = saved[0] if saved else None
    if not isinstance(saved, dict):
        return {}
    attributes = saved.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_json(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True
