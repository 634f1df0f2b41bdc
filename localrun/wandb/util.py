"""``wandb.util``: the part scripts use."""

from __future__ import annotations

from localrun.util import generate_id

__all__ = ["generate_id"]
