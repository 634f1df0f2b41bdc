"""localrun: experiment tracking on a plain filesystem, with crash-safe resume.

The public API is what this module exports (``__all__``); every other module is private.
``localrun.run`` is the process's current run (None before ``init``), like ``wandb.run``.

The writer's names (``init``, ``Run``, ...) are imported on first use: they pull in pyarrow
(numpy and Arrow's compute kernels, most of a second to import on a loaded machine), which
``localrun ls`` and ``Api().runs()`` never need. Listing 10,000 runs costs less than that import.
"""

import importlib as _importlib
import typing as _typing

from . import util
from ._query import Api, DamagedRun, ResumeMarker, StoredRun
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

if _typing.TYPE_CHECKING:
    from ._restore import RestoredFile, restore
    from ._run import Run, Summary, init
    from ._run import finish_current as finish
    from ._run import log_current as log
    from ._store.verify import Report as VerifyReport

__version__ = "0.1.0"

# Public name -> (module, attribute), imported by __getattr__ at first use, then kept here.
_LAZY = {
    "init": ("._run", "init"),
    "Run": ("._run", "Run"),
    "Summary": ("._run", "Summary"),
    "finish": ("._run", "finish_current"),
    "log": ("._run", "log_current"),
    "restore": ("._restore", "restore"),
    "RestoredFile": ("._restore", "RestoredFile"),
    "VerifyReport": ("._store.verify", "Report"),
}

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
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(_importlib.import_module(module, __name__), attr)
        globals()[name] = value  # the next lookup is a plain module attribute
        return value
    raise AttributeError(f"module 'localrun' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the ones imported on first use included."""
    return sorted(set(globals()) | set(_LAZY) | {"run"})
