"""The simulated training job behind ``localrun demo`` (and a template for real scripts).

Resume-aware the way a real job is: ``init`` with the id and resume mode from the environment,
continue from ``run.step``, log each step.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import localrun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sleep", type=float, default=0.05)
    args = parser.parse_args()
    with localrun.init(
        config={"lr": 0.01, "batch_size": 32, "model": "tiny-mlp"}, flush_interval=0.25
    ) as run:
        where = f"resumed at step {run.step} (attempt {run.attempt})" if run.resumed else "started"
        print(f"   run {run.path} {where}", flush=True)
        rng = random.Random(run.step)
        for step in range(run.step, args.steps):
            loss = 2.0 * math.exp(-step / 20) + rng.uniform(0, 0.05)
            run.log({"loss": loss, "acc": 1 - loss / 2.2, "lr": 0.01 * 0.98**step})
            time.sleep(args.sleep)
        run.summary["final_loss"] = loss


if __name__ == "__main__":
    main()
