"""localrun: experiment tracking on a plain filesystem, with crash-safe resume.

The public API is what this module exports (``__all__``); every other module is private.
``localrun.run`` is the process's current run (None before ``init``), like ``wandb.run``.
"""

import typing as _typing

from . import (
    _query_remote,  # noqa: F401  (registers the reader of URL roots: Api("s3://..."))
    util,
)
from ._query import Api, DamagedRun, ResumeMarker, StoredRun
from ._restore import RestoredFile, restore
from ._run import Run, Summary, init
from ._run import finish_current as finish
from ._run import log_current as log
from ._store.verify import Report as VerifyReport
from .errors import (
    CorruptRunError,
    FormatVersionError,
    InvalidIdError,
    LocalrunError,
    LocalrunWarning,
    LockTimeout,
    LogValueError,
    RemoteConflictError,
    RemoteUnavailableError,
    RunExistsError,
    RunInUseError,
    RunNotFoundError,
    RunSupersededError,
    StorageError,
    SyncError,
    UsageError,
)
from .media import Histogram, Image, Table

__version__ = "0.1.0"

__all__ = [
    "Api",
    "CorruptRunError",
    "FormatVersionError",
    "DamagedRun",
    "Histogram",
    "Image",
    "InvalidIdError",
    "LocalrunError",
    "LocalrunWarning",
    "LockTimeout",
    "LogValueError",
    "RemoteConflictError",
    "RemoteUnavailableError",
    "RestoredFile",
    "ResumeMarker",
    "Run",
    "RunExistsError",
    "RunInUseError",
    "RunNotFoundError",
    "RunSupersededError",
    "StorageError",
    "StoredRun",
    "Summary",
    "SyncError",
    "Table",
    "UsageError",
    "VerifyReport",
    "__version__",
    "finish",
    "init",
    "log",
    "restore",
    "run",
    "util",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "run":
        from ._run import current

        return current()
    raise AttributeError(f"module 'localrun' has no attribute {name!r}")
