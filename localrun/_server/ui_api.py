"""The dashboard's JSON API (read-only, under ``/api/v1``); see docs/ui.md."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute


def routes(root: Path) -> list[BaseRoute]:
    """The API's routes on ``root``."""
    return []
