"""PyTorch Lightning logger: one localrun run per training job, resumed with its checkpoint.

    from localrun.integrations.lightning import LocalrunLogger
    logger = LocalrunLogger(project="p", id="exp-1")        # a fixed id: a relaunch finds it
    trainer = Trainer(logger=logger, callbacks=[ModelCheckpoint(save_last=True)])
    trainer.fit(model, ckpt_path="last")                     # after a kill: the same run

How the run travels with the checkpoint: Lightning finds ``ckpt_path="last"`` in
``<save_dir>/<name>/<version>/checkpoints`` and reads ``logger.version`` to build that path
*before* it opens any checkpoint (and before any hook could read one). So the version is the run
id, known when the logger is made (``id=``, else ``LOCALRUN_RUN_ID``, else a new id): the
checkpoint's folder names its run. The step comes from Lightning itself: a resumed fit logs again
from the checkpoint's step, so the first step it logs in this process is where the run continues;
rows an earlier attempt logged at that step or later are hidden by ``run.rewind`` (kept, see
``history(all_attempts=True)``).

Lightning is an optional extra (``localrun-tracker[lightning]``). Public localrun API only.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

import localrun
from localrun import _settings
from localrun.integrations._common import save_as, storable

CHECKPOINTS = (None, "last", "best", "all")

# The id a logger made on rank zero, for the processes Lightning's DDP launcher starts: they run
# the same script again, so their logger finds its rank zero's id here.
# Not a setting: how rank zero hands its run id to the ranks DDP starts (inherited env).
_SHARED_ID = "_LOCALRUN_LIGHTNING_RUN_ID"


def _rank() -> int:
    """This process's global rank as the launchers set it (0 before any launcher ran)."""
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


