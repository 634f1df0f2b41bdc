"""Keras 3 callback: log every epoch, keep the best model as a run file, track the best value.

    from localrun.integrations.keras import LocalrunCallback
    model.fit(x, y, initial_epoch=run.step, epochs=100,
              callbacks=[LocalrunCallback(monitor="val_loss")])

Keras is an optional extra (``localrun-tracker[keras]``); localrun's core never imports this module.
Uses only localrun's public API.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras

import localrun


class LocalrunCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Logs each epoch's logs at step = epoch, and saves the best model into the run.

    ``monitor``/``mode`` decide what "best" means (mode "auto": max for accuracy-like names,
    min otherwise). With ``save_model``, the model is saved as run file ``filename``: only when
    the monitored value improves (``save_best_only``), or after every epoch. The summary keeps
    ``best_<monitor>`` and ``best_epoch``; after a resume the callback continues from them, so a
    restarted job does not overwrite a better model with a worse one.

    ``run.save`` commits the model, its epoch's row and the best value in one revision: a crash
    never leaves a model newer than its record, nor a best value without its model.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_model: bool = True,
        save_best_only: bool = True,
        filename: str = "model-best.keras",
        run: localrun.Run | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise localrun.UsageError(f"mode={mode!r} must be 'auto', 'min' or 'max'")
        if mode == "auto":
            higher_is_better = ("acc", "auc", "precision", "recall")
            mode = "max" if any(s in monitor for s in higher_is_better) else "min"
        self.monitor = monitor
        self.mode = mode
        self.save_model = save_model
        self.save_best_only = save_best_only
        self.filename = filename
        self._run = run
        self.best = math.inf if mode == "min" else -math.inf
        self._warned = False

    @property
    def run(self) -> localrun.Run:
        run = self._run or localrun.run
        if run is None:
            raise localrun.UsageError("LocalrunCallback needs a run: call localrun.init() first")
        return run

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        stored = self.run.summary.get(f"best_{self.monitor}")
        if isinstance(stored, (int, float)):
            self.best = float(stored)

    def _improved(self, value: float) -> bool:
        return value < self.best if self.mode == "min" else value > self.best

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        run = self.run
        values = {k: float(v) for k, v in (logs or {}).items()}
        run.log({**values, "epoch": epoch}, step=epoch, commit=True)
        current = values.get(self.monitor)
        if current is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"LocalrunCallback: monitor {self.monitor!r} is not in the epoch logs "
                    f"({', '.join(sorted(values)) or 'none'}); no best model is tracked",
                    stacklevel=2,
                )
            if self.save_model and not self.save_best_only:
                self._save_model(run)
            return
        if self._improved(current):
            self.best = current
            run.summary.update({f"best_{self.monitor}": current, "best_epoch": epoch})
            if self.save_model:
                self._save_model(run)
        elif self.save_model and not self.save_best_only:
            self._save_model(run)

    def _save_model(self, run: localrun.Run) -> None:
        folder = Path(tempfile.mkdtemp(prefix="localrun-keras-"))
        try:
            path = folder / self.filename
            self.model.save(path)
            run.save(str(path), base_path=str(folder), policy="now")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
