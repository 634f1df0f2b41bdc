"""``wandb.keras.WandbCallback`` over localrun's Keras callback (the seed's example runs as is).

Logs each epoch's logs at step = epoch (so ``initial_epoch=wandb.run.step`` resumes at the next
epoch), keeps ``best_<monitor>`` and ``best_epoch`` in the summary, and saves the best model as
run file ``model-best.h5``, which ``wandb.restore("model-best.h5")`` brings back after a resume.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import localrun
from localrun.integrations.keras import LocalrunCallback

from . import UnsupportedError

_UNSUPPORTED = (
    "log_weights",
    "log_gradients",
    "training_data",
    "validation_data",
    "generator",
    "data_type",
    "labels",
    "predictions",
    "input_type",
    "output_type",
    "log_evaluation",
    "log_batch_frequency",
    "compute_flops",
)


class WandbCallback(LocalrunCallback):
    """``WandbCallback(monitor="val_loss", mode="auto", save_model=True, ...)``."""

    def __init__(
        self,
        monitor: str = "val_loss",
        verbose: int = 0,
        mode: str = "auto",
        save_weights_only: bool = False,
        save_model: bool = True,
        save_graph: bool = False,
        **unsupported: Any,
    ) -> None:
        for key, value in unsupported.items():
            if key not in _UNSUPPORTED:
                raise TypeError(f"WandbCallback() got an unexpected keyword argument {key!r}")
            if value not in (None, False, 0, [], ()):
                raise UnsupportedError(
                    f"WandbCallback({key}=...) is not supported by localrun.wandb (log the "
                    "values yourself with wandb.log)"
                )
        if save_weights_only:
            raise UnsupportedError(
                "WandbCallback(save_weights_only=True) is not supported: the whole model is saved"
            )
        super().__init__(
            monitor=monitor, mode=mode, save_model=save_model, filename="model-best.h5"
        )

    def _save_model(self, run: localrun.Run) -> None:
        """Saved without the optimizer: Keras 3 cannot load back the compile arguments it writes
        into a legacy ``.h5`` file ("Could not deserialize 'keras.metrics.mse'"), and the
        example compiles the restored model again anyway."""
        folder = Path(tempfile.mkdtemp(prefix="localrun-keras-"))
        try:
            path = folder / self.filename
            self.model.save(path, include_optimizer=False)
            run.save(str(path), base_path=str(folder), policy="now")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