class LocalrunLogger(Logger):  # type: ignore[misc, unused-ignore]  # Any without lightning
    """A Lightning ``Logger`` that writes one localrun run (only on rank zero under DDP).

    ``project`` is Lightning's ``name`` and ``version`` is the run id: ``id=``, else
    ``LOCALRUN_RUN_ID``, else a new one. Give a fixed id (or launch with ``localrun run --id``)
    for ``trainer.fit(ckpt_path="last")`` to resume the same run after a kill. ``resume``
    (default ``"allow"``) is passed to ``localrun.init``; so are ``name`` (the run's display
    name), ``config`` and any other keyword (``notes``, ``tags``, ``group``, ``keep_versions``...).

    ``checkpoints`` copies Lightning's checkpoints into the run's files after each save:
    ``"last"`` the newest one as ``last.ckpt``, ``"best"`` the best one as ``best.ckpt``,
    ``"all"`` every one under its own file name. Each save of a name is a new version, of which
    the run keeps the newest ``keep_versions`` (default 5). ``save_dir`` is where Lightning keeps
    its own files (checkpoints included); None is the trainer's ``default_root_dir``.
    """

    def __init__(
        self,
        project: str | None = None,
        id: str | None = None,
        name: str | None = None,
        *,
        save_dir: str | os.PathLike[str] | None = None,
        dir: str | os.PathLike[str] | None = None,
        resume: bool | str | None = "allow",
        config: Mapping[str, Any] | None = None,
        checkpoints: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        if checkpoints not in CHECKPOINTS:
            raise localrun.UsageError(
                f"checkpoints={checkpoints!r} must be None, 'last', 'best' or 'all'"
            )
        self._project = project or _settings.env_text("LOCALRUN_PROJECT") or "lightning_logs"
        self._id = id or _settings.env_text("LOCALRUN_RUN_ID") or self._shared_id()
        self._run_name = name
        self._save_dir = os.fspath(save_dir) if save_dir is not None else None
        self._root = dir
        self._resume = resume
        self._config = dict(config or {})
        self._checkpoints = checkpoints
        self._init_kwargs = init_kwargs
        self._run: localrun.Run | None = None
        self._first_run = True  # the run this logger opens first may rewind at its first step
        self._rewind_pending = False
        self._stored: dict[str, int] = {}  # checkpoint path -> its mtime (ns) when stored

    @staticmethod
    def _shared_id() -> str:
        if _rank() > 0 and os.environ.get(_SHARED_ID):
            return os.environ[_SHARED_ID]
        new = localrun.util.generate_id()
        os.environ[_SHARED_ID] = new  # inherited by the ranks DDP starts from this process
        return new

    # -- what Lightning asks ------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The project: Lightning's experiment name (the folder above the version)."""
        return self._project

    @property
    def version(self) -> str:
        """The run id: the folder Lightning keeps this run's checkpoints in."""
        return self._id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def log_dir(self) -> str | None:
        """``<save_dir>/<project>/<run id>``, where Lightning puts ``checkpoints/``."""
        if self._save_dir is None:
            return None
        return os.path.join(self._save_dir, self._project, self._id)

    @property
    @rank_zero_experiment
    def experiment(self) -> localrun.Run:
        """The ``localrun.Run`` (on rank zero; a stand-in that does nothing elsewhere).

        Made at the first use, resumed when the id exists (``resume="allow"``).
        """
        if self._run is None:
            self._run = localrun.init(
                project=self._project,
                id=self._id,
                name=self._run_name,
                config=self._config or None,
                dir=self._root,
                resume=self._resume,
                **self._init_kwargs,
            )
            # A resumed run continues where Lightning's first logged step says (see the module
            # docstring); a run opened again after finalize() (trainer.test after fit) does not.
            self._rewind_pending = self._first_run and self._run.resumed
            self._first_run = False
        return self._run

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Stored as the run's config. A resumed run refuses a changed value (localrun's rule);
        the error says how to allow it."""
        self.experiment.config.update(storable(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        run = self.experiment
        values = {k: _number(v) for k, v in metrics.items()}
        if step is None:
            run.log(values)
            return
        if self._rewind_pending:
            self._rewind_pending = False
            if step < run.step:  # an earlier attempt logged this step (and maybe later ones)
                run.rewind(step - 1)
        run.log(values, step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """Commit the rows logged so far (they are older than this checkpoint), then copy the
        checkpoints asked for into the run."""
        run = self.experiment
        if self._checkpoints is None:
            run.flush()
            return
        for path, name in self._to_store(checkpoint_callback):
            save_as(run, path, name)  # commits the rows so far with the file
        run.flush()

    def _to_store(self, cb: ModelCheckpoint) -> list[tuple[str, str]]:
        """(local path, run file name) of each checkpoint not stored yet in its current state."""
        found = {p for p in (cb.last_model_path, cb.best_model_path, *cb.best_k_models) if p}
        mtimes = {p: os.stat(p).st_mtime_ns for p in found if os.path.isfile(p)}
        fresh = [p for p, t in mtimes.items() if self._stored.get(p) != t]
        chosen: list[tuple[str, str]] = []
        if self._checkpoints == "all":
            chosen = [(p, Path(p).name) for p in sorted(fresh)]
        elif self._checkpoints == "last" and fresh:
            chosen = [(max(fresh, key=lambda p: mtimes[p]), "last.ckpt")]
        elif self._checkpoints == "best" and cb.best_model_path in fresh:
            chosen = [(cb.best_model_path, "best.ckpt")]
        for p in fresh if self._checkpoints != "best" else [p for p, _ in chosen]:
            self._stored[p] = mtimes[p]
        return chosen

    def save(self) -> None:
        """Nothing: Lightning calls this after every ``log_metrics``, and a commit per step
        would cost a revision per step. The run's own thread flushes every ``flush_interval``,
        and each checkpoint save commits (``after_save_checkpoint``)."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Record the end state: ``"success"`` finishes the run, ``"failed"`` fails it (an
        interrupted or preempted attempt is recorded as localrun saw it). ``"finished"`` (a
        SLURM requeue signal) only flushes: the requeued job resumes the run."""
        run = self._run
        if run is None:
            return
        if status == "finished":
            run.flush()
            return
        self._run = None
        run.finish(exit_code=0 if status == "success" else 1)

    # -- resuming on another node ---------------------------------------------------------------
    def restore_checkpoint(self, name: str = "last.ckpt") -> str | None:
        """A local path of the run's checkpoint file ``name`` (stored with ``checkpoints=``), or
        None when the run has none: ``trainer.fit(model, ckpt_path=logger.restore_checkpoint())``
        resumes on a node that never saw Lightning's own checkpoint folder. Needs no open run."""
        try:
            restored = localrun.restore(
                name, run_path=f"{self._project}/{self._id}", root=self._root, missing_ok=True
            )
        except localrun.RunNotFoundError:  # the run itself does not exist yet
            return None
        return None if restored is None else restored.name

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for ``ddp_spawn``: a child process opens its own handle if it needs one."""
        state = self.__dict__.copy()
        state["_run"] = None
        return state


def _number(value: Any) -> Any:
    item = getattr(value, "item", None)  # a 0-d tensor
    return item() if callable(item) else value
