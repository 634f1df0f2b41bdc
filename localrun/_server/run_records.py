"""The runs page's records: what one row of the page shows, as typed values.

Apart from the index (``runs_index``) because two modules build them: the index, from a run's
revision, and the index's file kept between server starts (``runs_cache``), from JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

Scalar: TypeAlias = str | int | float | bool | None


@dataclass(frozen=True)
class Details:
    """What is read from a run's revision (cached until the revision changes)."""

    name: str
    tags: tuple[str, ...]
    group: str | None
    job_type: str | None
    notes: str
    host: str | None
    config: dict[str, Scalar]
    summary: dict[str, Scalar]
    haystack: str  # lower-cased text the search box matches


@dataclass(frozen=True)
class RunRecord:
    """One row of the runs page (a damaged run: ``state == "damaged"`` and its ``problem``)."""

    project: str
    id: str
    state: str
    created: float | None = None
    updated: float | None = None
    last_step: int | None = None
    attempts: int = 0
    rev: int | None = None
    details: Details | None = None
    problem: str | None = None

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    @property
    def name(self) -> str:
        return self.details.name if self.details else self.id

    @property
    def host(self) -> str | None:
        return self.details.host if self.details else None

    @property
    def tags(self) -> tuple[str, ...]:
        return self.details.tags if self.details else ()

    @property
    def group(self) -> str | None:
        return self.details.group if self.details else None

    def value(self, dotted: str) -> Scalar:
        """``config.X`` or ``summary.X`` (None when the run has no such key)."""
        if self.details is None:
            return None
        section, _, key = dotted.partition(".")
        values = self.details.config if section == "config" else self.details.summary
        return values.get(key)

    def as_json(self) -> dict[str, Any]:
        """The row as the API answers it."""
        out: dict[str, Any] = {
            "path": self.path,
            "project": self.project,
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "attempts": self.attempts,
            "host": self.host,
            "created": self.created,
            "updated": self.updated,
            "last_step": self.last_step,
            "tags": list(self.tags),
            "group": self.group,
            "job_type": self.details.job_type if self.details else None,
            "notes": self.details.notes if self.details else "",
            "rev": self.rev,
            "config": dict(self.details.config) if self.details else {},
            "summary": dict(self.details.summary) if self.details else {},
        }
        if self.problem is not None:
            out["problem"] = self.problem
        return out
