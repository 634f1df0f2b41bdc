"""The exception tree of localrun.

Every error localrun raises on purpose derives from :class:`LocalrunError`, so one ``except``
catches them all. Where an error refines a builtin (a bad value is a ``ValueError``, a missing
run is a ``LookupError``, waiting too long is a ``TimeoutError``), it subclasses that builtin
too, like ``filelock.Timeout(TimeoutError)``: code that already handles the builtin keeps
working. Each class carries the exit code the command line uses for it (click's pattern), so
scripts can tell "bad input" from "run busy" without parsing text.

This module imports nothing of localrun: everything else may import it.
"""

from __future__ import annotations


class LocalrunWarning(UserWarning):
    """Every warning localrun gives (a dropped step, a resume that can never happen, ...):
    filter them by this category."""


class LocalrunError(Exception):
    """Root of every error localrun raises on purpose."""

    exit_code: int = 1


class UsageError(LocalrunError, ValueError):
    """An argument or variable has a value localrun cannot use; the message says which and why."""

    exit_code = 2


class InvalidIdError(UsageError):
    """A run id, project name or file name would be empty, too long, or escape its folder."""


class LogValueError(UsageError, TypeError):
    """A logged key or value is not one localrun stores (see docs/logging.md)."""


class RunNotFoundError(LocalrunError, LookupError):
    """No run (or file) exists under the given name."""

    exit_code = 3


class RunExistsError(LocalrunError, FileExistsError):
    """A new run was asked for with an id that is already used, and resume was not allowed."""

    exit_code = 4


class RunInUseError(LocalrunError):
    """Another live process owns the run (its lease heartbeat moves).

    ``host``, ``pid`` and ``attempt`` name the owner (None where the lease does not say).
    """

    exit_code = 5
    host: str | None = None
    pid: int | None = None
    attempt: int | None = None


class RunSupersededError(LocalrunError):
    """This writer lost the run to a newer attempt (it hung, its lease expired, another took over).

    It commits nothing more: the newer attempt's data wins.
    """

    exit_code = 6


class CorruptRunError(LocalrunError):
    """A run's files cannot be read as written; ``localrun verify --repair`` can rebuild them."""

    exit_code = 7


class FormatVersionError(LocalrunError):
    """A run or root was written by a newer localrun format than this one reads.

    Never "repaired": rewriting it in an older format would drop what the newer one recorded.
    Upgrade localrun on this machine (the message names both versions).
    """

    exit_code = 10

    def __init__(self, message: str, found: int, supported: int) -> None:
        super().__init__(message)
        self.found = found
        self.supported = supported

    def __reduce__(self) -> tuple[type[FormatVersionError], tuple[str, int, int]]:
        return type(self), (str(self), self.found, self.supported)


class StorageError(LocalrunError, OSError):
    """The filesystem refused a write (read-only, full, permissions); committed data is intact."""

    exit_code = 8


class LockTimeout(LocalrunError, TimeoutError):
    """The manifest mutex could not be taken within its bound."""

    exit_code = 9


class SyncError(LocalrunError):
    """A push to a remote did not complete; local data is never changed by sync."""

    exit_code = 11


class RemoteConflictError(SyncError):
    """The remote holds a different run (another uid) under the same project/id: never merged."""

    exit_code = 12


class RemoteUnavailableError(SyncError):
    """The remote is down, slow, full or refuses the token: the push can be retried later."""

    exit_code = 13
