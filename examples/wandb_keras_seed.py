# wandb's own resuming example (docs: "Resuming"), run by localrun with only the two import lines
# changed, and Keras 3's spelling of Model(inputs=, outputs=). tests/test_wandb_compat.py kills it
# mid-training, runs it again, and checks that it resumed at the right epoch.
import keras
import numpy as np
import localrun.wandb as wandb
from localrun.wandb.keras import WandbCallback

wandb.init(project="preemptable", resume=True)
if wandb.run.resumed:
    # restore the best model
    model = keras.models.load_model(wandb.restore("model-best.h5").name)
else:
    a = keras.layers.Input(shape=(32,))
    b = keras.layers.Dense(10)(a)
    model = keras.models.Model(inputs=a,outputs=b)
model.compile("adam", loss="mse")
model.fit(np.random.rand(100, 32), np.random.rand(100, 10),
    # set the resumed epoch
    initial_epoch=wandb.run.step, epochs=300,
    # save the best model if it improved each epoch
    callbacks=[WandbCallback(save_model=True, monitor="loss")])
