"""Small helpers that are part of the public API (``localrun.util.generate_id``)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_lowercase + string.digits


def generate_id(length: int = 8) -> str:
    """A random run id (lowercase letters and digits, like wandb's), safe under the id rule.

    Store it before the run starts (in a job script, a checkpoint) to resume the same run later
    with ``init(id=..., resume="allow")`` or ``LOCALRUN_RUN_ID``.
    """
    if not 1 <= length <= 64:
        raise ValueError(f"length must be 1..64, got {length}")
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
