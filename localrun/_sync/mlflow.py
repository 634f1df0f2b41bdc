"""An MLflow tracking server as a remote: a projection of a run onto MLflow's model (DESIGN §8).

URL ``mlflow+http://host:port`` (or ``mlflow+https://``), spoken to over MLflow's REST API with
httpx: the ``mlflow`` package is never needed on the machine that syncs. docs/mlflow.md is the
user's view; this docstring is the why.

**Finding the run again.** MLflow makes up its own run ids, so a localrun run is found by the
tags ``localrun.id`` (``project/id``) and ``localrun.uid`` in the experiment named after the
project: one ``runs/search`` per push (the cursor's MLflow run id is for people), so a lost
cursor never makes a second MLflow run, and syncers that create it at once converge on one.
A run found by tag with another uid is a different experiment under the same name:
:class:`~localrun.errors.RemoteConflictError`, never merged.

**Never a point twice.** Points are pushed in one total order: rows by ``(attempt, step)``
(unique, and unchanged by compaction, which merges only within one attempt), then keys by name
within a row. Every ``log-batch`` carries, besides its metrics, the tag ``localrun.pushed`` =
``[attempt, step, key]`` of its last point, and the server applies both in one request. That tag,
read back at the start of each push, is the authority on how far the run was pushed: a syncer
SIGKILLed between a batch and its cursor write resumes after that batch, not before it. (The
copy in ``Cursor.extra`` is for ``localrun sync --status``.) Should the server itself die between
storing a batch's metrics and its tag, the batch is sent again, and MLflow's SQL store drops
exact repeats (key, step, timestamp and value are its primary key; ours are deterministic).

**Only rows visible at push time are pushed.** A rewind hides rows of earlier attempts; rows it
hides before they were pushed are never pushed. MLflow cannot delete points, so rows pushed
before a rewind stay: the run gets a ``localrun.rewind.<n>`` tag per rewind saying from which
step earlier attempts' points are stale, and the resumed attempt's points follow in the same
metric (its steps repeat those of the stale points).

**Params are immutable in MLflow** (and cut to 6,000 characters by the server). The config is
flattened (``a/b``) and each key is logged once; a value changed later (``allow_val_change`` on
resume) keeps its first value as the param and puts the current one in the tag
``localrun.config.<key>``: a push never fails on it, and the change is visible.

**Reading rows.** Segments are read directly from ``run.manifest`` (``segments.read_rows`` with
the rewind bound, as ``history()`` does), not through ``StoredRun.history()``: a push needs the
attempt of each visible row (``history()`` gives it only with the hidden rows), must read the
very revision the cursor will name, and skips whole segments already pushed from the manifest's
step ranges, so an incremental push of a long run reads only its new segments.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from .._query import shown_state
from .._store import revisions, segments
from .._store.manifest import visible_bound
from .._store.records import FileVersion, Revision, SegmentEntry
from .._store.safe_io import open_inside
from .._store.schema import NUMBER, STEP_FIELDS, arrow_schema
from ..errors import RemoteConflictError, RemoteUnavailableError, SyncError, UsageError
from .remote import Cursor, LocalRun, Progress

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
MAX_ENTITIES = 1000  # metrics + params + tags in one log-batch (the server refuses more)
MAX_PARAMS = 100  # params in one log-batch
MAX_TAGS = 100  # tags in one log-batch
MAX_PARAM_VALUE = 6000  # the server cuts longer values: cut them here so comparing works
MAX_TAG_VALUE = 8000
MAX_KEY = 250
CHUNK = 1 << 20  # bytes read at a time from a saved file while uploading it

ID_TAG = "localrun.id"
UID_TAG = "localrun.uid"
PUSHED_TAG = "localrun.pushed"
TAGS_TAG = "localrun.tags"  # which MLflow tags stand for localrun tags (to remove them later)
CONFIG_PREFIX = "localrun.config."
SUMMARY_PREFIX = "localrun.summary."
REWIND_PREFIX = "localrun.rewind."
FILE_PREFIX = "localrun.file."
RESERVED = ("mlflow.", "localrun.")

# localrun state -> MLflow run status. A crash (the process died: SIGKILL, OOM, a lost node)
# is FAILED, like an exception; a preemption (the scheduler stopped the job, SIGTERM) is KILLED,
# which is what MLflow records for a run stopped from outside. The exact state is also the tag
# ``localrun.state``.
STATUS = {
    "running": "RUNNING",
    "finished": "FINISHED",
    "failed": "FAILED",
    "crashed": "FAILED",
    "preempted": "KILLED",
}

Position = tuple[int, int, str]  # (attempt, step, key) of the last point pushed
START: Position = (0, -(2**63), "")


@dataclass(frozen=True)
class Point:
    attempt: int
    step: int
    key: str  # the localrun key
    value: float
    timestamp_ms: int


@functools.lru_cache(maxsize=4096)
def mlflow_key(name: str) -> str:
    """``name`` as an MLflow param, metric or tag name.

    MLflow takes letters, digits, ``_ - . : /`` and spaces, and refuses a name that would
    normalise to another as a path (``a//b``, ``./a``); every other character becomes ``_``.
    """
    clean = re.sub(r"[^\w\-. :/]", "_", name)
    parts = ["__" if p == ".." else p for p in clean.split("/") if p not in ("", ".")]
    return ("/".join(parts) or "_")[:MAX_KEY]


def param_value(value: Any) -> str:
    """A config value as MLflow's own client writes it (``str``), cut to the server's limit."""
    return str(value)[:MAX_PARAM_VALUE]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as ``a/b`` keys (how localrun names nested logged keys too)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def run_state(m: Revision) -> str:
    """The stored state, except that "running" with a writer provably dead on this host is
    "crashed" (what ``StoredRun.state`` shows, and what the next resume or repair records)."""
    return shown_state(str(m.get("state", "running")), m.get("owner"))


def _json_value(v: float) -> float | str:
    """MLflow's JSON takes non-finite doubles as the strings protobuf uses (a bare ``NaN``
    token is misread by the server)."""
    if math.isfinite(v):
        return v
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _parse_position(text: str | None) -> Position:
    if not text:
        return START
    try:
        attempt, step, key = json.loads(text)
        return int(attempt), int(step), str(key)
    except (ValueError, TypeError):
        raise SyncError(
            f"the MLflow run's tag {PUSHED_TAG} is {text!r}, which localrun did not write; "
            "delete that MLflow run (or the tag) to push the run again from its start"
        ) from None


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}


def _params(run: dict[str, Any]) -> dict[str, str]:
    return {p["key"]: p.get("value", "") for p in run.get("data", {}).get("params", [])}


class MlflowRemote:
    """Pushes runs to an MLflow tracking server (see the module docstring for the mapping)."""

    def __init__(self, url: str, token: str | None, timeout: float = 120.0) -> None:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("mlflow+http", "mlflow+https"):
            raise UsageError(
                f"{url!r} is not an MLflow URL: write mlflow+http://host:port or "
                "mlflow+https://host[:port][/path]"
            )
        parts = urllib.parse.urlsplit(f"{scheme.removeprefix('mlflow+')}://{rest}")
        if parts.username or parts.password:
            raise UsageError(
                f"{url!r} holds credentials: give the token in LOCALRUN_TOKEN (or a token "
                "file) instead, never on the command line"
            )
        if not parts.hostname:
            raise UsageError(f"{url!r} names no host: write mlflow+http://host:port")
        self.url = url
        self._base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        headers = {}
        if token:
            # MLflow's own auth app takes HTTP basic (user:password); proxies in front of a
            # server usually take a bearer token, which is also what MLFLOW_TRACKING_TOKEN sends.
            if ":" in token:
                user, _, password = token.partition(":")
                pair = base64.b64encode(f"{user}:{password}".encode()).decode()
                headers["Authorization"] = f"Basic {pair}"
            else:
                headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self._base,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
        )
        self.batch = MAX_ENTITIES - 1  # metrics per log-batch: one entity is the position tag

    # -- HTTP -------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        endpoint: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
        progress: Progress | None = None,
    ) -> dict[str, Any] | None:
        """One REST call; its JSON answer, or None for a missing resource when ``missing_ok``.

        Down, slow, overloaded or refusing the token: RemoteUnavailableError (retry later).
        Anything else the server refuses: SyncError with its message.
        """
        content = None
        if body is not None:
            content = json.dumps(body, allow_nan=False).encode()
        try:
            r = self._http.request(
                method,
                API + endpoint,
                content=content,
                params=params,
                headers={"Content-Type": "application/json"} if content else None,
            )
        except httpx.HTTPError as exc:
            raise RemoteUnavailableError(
                f"MLflow at {self.url} cannot be reached ({type(exc).__name__}: {exc}); the "
                "push will be retried"
            ) from exc
        if progress is not None and content is not None:
            progress.advance(len(content))
        return self._answer(r, endpoint, missing_ok)

    def _answer(self, r: httpx.Response, what: str, missing_ok: bool) -> dict[str, Any] | None:
        try:
            data = r.json() if r.content else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = None
        if r.is_success and data is not None:
            return data
        message = (data or {}).get("message") or r.text[:300]
        code = (data or {}).get("error_code", "")
        if missing_ok and r.status_code == 404 and code == "RESOURCE_DOES_NOT_EXIST":
            return None
        if r.status_code >= 500 or r.status_code in (401, 403, 408, 429):
            why = "refuses the token" if r.status_code in (401, 403) else "failed"
            raise RemoteUnavailableError(
                f"MLflow at {self.url} {why}: {what} answered HTTP {r.status_code}: {message}"
            )
        if data is None:
            raise SyncError(
                f"{self.url} does not answer like an MLflow tracking server ({what}: HTTP "
                f"{r.status_code}, {r.headers.get('content-type', 'no content type')})"
            )
        raise SyncError(f"MLflow at {self.url} refused {what}: {code} {message}")

    # -- the push ---------------------------------------------------------------------------

    def push(self, run: LocalRun, cursor: Cursor | None, progress: Progress) -> Cursor:
        if (
            cursor is not None
            and cursor.uid == run.uid
            and cursor.rev >= run.rev
            and isinstance(cursor.extra.get("mlflow_run_id"), str)
        ):
            return cursor  # nothing new since the last complete push
        remote = self._locate(run, cursor)
        info = remote["info"]
        run_id = str(info["run_id"])
        have = _tags(remote)
        self._push_meta(run, run_id, have, _params(remote), progress)
        m, position = self._push_metrics(
            run, run_id, _parse_position(have.get(PUSHED_TAG)), progress
        )
        self._push_files(run, m, run_id, str(info.get("artifact_uri", "")), have, progress)
        self._push_status(run.manifest, run_id, info)
        return Cursor(
            remote=self.url,
            project=run.project,
            run_id=run.run_id,
            uid=run.uid,
            rev=run.rev,
            extra={
                "mlflow_run_id": run_id,
                "mlflow_experiment_id": str(info["experiment_id"]),
                "pushed": json.dumps(list(position)),
            },
        )

    def close(self) -> None:
        self._http.close()

    # -- finding or creating the MLflow run -------------------------------------------------

    def _locate(self, run: LocalRun, cursor: Cursor | None) -> dict[str, Any]:
        """The MLflow run of ``run``, found by its ``localrun.id`` tag, else created.

        Found by a search at every push, not by the cursor's MLflow run id: syncers on several
        nodes that create the run at once then converge on one run (below), and a cursor lost
        or stale never leads to a second one.
        """
        label = f"{run.project}/{run.run_id}"
        experiment = None
        if cursor is not None and cursor.uid == run.uid:
            experiment = cursor.extra.get("mlflow_experiment_id")
        if not isinstance(experiment, str):
            experiment = self._experiment_id(run.project)
        found = self._search(experiment, label)
        if not found:
            mine = self._create(experiment, run, label)
            found = self._search(experiment, label) or [mine]
        return self._one(found, run, label)

    def _one(self, found: list[dict[str, Any]], run: LocalRun, label: str) -> dict[str, Any]:
        """One MLflow run out of those tagged ``label``.

        Several means syncers created it at once: every syncer keeps the one with the smallest
        MLflow run id and moves the others to MLflow's trash (recoverable there; their points,
        if any, were also sent to the kept one, by whichever syncer pushes it). A run of another
        uid among them is a conflict, and nothing is moved.
        """
        for candidate in found:
            self._check_uid(candidate, run, label)
        found = sorted(found, key=lambda r: str(r["info"]["run_id"]))
        for extra in found[1:]:
            self._call("POST", "/runs/delete", {"run_id": extra["info"]["run_id"]}, missing_ok=True)
        return found[0]

    def _check_uid(self, found: dict[str, Any], run: LocalRun, label: str) -> dict[str, Any]:
        uid = _tags(found).get(UID_TAG)
        if uid != run.uid:
            raise RemoteConflictError(
                f"MLflow at {self.url} already holds a different run {label} (MLflow run "
                f"{found['info']['run_id']}, localrun uid {uid}; this run's uid is {run.uid}): "
                "refusing to merge two experiments. Delete or rename that MLflow run, or sync "
                "this run under another project"
            )
        return found

    def _experiment_id(self, project: str) -> str:
        """The id of the experiment named ``project``, created when missing."""
        for _ in range(3):
            got = self._call(
                "GET",
                "/experiments/get-by-name",
                params={"experiment_name": project},
                missing_ok=True,
            )
            if got is not None:
                exp = got["experiment"]
                if exp.get("lifecycle_stage") != "active":
                    raise SyncError(
                        f"MLflow at {self.url}: experiment {project!r} is deleted; restore it "
                        "(`mlflow experiments restore`) or delete it for good, then sync again"
                    )
                return str(exp["experiment_id"])
            try:
                made = self._call("POST", "/experiments/create", {"name": project})
            except SyncError as exc:
                if "RESOURCE_ALREADY_EXISTS" in str(exc) and not isinstance(
                    exc, RemoteUnavailableError
                ):
                    continue  # another syncer created it: read it
                raise
            assert made is not None
            return str(made["experiment_id"])
        raise SyncError(f"MLflow at {self.url}: experiment {project!r} cannot be created or read")

    def _search(self, experiment: str, label: str) -> list[dict[str, Any]]:
        body = {
            "experiment_ids": [experiment],
            "filter": f"tags.\"{ID_TAG}\" = '{label}'",
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 100,
        }
        got = self._call("POST", "/runs/search", body)
        return list((got or {}).get("runs", []))

    def _create(self, experiment: str, run: LocalRun, label: str) -> dict[str, Any]:
        m = run.manifest
        body = {
            "experiment_id": experiment,
            "start_time": int(float(m.get("created", 0.0)) * 1000),
            "run_name": str(m.get("name") or run.run_id),
            "tags": [{"key": ID_TAG, "value": label}, {"key": UID_TAG, "value": run.uid}],
        }
        got = self._call("POST", "/runs/create", body)
        assert got is not None
        run_json: dict[str, Any] = got["run"]
        return run_json

    # -- config, tags, notes, summary -------------------------------------------------------

    def _push_meta(
        self,
        run: LocalRun,
        run_id: str,
        have_tags: dict[str, str],
        have_params: dict[str, str],
        progress: Progress,
    ) -> None:
        m = run.manifest
        params: dict[str, str] = {}
        want: dict[str, str] = {}
        for name, value in flatten(dict(m.get("config") or {})).items():
            key, text = mlflow_key(name), param_value(value)
            if key in params:
                continue  # two names that MLflow spells alike: the first one wins
            if key not in have_params:
                params[key] = text
            elif have_params[key] != text:
                want[(CONFIG_PREFIX + key)[:MAX_KEY]] = str(value)[:MAX_TAG_VALUE]
        want.update(self._wanted_tags(run))
        old_user = self._old_user_tags(have_tags)
        stale = [
            k
            for k in have_tags
            if k not in want
            and (k in old_user or k.startswith((CONFIG_PREFIX, SUMMARY_PREFIX, REWIND_PREFIX)))
        ]
        tags = [(k, v) for k, v in want.items() if have_tags.get(k) != v]
        plist = list(params.items())
        while plist or tags:
            self._call(
                "POST",
                "/runs/log-batch",
                {
                    "run_id": run_id,
                    "params": [{"key": k, "value": v} for k, v in plist[:MAX_PARAMS]],
                    "tags": [{"key": k, "value": v} for k, v in tags[:MAX_TAGS]],
                },
                progress=progress,
            )
            plist, tags = plist[MAX_PARAMS:], tags[MAX_TAGS:]
        for key in stale:
            self._call("POST", "/runs/delete-tag", {"run_id": run_id, "key": key}, missing_ok=True)

    def _old_user_tags(self, have: dict[str, str]) -> list[str]:
        try:
            keys = json.loads(have.get(TAGS_TAG) or "[]")
        except ValueError:
            return []
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []

    def _wanted_tags(self, run: LocalRun) -> dict[str, str]:
        """Every tag the MLflow run should hold now, but the push position and file tags."""
        m = run.manifest
        want: dict[str, str] = {
            ID_TAG: f"{run.project}/{run.run_id}",
            UID_TAG: run.uid,
            "mlflow.runName": str(m.get("name") or run.run_id),
            "localrun.state": run_state(m),
            "localrun.attempts": str(len(m.get("attempts") or [])),
        }
        if m.get("notes"):
            want["mlflow.note.content"] = str(m["notes"])[:MAX_TAG_VALUE]
        for field in ("group", "job_type"):
            if m.get(field):
                want[f"localrun.{field}"] = str(m.get(field))[:MAX_TAG_VALUE]
        user: list[str] = []
        for tag in m.get("tags") or []:
            key = mlflow_key(str(tag))
            if key.startswith(RESERVED) or key in want:
                key = mlflow_key(f"tag.{tag}")
            want[key] = "true"
            user.append(key)
        want[TAGS_TAG] = json.dumps(user)[:MAX_TAG_VALUE]
        summary = m.get("summary") or {}
        for name in m.get("summary_explicit") or []:
            if name in summary:
                key = (SUMMARY_PREFIX + mlflow_key(name))[:MAX_KEY]
                want[key] = json.dumps(summary[name])[:MAX_TAG_VALUE]
        for n, rw in enumerate(m.get("rewinds") or [], start=1):
            want[f"{REWIND_PREFIX}{n}"] = (
                f"attempt {rw['attempt']} resumed from step {rw['step']}: points of earlier "
                f"attempts above step {rw['step']} pushed before it are not in localrun's history"
            )
        return want

    # -- metrics ----------------------------------------------------------------------------

    def _push_metrics(
        self, run: LocalRun, run_id: str, position: Position, progress: Progress
    ) -> tuple[Revision, Position]:
        """Push every visible point after ``position``; the manifest read and the new position.

        A segment removed under us (the writer compacted it after this revision) means reading
        the newest revision instead: compaction keeps every row's attempt and step, so the
        position still says exactly what was pushed.
        """
        m = run.manifest
        for _ in range(10):
            try:
                return m, self._send_points(run.dir, m, run_id, position, progress)
            except _SegmentGone as gone:
                position = gone.position
                m = revisions.newest(run.dir).manifest
        raise SyncError(f"run {run.project}/{run.run_id}: its segments keep changing; try again")

    def _send_points(
        self, run_dir: Path, m: Revision, run_id: str, position: Position, progress: Progress
    ) -> Position:
        batch: list[Point] = []
        try:
            for point in points(run_dir, m, position):
                batch.append(point)
                if len(batch) >= self.batch:
                    position = self._send_batch(run_id, batch, progress)
                    batch = []
        except FileNotFoundError:
            raise _SegmentGone(position) from None
        if batch:
            position = self._send_batch(run_id, batch, progress)
        return position

    def _send_batch(self, run_id: str, batch: list[Point], progress: Progress) -> Position:
        last = batch[-1]
        position = (last.attempt, last.step, last.key)
        self._call(
            "POST",
            "/runs/log-batch",
            {
                "run_id": run_id,
                "metrics": [
                    {
                        "key": mlflow_key(p.key),
                        "value": _json_value(p.value),
                        "timestamp": p.timestamp_ms,
                        "step": p.step,
                    }
                    for p in batch
                ],
                "tags": [{"key": PUSHED_TAG, "value": json.dumps(list(position))}],
            },
            progress=progress,
        )
        return position

    # -- files ------------------------------------------------------------------------------

    def _push_files(
        self,
        run: LocalRun,
        m: Revision,
        run_id: str,
        artifact_uri: str,
        have: dict[str, str],
        progress: Progress,
    ) -> None:
        """Upload the latest version of each saved file as the artifact of the same name.

        The tag ``localrun.file.<name>`` = ``<version> <sha256>`` is set after the upload: the
        file is sent again only when its latest version changed (or an upload was cut off).
        """
        pending = []
        for name, versions in sorted((m.get("files") or {}).items()):
            if not versions:
                continue
            latest = versions[-1]
            tag = (FILE_PREFIX + mlflow_key(name))[:MAX_KEY]
            mark = f"{latest['version']} {latest.get('sha256', '')}"
            if have.get(tag) != mark:
                pending.append((name, latest, tag, mark))
        if not pending:
            return
        base = self._artifact_base(artifact_uri)
        for name, latest, tag, mark in pending:
            self._upload(run.dir, base, name, latest, progress)
            self._call("POST", "/runs/set-tag", {"run_id": run_id, "key": tag, "value": mark})

    def _artifact_base(self, artifact_uri: str) -> str:
        scheme = "mlflow-artifacts:"
        if not artifact_uri.startswith(scheme):
            raise SyncError(
                f"MLflow at {self.url} stores this run's artifacts at {artifact_uri!r}, which "
                "localrun can only reach through the server's artifact proxy: start the server "
                "with --serve-artifacts (the default) and use an experiment whose artifact "
                "location is mlflow-artifacts:/..."
            )
        rest = artifact_uri[len(scheme) :]
        if rest.startswith("//"):  # mlflow-artifacts://host:port/path
            rest = "/" + rest[2:].partition("/")[2]
        return ARTIFACTS + "/" + rest.strip("/")

    def _upload(
        self, run_dir: Path, base: str, name: str, latest: FileVersion, progress: Progress
    ) -> None:
        f = open_inside(run_dir, latest["path"], "saved file version")
        with f:
            size = f.seek(0, 2)
            f.seek(0)

            def chunks() -> Iterator[bytes]:
                while block := f.read(CHUNK):
                    progress.advance(len(block))
                    yield block

            url = base + "/" + urllib.parse.quote(name)
            try:
                r = self._http.put(
                    url,
                    content=chunks(),
                    headers={
                        "Content-Length": str(size),
                        "Content-Type": "application/octet-stream",
                    },
                )
            except httpx.HTTPError as exc:
                raise RemoteUnavailableError(
                    f"MLflow at {self.url} cannot be reached while uploading {name} "
                    f"({type(exc).__name__}: {exc}); the push will be retried"
                ) from exc
        self._answer(r, f"the upload of {name}", False)

    # -- state ------------------------------------------------------------------------------

    def _push_status(self, m: Revision, run_id: str, info: dict[str, Any]) -> None:
        """Status and end time last: a run shows FINISHED only once everything is there."""
        state = run_state(m)
        body: dict[str, Any] = {
            "run_id": run_id,
            "status": STATUS.get(state, "RUNNING"),
            "run_name": str(m.get("name") or m.get("id", "")),
        }
        if state != "running":
            ended = [a.get("ended") for a in m.get("attempts") or []]
            times = [float(t) for t in ended if t is not None]
            body["end_time"] = int((max(times) if times else float(m.get("updated", 0))) * 1000)
        self._call("POST", "/runs/update", body)


class _SegmentGone(Exception):
    def __init__(self, position: Position) -> None:
        super().__init__(position)
        self.position = position


def points(run_dir: Path, m: Revision, after: Position) -> Iterator[Point]:
    """Every visible numeric point of revision ``m`` after ``after``, in push order.

    Strings, lists and media are not MLflow metrics and are left out; so are the missing
    values of a key in rows that did not log it. ``FileNotFoundError`` when a listed segment
    is gone (compacted after this revision).
    """
    kinds = {k: v for k, v in (m.get("schema") or {}).items() if v == NUMBER}
    schema = arrow_schema(kinds)
    keys = sorted(kinds)
    step_names = {f.name for f in STEP_FIELDS}
    assert not step_names & set(keys)
    for seg in sorted(m.get("segments") or [], key=lambda s: (s["attempt"], s["seq"])):
        attempt = int(seg["attempt"])
        bound = visible_bound(m, attempt, seg["seq"])
        if bound is not None and seg["min_step"] > bound:
            continue  # every row of it is hidden by a rewind
        if (attempt, int(seg["max_step"])) < after[:2]:
            continue  # pushed already
        yield from _segment_points(run_dir, seg, bound, schema, keys, after)


def _segment_points(
    run_dir: Path,
    seg: SegmentEntry,
    bound: int | None,
    schema: pa.Schema,
    keys: list[str],
    after: Position,
) -> Iterator[Point]:
    attempt = int(seg["attempt"])
    with open_inside(run_dir, seg["file"], "segment") as f:
        try:
            table = segments.read_rows(f, seg, bound, schema)
        except segments.DAMAGE_ERRORS as exc:
            raise segments.damaged(run_dir, seg["file"], exc) from exc
    steps = table.column("_step").to_pylist()
    stamps = table.column("_timestamp").to_pylist()
    columns = [table.column(k).to_pylist() for k in keys]
    for i, step in enumerate(steps):
        row = (attempt, step)
        if row < after[:2]:
            continue
        ms = round((stamps[i] or 0.0) * 1000)
        for key, column in zip(keys, columns, strict=True):
            value = column[i]
            if value is None or (row == after[:2] and key <= after[2]):
                continue
            yield Point(attempt, step, key, float(value), ms)
