"""Hugging Face Accelerate tracker: ``Accelerator(log_with=[LocalrunTracker(...)])``.

    from localrun.integrations.accelerate import LocalrunTracker
    accelerator = Accelerator(log_with=[LocalrunTracker(project="p", id="exp-1")])
    accelerator.init_trackers("p", config={"lr": 1e-3})     # opens (or resumes) the run
    run = accelerator.get_tracker("localrun", unwrap=True)  # the localrun.Run (main process)
    ...
    accelerator.log({"loss": loss}, step=step)
    accelerator.end_training()                              # finishes the run

Accelerate's own ``save_state``/``load_state`` hold the training state; after ``load_state``,
``run.rewind(step)`` with the step the state was saved at hides rows logged after it (see
docs/integrations/transformers.md). Only the main process opens and writes the run.

Accelerate is an optional extra (``localrun-tracker[accelerate]``). Public localrun API only.
"""

from __future__ import annotations

from typing import Any

from accelerate.tracking import GeneralTracker, on_main_process

import localrun
from localrun import _settings
from localrun.integrations._common import storable


class LocalrunTracker(GeneralTracker):  # type: ignore[misc, unused-ignore]
    """An Accelerate tracker writing one localrun run, from the main process only.

    Every argument goes to ``localrun.init`` when Accelerate starts the tracker
    (``init_trackers``); ``resume`` defaults to ``"allow"``, so a relaunch with the same ``id``
    (or ``LOCALRUN_RUN_ID``) continues the run. ``init_trackers(project_name, ...)`` does not
    pass its project name to custom trackers: give ``project=`` here.
    """

    name = "localrun"
    requires_logging_directory = False
    main_process_only = True

    def __init__(
        self,
        project: str | None = None,
        id: str | None = None,
        resume: bool | str | None = "allow",
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self.project = project
        self.id = id or _settings.env_text("LOCALRUN_RUN_ID")
        self.resume = resume
        self.init_kwargs = init_kwargs
        self._run: localrun.Run | None = None

    @property
    def tracker(self) -> localrun.Run:
        """The ``localrun.Run`` (``accelerator.get_tracker("localrun", unwrap=True)``)."""
        if self._run is None:
            raise localrun.UsageError(
                "the localrun tracker has no run yet: call accelerator.init_trackers() first"
            )
        return self._run

    @on_main_process  # type: ignore[untyped-decorator, unused-ignore]
    def start(self) -> None:
        self._run = localrun.init(
            project=self.project, id=self.id, resume=self.resume, **self.init_kwargs
        )

    @on_main_process  # type: ignore[untyped-decorator, unused-ignore]
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        """The run's config. A resumed run refuses a changed value (localrun's rule); the
        error names the way to allow it."""
        self.tracker.config.update(storable(values))

    @on_main_process  # type: ignore[untyped-decorator, unused-ignore]
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """``run.log(values, step=step, **kwargs)``: wandb's step semantics (logging.md);
        ``log_kwargs={"localrun": {"commit": True}}`` closes the step at once."""
        self.tracker.log(values, step=step, **kwargs)

    @on_main_process  # type: ignore[untyped-decorator, unused-ignore]
    def finish(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish()
