"""The heartbeat thread: the owner's proof of life, on a thread of its own.

Every TTL/3 it commits a revision that moves the lease's ``hb_seq``, which is all a watcher on
another host looks at (never a wall clock). Never behind a data flush: a slow one (a first
pyarrow import, a large segment on a loaded NFS server) must not make a live owner look dead.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .._store import manifest as mf
from .._store.lease import beat
from ..errors import RunSupersededError

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger("localrun")


def beat_owner(m: mf.Manifest) -> None:
    """The change a heartbeat commits (data flushes carry it too)."""
    owner = m["owner"]
    if owner is not None:  # None: the run is not ours; the fence has refused the commit already
        beat(owner)


def loop(run: Run) -> None:
    """Bump the lease every TTL/3, on its own thread.

    Never behind a data flush: a slow one (a first pyarrow import, a large segment on a
    loaded NFS server) must not make a live owner look dead to a watcher on another host.
    """
    while not run._stop.wait(run._settings.lease_ttl / 3):
        if os.getpid() != run._pid:
            return

        try:
            run._update(beat_owner, copy=False)
        except RunSupersededError:
            return
        except Exception as exc:  # keep beating: the next one may get through
            log.warning("localrun: heartbeat of %s failed, will retry: %s", run.path, exc)
