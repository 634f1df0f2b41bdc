"""The push engine for replica remotes: a localrun root kept in an :class:`ObjectStore`.

One push of a run (DESIGN §8):

1. refuse a remote whose newest revision of this project/id has another uid (two different
   experiments are never merged);
2. put every immutable object the local revision names that the remote lacks (one listing of
   the run where the store can list a tree, else a look per object; then a put of the missing
   ones, each verified against its size, and its sha256 where the run records one);
3. put ``log/<rev>.json`` with exactly the local bytes: from this instant remote readers use
   this revision, and every object it names is already there;
4. put the remote's ``manifest.json`` copy of it (a push cut between 3 and 4 is completed by
   the next one, which finds the copy differing from the revision and no newer one there);
5. put the root marker ``localrun.json`` once, if the remote has none.

A kill at any instant leaves the remote readable at its previous newest revision plus some
objects no revision names yet; the next push finds them there and goes on. Nothing is ever
deleted, remote or local; nothing local is ever written (the cursor lives under ``.sync/``,
apart from the runs).
"""

from __future__ import annotations

import hashlib
import json
import time

from .._store.layout import FORMAT_VERSION, LOG, MANIFEST, ROOT_MARKER, parse_revision_name
from ..errors import CorruptRunError, RemoteConflictError, SyncError
from . import local
from .remote import Cursor, LocalRun, Obj, ObjectStore, Progress

_TRIES = 50
# More objects than this to look at in a push with a cursor: one listing of the run instead.
_LOOKS = 8


