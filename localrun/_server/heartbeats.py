"""What a dashboard that stays up learns by watching heartbeats: which "running" runs are dead.

A reader that looks once (``localrun ls``, ``Api.runs``) can call a running run crashed only
when its owner is provably gone on this host (``_query.shown_state``): a run whose node was
killed shows as running until someone resumes or repairs it. That is the usual way runs die on
a cluster, and a dashboard on the login node would show them running forever. But a dashboard
lives for hours, so it can apply the rule a takeover applies (DESIGN §5, ``lease.judge``): an
owner whose ``(token, hb_seq)`` stood still for a full TTL on this process's own monotonic
clock is gone. Wall clocks of two hosts are never compared.

Derived, never written: the stored state stays "running" until the next resume or
``verify --repair`` records the attempt as crashed, and a stopped writer that wakes (SIGCONT)
and beats again shows as running again. Only for ``localrun ui``, which reads the root the
writers commit to: a pushed copy (``localrun server``) receives heartbeats at the syncer's
pace, so its stillness proves nothing about the writer.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from .._query import shown_state
from .._store.lease import Watch, heartbeat_key, is_valid, judge
from .._store.records import Owner

MAX_WATCHED = 65_536  # owners watched at most (the least recently asked about go first)


class Heartbeats:
    """The heartbeats this process has seen, per owner token, on its monotonic clock."""

    def __init__(self, default_ttl: float) -> None:
        self._default_ttl = default_ttl
        self._watches: OrderedDict[str, Watch] = OrderedDict()
        self._lock = threading.Lock()  # the API's handlers run in worker threads

    def state(self, stored: str, owner: Owner | None) -> str:
        """The state to show for a run whose newest revision says ``stored`` and ``owner``.

        Called with every read of a run (each page poll): the watch of an owner starts at
        the first call and restarts whenever its heartbeat moved, so "crashed" needs one
        TTL of polls that saw the same heartbeat. ``judge`` also finds an owner that is
        provably dead on this host (what ``shown_state`` looks at): one judgement, not two."""
        if stored != "running" or owner is None or not is_valid(owner):
            return stored  # as shown_state: only a valid owner of a running run is judged
        token = str(owner["token"])
        with self._lock:
            watch = self._watches.pop(token, None) or Watch()
            self._watches[token] = watch  # the most recently asked about, last
            if len(self._watches) > MAX_WATCHED:
                self._watches.popitem(last=False)
            verdict = judge(owner, watch, default_ttl=self._default_ttl)
            if verdict.action == "live" and watch.key != heartbeat_key(owner):
                watch.key, watch.since = heartbeat_key(owner), time.monotonic()
        return "crashed" if verdict.action == "take" else "running"


def shown(heartbeats: Heartbeats | None, stored: str, owner: Owner | None) -> str:
    """The state to show: by the heartbeats watched when there are (``localrun ui``), else as
    a reader that looks once shows it."""
    return shown_state(stored, owner) if heartbeats is None else heartbeats.state(stored, owner)
