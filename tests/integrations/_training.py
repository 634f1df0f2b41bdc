"""What the framework tests share: a training script started as a real process, its output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import child_env, track


def start_training(tmp: Path, root: Path, script: str, **env: str) -> subprocess.Popen[str]:
    """Write ``script`` as ``tmp/train.py`` and run it there, flushing every 50 ms; its output
    goes to ``tmp/train.log`` (see :func:`log_tail`)."""
    (tmp / "train.py").write_text(script)
    out = open(tmp / "train.log", "a")  # noqa: SIM115 - the child writes it until it ends
    return track(
        subprocess.Popen(
            [sys.executable, "train.py"],
            cwd=tmp,
            env=child_env(root, LOCALRUN_FLUSH_INTERVAL="0.05", **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )


def log_tail(tmp: Path) -> str:
    """The end of the training script's output, for assertion messages."""
    return (tmp / "train.log").read_text()[-5000:]