class Replica:
    """A :class:`~localrun._sync.remote.Remote` that keeps a localrun root in ``store``."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.url = store.url
        self._present: set[str] = set()  # keys seen on the remote by this process
        self._marker_checked = False
        self.puts = 0  # objects written by this process (what tells "pushed" from "there")

    def push(self, run: LocalRun, cursor: Cursor | None, progress: Progress) -> Cursor:
        for _ in range(_TRIES):
            try:
                return self._push(run, cursor, progress)
            except local.Gone:
                # The writer removed a file this revision names (a compaction, a pruned saved
                # version or revision): a newer revision exists, push that one instead.
                run = local.read_run(run.dir)
        raise SyncError(
            f"{run.project}/{run.run_id}: its files kept being replaced while it was pushed "
            f"({_TRIES} tries); sync it again later"
        )

    def _push(self, run: LocalRun, cursor: Cursor | None, progress: Progress) -> Cursor:
        trusted = cursor is not None and cursor.uid == run.uid
        if cursor is not None and trusted and cursor.rev >= run.rev:
            return cursor
        content = content_digest(run)
        if cursor is not None and trusted and cursor.extra.get("content") == content:
            # Only the lease's heartbeat moved: the remote's revision says all the same, and a
            # run idle for days would otherwise add a remote revision every few seconds.
            return Cursor(self.url, run.project, run.run_id, run.uid, run.rev, cursor.extra)
        prefix = f"{run.project}/{run.run_id}"
        self._put_marker()
        # A cursor of this uid means this root pushed the run there before: the identity was
        # checked then, and the remote holds at least that revision (a cursor is written only
        # after a whole push). Without one, the remote is asked.
        remote_rev = cursor.rev if cursor is not None and trusted else None
        listed: dict[str, int] | None = None  # the remote's objects of this run, if listed
        if not trusted:
            listed = self.store.sizes(prefix)
            remote_rev = self._check_identity(prefix, run, listed)
        if remote_rev is None or remote_rev < run.rev:
            objs = local.objects(run)
            unknown = sum(f"{prefix}/{o.rel}" not in self._present for o in objs)
            if listed is None and unknown > _LOOKS:
                listed = self.store.sizes(prefix)
            for obj in objs:
                self._put_object(prefix, run, obj, progress, listed)
            # Known absent (the remote's newest is older): put without looking. A syncer that
            # put it in between put the same bytes (a folder store keeps the first).
            if run.rev:
                self._put(f"{prefix}/{LOG}/{_rev_name(run.rev)}", run.revision_bytes)
            self._put(f"{prefix}/{MANIFEST}", run.revision_bytes)
        elif remote_rev == run.rev:
            self._put_manifest(prefix, run)  # a push cut between the revision and the copy
        return Cursor(self.url, run.project, run.run_id, run.uid, run.rev, {"content": content})

    def _check_identity(
        self, prefix: str, run: LocalRun, listed: dict[str, int] | None
    ) -> int | None:
        """The remote's newest revision number of this run (None: it has none yet), after
        refusing a remote that holds another run (another uid) under this project/id."""
        rev, data = self._remote_head(prefix, listed)
        if data is None:
            return rev
        try:
            uid = json.loads(data).get("uid", "")
        except (ValueError, AttributeError) as exc:
            raise SyncError(
                f"{self.url}/{prefix}: its newest revision is not readable JSON ({exc}); "
                "nothing was pushed. Fix or move that folder on the remote"
            ) from exc
        if uid != run.uid:
            raise RemoteConflictError(
                f"{self.url} already holds a different run under {prefix} (uid {uid or '?'}, "
                f"this one is {run.uid}); runs are never merged, and nothing was pushed. Sync "
                "to another remote or project, or remove that run from the remote"
            )
        return rev

    def _remote_head(
        self, prefix: str, listed: dict[str, int] | None
    ) -> tuple[int | None, bytes | None]:
        """The remote's newest revision of the run and its bytes, from ``listed`` (the run's
        objects, when the store could list them) or a listing of its ``log/``."""
        if listed is None:
            names = self.store.list(f"{prefix}/{LOG}")
        else:
            names = [k[len(LOG) + 1 :] for k in listed if k.startswith(f"{LOG}/")]
        revs = sorted((r for n in names if (r := parse_revision_name(n))), reverse=True)
        for rev in revs:
            data = self.store.get_bytes(f"{prefix}/{LOG}/{_rev_name(rev)}")
            if data is not None:
                return rev, data
        if listed is not None and MANIFEST not in listed:
            return None, None
        data = self.store.get_bytes(f"{prefix}/{MANIFEST}")  # a run of format 1
        if data is None:
            return None, None
        return 0, data

    def _put_object(
        self,
        prefix: str,
        run: LocalRun,
        obj: Obj,
        progress: Progress,
        listed: dict[str, int] | None,
    ) -> None:
        key = f"{prefix}/{obj.rel}"
        if key in self._present:
            return
        size = self.store.stat(key) if listed is None else listed.get(obj.rel)
        if size is None:
            src = local.local_path(run, obj)
            try:
                self.store.put_file(key, src, obj.size, obj.sha256, progress)
                self.puts += 1
            except FileNotFoundError:
                raise local.Gone(obj.rel) from None
        elif size != obj.size:
            raise CorruptRunError(
                f"{self.url}/{key} has {size} bytes, but the local file has {obj.size}; an "
                "object of a run never changes, so one of the two was changed by another tool. "
                "Run `localrun verify` on the local run and check the remote's copy"
            )
        self._present.add(key)

    def _put(self, key: str, data: bytes) -> None:
        self.store.put_bytes(key, data)
        self.puts += 1

    def _put_manifest(self, prefix: str, run: LocalRun) -> None:
        key = f"{prefix}/{MANIFEST}"
        if self.store.get_bytes(key) == run.revision_bytes:
            return
        revs = [r for n in self.store.list(f"{prefix}/{LOG}") if (r := parse_revision_name(n))]
        if revs and max(revs) > run.rev:
            return  # another syncer pushed a newer revision: its copy is the one to keep
        self.store.put_bytes(key, run.revision_bytes)
        self.puts += 1

    def _put_marker(self) -> None:
        if self._marker_checked:
            return
        if self.store.stat(ROOT_MARKER) is None:
            marker = {"format": FORMAT_VERSION, "created": time.time()}
            self.store.put_bytes(ROOT_MARKER, json.dumps(marker, indent=1).encode())
        self._marker_checked = True

    def close(self) -> None:
        self.store.close()


_HEARTBEAT = ("hb_seq", "hb_time")


def content_digest(run: LocalRun) -> str:
    """A digest of the run's state without what a heartbeat changes (the revision number, the
    time of the commit, the lease's ``hb_seq``/``hb_time``)."""
    m: dict[str, object] = {k: v for k, v in run.manifest.items() if k not in ("rev", "updated")}
    owner = run.manifest.get("owner")
    if isinstance(owner, dict):
        m["owner"] = {k: v for k, v in owner.items() if k not in _HEARTBEAT}
    text = json.dumps(m, sort_keys=True, allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _rev_name(rev: int) -> str:
    return f"{rev:012d}.json"
