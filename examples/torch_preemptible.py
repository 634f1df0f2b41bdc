"""A preemptible PyTorch training loop: checkpoint into the run, resume from it anywhere.

Kill it at any moment and run it again: it resumes the run, loads the latest checkpoint from
the run's files and continues from the next epoch (rewinding the log if the checkpoint is older
than the last logged epoch).

    LOCALRUN_RUN_ID=my-run python examples/torch_preemptible.py
"""

import os

import torch

import localrun
from localrun.integrations.torch import load_checkpoint, save_checkpoint

EPOCHS = int(os.environ.get("EPOCHS", "30"))
CHECKPOINT_EVERY = int(os.environ.get("CHECKPOINT_EVERY", "1"))

run = localrun.init(project="preemptible-torch", resume="allow", config={"lr": 0.01})
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
optim = torch.optim.SGD(model.parameters(), lr=run.config["lr"])
x = torch.rand(4_000, 32)
y = x.sum(dim=1, keepdim=True) / 32

ckpt = load_checkpoint()
if ckpt is not None:
    model.load_state_dict(ckpt["model"])
    optim.load_state_dict(ckpt["optim"])
    if ckpt["epoch"] < run.step - 1:  # epochs logged after the checkpoint are redone
        run.rewind(ckpt["epoch"])
    print(f"resumed run {run.path} at epoch {run.step} from checkpoint epoch {ckpt['epoch']}")
else:
    if run.step > 0:  # epochs were logged but no checkpoint was kept: start over
        run.rewind(-1)
    print(f"new run {run.path}")

for epoch in range(run.step, EPOCHS):
    for i in range(0, len(x), 500):
        optim.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[i : i + 500]), y[i : i + 500])
        loss.backward()
        optim.step()
    run.log({"loss": loss.item(), "epoch": epoch}, step=epoch, commit=True)
    if epoch % CHECKPOINT_EVERY == 0:
        save_checkpoint({"epoch": epoch, "model": model.state_dict(), "optim": optim.state_dict()})
run.finish()
