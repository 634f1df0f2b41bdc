"""The preemptible Keras example from wandb's "Resuming" page, adapted to Keras 3 and localrun.

Kill it at any moment (a preempted node) and run it again: it resumes the run, restores the
best model from the run's files and continues from the next epoch. Works offline.

    KERAS_BACKEND=torch python examples/keras_preemptible.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np

import localrun
from localrun.integrations.keras import LocalrunCallback

EPOCHS = int(os.environ.get("EPOCHS", "30"))

run = localrun.init(project="preemptible", resume=True)

# the best model so far: None for a new run, and for one killed before its first save
best = localrun.restore("model-best.keras", missing_ok=True) if run.resumed else None
if best is not None:
    model = keras.models.load_model(best.name)
    print(f"resumed run {run.path} at epoch {run.step}, best loss {run.summary['best_loss']:.4f}")
else:
    if run.step > 0:  # epochs were logged but no model was kept: train (and log) from scratch
        run.rewind(-1)
    a = keras.layers.Input(shape=(32,))
    b = keras.layers.Dense(10)(a)
    model = keras.models.Model(inputs=a, outputs=b)
    model.compile("adam", loss="mse")
    print(f"new run {run.path}")

rng = np.random.default_rng(0)
x, y = rng.random((2_000, 32)), rng.random((2_000, 10))
model.fit(
    x,
    y,
    # set the resumed epoch
    initial_epoch=run.step,
    epochs=EPOCHS,
    verbose=0,
    # save the best model if it improved each epoch
    callbacks=[LocalrunCallback(save_model=True, monitor="loss")],
)
run.finish()
