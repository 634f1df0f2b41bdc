"""The dashboard's JSON API (read-only, under ``/api/v1``); see docs/ui.md.

=============================================== ==============================================
``GET /api/v1/runs``                            the runs page: filter, sort, page (runs_index)
``GET /api/v1/runs/{project}/{id}``             one run: fields, attempts, keys, files
``GET /api/v1/runs/{project}/{id}/series``      metrics downsampled to the chart's width
``GET /api/v1/group-series``                    many runs' mean and band on one grid
``GET /api/v1/runs/{project}/{id}/console``     captured output (text), its last bytes
``GET /api/v1/runs/{project}/{id}/media``       a media key's steps, or its items at a step
``GET /api/v1/runs/{project}/{id}/blob/{path}`` a media blob's bytes (immutable)
``GET /api/v1/runs/{project}/{id}/files/{name}`` a saved file's bytes (``?version=``)
=============================================== ==============================================

Routes are thin: each parses its parameters, then runs one blocking read in a worker thread
(``run_in_threadpool``; the readers do file I/O and Arrow work). Everything is read through
``localrun.Api`` and ``StoredRun``. A project or run id is checked against the store's name
rule before any path is made of it, and every file is opened through the store's
``open_inside`` (no ``..``, no absolute path, no symbolic link), so no URL reads outside the
root. Every answer carries an ETag (the run's revision where that decides the answer, else a
hash of the body) and a matching ``If-None-Match`` gets 304: a page polling a finished run
costs a few bytes. Errors are ``{"error": "..."}`` naming the problem and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from .. import Api, _query_series
from .._query import LIST_MEDIA, MEDIA, damage_of
from .._settings import lease_ttl
from .._store.layout import check_file_name, sanitize_id
from .._store.safe_io import open_inside
from ..errors import (
    CorruptRunError,
    FormatVersionError,
    InvalidIdError,
    LocalrunError,
    RunNotFoundError,
    UsageError,
)
from . import runs_index
from .answers import Answers
from .heartbeats import Heartbeats, shown
from .objects import chunks
from .runs_index import Condition, Query, RunsIndex, json_float
from .tables import Tables

if TYPE_CHECKING:
    from .._query import StoredRun

API = "/api/v1"
RUN = f"{API}/runs/{{project}}/{{id}}"
CONSOLE_TAIL = 1 << 20
TABLE_ROWS = 1000
MAX_WIDTH = 4000
BLOB = re.compile(r"^media/([0-9a-f]{2})/([0-9a-f]{64})\.(png|json|parquet)$")
BLOB_TYPES = {"png": "image/png", "json": "application/json", "parquet": "application/octet-stream"}
IMMUTABLE = "max-age=31536000, immutable"


class Refused(Exception):
    """An answer other than 200: its status and the message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def routes(root: Path, watch: bool = True) -> list[BaseRoute]:
    """The API's routes on ``root``. With ``watch`` (``localrun ui``: the writers commit to this
    root), a running run whose heartbeat stands still for a TTL shows as crashed
    (``heartbeats.py``)."""
    api = Api(root)
    beats = Heartbeats(lease_ttl()) if watch else None
    index = RunsIndex(api, beats)
    answers = Answers()
    tables = Tables()
    # Fill the runs list's cache now, not at the first page load (10,000 runs: seconds).
    threading.Thread(
        target=_prefill, args=(index,), name="localrun-ui-prefill", daemon=True
    ).start()
    handlers: list[tuple[str, Callable[[Request], Response]]] = [
        (f"{API}/runs", lambda r: runs_page(index, r)),
        (RUN, lambda r: run_detail(api, beats, r)),
        (f"{RUN}/series", lambda r: series(api, answers, tables, r)),
        (f"{API}/group-series", lambda r: group_series(api, tables, r)),
        (f"{RUN}/console", lambda r: console(api, r)),
        (f"{RUN}/media", lambda r: media(api, r)),
        (f"{RUN}/blob/{{path:path}}", lambda r: blob(api, r)),
        (f"{RUN}/files/{{name:path}}", lambda r: saved_file(api, r)),
    ]
    found: list[BaseRoute] = [Route(p, _threaded(fn), methods=["GET"]) for p, fn in handlers]
    found.append(Route(f"{API}/{{rest:path}}", _no_route, methods=["GET", "HEAD"]))
    return found


def _prefill(index: RunsIndex) -> None:
    """Make the first visit fast: every run read once (the landing page is the runs list; a
    request meanwhile waits for it, the index's lock, then reuses it). A failure here is only a
    slower first page (the request reports it). (The series code's one-time costs are paid by
    the app's start: ``app.create_app``'s lifespan.)"""
    with contextlib.suppress(LocalrunError, OSError):
        index.records()


async def _no_route(request: Request) -> Response:
    """Any other address under the API: a JSON 404 like every other refusal (a URL that
    climbs with ``..`` or holds ``%2f`` in a name lands here when it matches no route)."""
    return error(
        404,
        f"no API route {request.url.path!r}; the dashboard's routes are /api/v1/runs, "
        "/api/v1/runs/PROJECT/ID[/series|/console|/media|/blob/...|/files/...], "
        "/api/v1/group-series",
    )


def _threaded(fn: Callable[[Request], Response]) -> Callable[[Request], Any]:
    """The handler run in a worker thread, its refusals and the store's errors as JSON."""

    async def handle(request: Request) -> Response:
        return await run_in_threadpool(_guarded, fn, request)

    return handle


def _guarded(fn: Callable[[Request], Response], request: Request) -> Response:
    try:
        return fn(request)
    except Refused as exc:
        return error(exc.status, exc.message)
    except (UsageError, InvalidIdError) as exc:
        return error(400, str(exc))
    except RunNotFoundError as exc:
        return error(404, str(exc))
    except (CorruptRunError, FormatVersionError) as exc:
        return error(422, str(exc))


# -- answers ----------------------------------------------------------------------------------


def error(status: int, message: str) -> Response:
    return Response(
        _dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers={"ETag": _hash_tag(message.encode())},
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(json_safe(value), separators=(",", ":"), allow_nan=False).encode()


def json_safe(value: Any) -> Any:
    """``value`` with floats JSON cannot carry as strings (``"NaN"``, ``"Infinity"``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else json_float(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _hash_tag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:24]}"'


def _fresh(request: Request, etag: str) -> bool:
    """Whether the client already holds the answer tagged ``etag``."""
    given = request.headers.get("if-none-match")
    if given is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in given.split(",")}
    return etag in tags or "*" in tags


def not_modified(etag: str) -> Response:
    return Response(status_code=304, headers={"ETag": etag})


def json_answer(
    request: Request, value: Any, etag: str | None = None, finite: bool = False
) -> Response:
    """``value`` as JSON, tagged ``etag`` (a hash of the body if None); 304 when fresh.

    ``finite``: every float in ``value`` is known to be finite (series: downsampling dropped
    the rest), so the walk that spells NaN and infinities as strings is skipped; it cost more
    than the downsampling itself on a comparison of 20 runs (one Python call per point).
    """
    body = (
        json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        if finite
        else _dumps(value)
    )
    tag = etag or _hash_tag(body)
    if _fresh(request, tag):
        return not_modified(tag)
    return Response(body, media_type="application/json", headers={"ETag": tag})


def _query_tag(rev: object, request: Request) -> str:
    """A tag of the run's revision and the query: the same question about the same revision
    has the same answer, so a 304 is decided before anything is read."""
    query = hashlib.sha256(str(request.url.query).encode()).hexdigest()[:12]
    return f'"{rev}-{query}"'


# -- parameters ------------------------------------------------------------------------------


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Refused(400, f"{name}={text!r}: give a whole number from {low} to {high}")
    return value


def _float(request: Request, name: str) -> float | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise Refused(400, f"{name}={text!r}: give a finite number (or leave it out)")
    return value


def _choice(request: Request, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = request.query_params.get(name, default)
    if value not in allowed:
        raise Refused(400, f"{name}={value!r}: use one of {', '.join(allowed)}")
    return value


def _name(value: str, what: str) -> str:
    """``value`` if it is a valid project or run id as stored, else 400: the check that stands
    between a URL and a path (``..``, ``/``, NUL, dots and anything outside ``[A-Za-z0-9_-]``)."""
    try:
        clean = sanitize_id(value, what)
    except InvalidIdError as exc:
        raise Refused(400, str(exc)) from None
    if clean != value:
        raise Refused(
            400,
            f"{what} {value!r} has characters outside [A-Za-z0-9_-]; localrun stores none "
            "such, so no run has it: check the address",
        )
    return value


def _run_path(project: str, run_id: str) -> str:
    return f"{_name(project, 'project name')}/{_name(run_id, 'run id')}"


def open_run(api: Api, request: Request) -> StoredRun:
    """The run of the URL (404 if there is none; a damaged one is :class:`Damaged`)."""
    return _load(api, _run_path(request.path_params["project"], request.path_params["id"]))


class Damaged(Exception):
    """A run folder whose state cannot be read: its problem, for an answer that shows it."""

    def __init__(self, project: str, run_id: str, problem: str) -> None:
        super().__init__(problem)
        self.project, self.id, self.problem = project, run_id, problem


def _load(api: Api, path: str) -> StoredRun:
    project, _, run_id = path.partition("/")
    folder = api.root / project / run_id
    if (api.root / project).is_symlink() or folder.is_symlink() or not folder.is_dir():
        raise Refused(404, f"no run {path} in this root; the runs page lists the runs there")
    try:
        return api.run(path)
    except (RunNotFoundError, CorruptRunError, FormatVersionError) as exc:
        problem = damage_of(folder, exc)  # None: nothing of a run in the folder
        if problem is None:
            message = f"no run {path} in this root; the runs page lists the runs there"
            raise Refused(404, message) from None
        raise Damaged(project, run_id, problem) from None


# -- 1. the runs page ------------------------------------------------------------------------


def parse_query(request: Request) -> Query:
    params = request.query_params
    states = tuple(params.getlist("state"))
    for s in states:
        if s not in runs_index.STATES:
            raise Refused(400, f"state={s!r}: use one of {', '.join(runs_index.STATES)}")
    sort = params.get("sort", "created")
    runs_index.sort_getter(sort)  # refuses an unknown sort (UsageError: 400) before any read
    project = params.get("project") or None
    if project is not None:
        _name(project, "project name")
    return Query(
        project=project,
        q=params.get("q", "").strip(),
        states=states,
        tags=tuple(params.getlist("tag")),
        group=params.get("group") or None,
        host=params.get("host") or None,
        where=tuple(Condition.parse(w) for w in params.getlist("where")),
        sort=sort,
        descending=_choice(request, "order", "desc", ("desc", "asc")) == "desc",
        offset=_int(request, "offset", 0, 0, 1 << 62),
        limit=_int(request, "limit", 100, 1, runs_index.MAX_LIMIT),
    )


def runs_page(index: RunsIndex, request: Request) -> Response:
    partial = request.query_params.get("partial") == "1"
    return json_answer(request, index.page(parse_query(request), partial).as_json())


# -- 2. one run ------------------------------------------------------------------------------


def run_detail(api: Api, beats: Heartbeats | None, request: Request) -> Response:
    try:
        run = open_run(api, request)
    except Damaged as d:
        return json_answer(request, _damaged_detail(d))
    m = run.manifest
    state = shown(beats, str(m.get("state", "running")), m.get("owner"))
    etag = f'"{run.rev}-{state}"'  # the state: a dead owner shows as crashed, no commit
    if _fresh(request, etag):
        return not_modified(etag)
    return json_answer(request, describe(run, state), etag)


def _damaged_detail(d: Damaged) -> dict[str, Any]:
    return {
        "path": f"{d.project}/{d.id}",
        "project": d.project,
        "id": d.id,
        "name": d.id,
        "state": "damaged",
        "rev": None,
        "config": {},
        "summary": {},
        "attempts": [],
        "keys": {},
        "system_keys": [],
        "files": [],
        "console": {"attempts": []},
        "problem": d.problem,
    }


def describe(run: StoredRun, state: str) -> dict[str, Any]:
    """Everything the run page shows but the series, console text and media (``state``: as
    shown, see ``heartbeats.py``)."""
    m = run.manifest
    starts = {a.get("attempt"): a.get("start_step") for a in run.attempts}
    return {
        "path": run.path,
        "project": run.project,
        "id": run.id,
        "name": run.name,
        "state": state,
        "rev": run.rev,
        "created": run.created,
        "updated": run.updated,
        "last_step": run.last_step,
        "notes": run.notes,
        "tags": run.tags,
        "group": run.group,
        "job_type": run.job_type,
        "config": run.config,
        "summary": run.summary,
        "attempts": [
            {
                "attempt": a.get("attempt"),
                "host": a.get("host"),
                "pid": a.get("pid"),
                "started": a.get("started"),
                "ended": a.get("ended"),
                "state": a.get("state"),
                "exit_code": a.get("exit_code"),
                "first_step": starts.get(a.get("attempt")),
                "context": a.get("context") or {},
            }
            for a in run.attempts
        ],
        "keys": dict(sorted((m.get("schema") or {}).items())),
        "system_keys": run.system_keys,
        "files": [
            {
                "name": name,
                "versions": [
                    {k: v.get(k) for k in ("version", "size", "sha256", "saved", "attempt")}
                    for v in run.file_versions(name)
                ],
            }
            for name in run.files()
        ],
        "console": {"attempts": sorted({c["attempt"] for c in run.console_chunks()})},
        "problem": None,
    }


# -- 3. and 4. series ------------------------------------------------------------------------


def _axis(request: Request) -> tuple[str, int, float | None, float | None]:
    x = request.query_params.get("x", "step")
    width = _int(request, "width", 1000, 1, MAX_WIDTH)
    xmin, xmax = _float(request, "xmin"), _float(request, "xmax")
    if xmin is not None and xmax is not None and xmin > xmax:
        raise Refused(400, f"xmin={xmin} is above xmax={xmax}: give xmin <= xmax")
    return x, width, xmin, xmax


def series(api: Api, answers: Answers, tables: Tables, request: Request) -> Response:
    run = _readable(api, request)
    etag = _query_tag(run.rev, request)
    if _fresh(request, etag):
        return not_modified(etag)
    # The ETag names the revision and the query, not the run: the kept body's key adds both
    # the run's path and its uid (a run deleted and made again under the same id differs).
    kept = f"{run.path}|{run.manifest.get('uid')}|{etag}"
    body = answers.get(kept)
    if body is not None:
        return Response(body, media_type="application/json", headers={"ETag": etag})
    x, width, xmin, xmax = _axis(request)
    stream = _choice(request, "stream", "history", _query_series.STREAMS)
    keys = request.query_params.getlist("key")
    found = _query_series.run_series(
        run, keys or None, x, width, xmin, xmax, stream, read=tables.history
    )
    answer = {
        "rev": run.rev,
        "x": x,
        "width": width,
        # vars(), not asdict(): asdict copies every list of points element by element
        "series": [vars(s) for s in found.series],
        "attempts": [vars(a) for a in found.attempts],
    }
    response = json_answer(request, answer, etag, finite=True)
    if response.status_code == 200:
        answers.put(kept, bytes(response.body))
    return response


def _readable(api: Api, request: Request) -> StoredRun:
    """The URL's run, or 422 for a damaged one (it has no rows to show)."""
    try:
        return open_run(api, request)
    except Damaged as d:
        raise Refused(422, f"run {d.project}/{d.id} is damaged: {d.problem}") from None


def group_series(api: Api, tables: Tables, request: Request) -> Response:
    paths = request.query_params.getlist("run")
    if not paths:
        raise Refused(400, "run= is missing: give each run as run=project/id (repeatable)")
    key = request.query_params.get("key")
    if not key:
        raise Refused(400, "key= is missing: give the metric to group (one number key)")
    runs = []
    for path in paths:
        project, sep, run_id = path.partition("/")
        if not sep:
            raise Refused(400, f"run={path!r} must look like project/id")
        try:
            runs.append(_load(api, _run_path(project, run_id)))
        except Damaged as d:
            raise Refused(422, f"run {path} is damaged: {d.problem}") from None
    revs = ",".join(f"{r.path}@{r.rev}" for r in runs)
    etag = _query_tag(hashlib.sha256(revs.encode()).hexdigest()[:12], request)
    if _fresh(request, etag):
        return not_modified(etag)
    x, width, xmin, xmax = _axis(request)
    bands = _query_series.group_series(runs, key, x, width, xmin, xmax, read=tables.history)
    answer = vars(bands) | {"attempts": [{"run": r, **vars(m)} for r, m in bands.attempts]}
    return json_answer(request, answer, etag, finite=True)


# -- 5. console ------------------------------------------------------------------------------


def console(api: Api, request: Request) -> Response:
    run = _readable(api, request)
    attempt_text = request.query_params.get("attempt")
    attempt = _int(request, "attempt", 0, 1, 1 << 31) if attempt_text else None
    tail = _int(request, "tail", CONSOLE_TAIL, 0, 1 << 40)
    etag = _query_tag(run.rev, request)
    if _fresh(request, etag):
        return not_modified(etag)
    whole = run.console(attempt).encode("utf-8")
    shown = whole[len(whole) - tail :] if tail < len(whole) else whole
    while shown and shown[0] & 0xC0 == 0x80:  # never start inside a character
        shown = shown[1:]
    headers = {"ETag": etag, "X-Localrun-Console-Bytes": str(len(whole))}
    return Response(shown, media_type="text/plain; charset=utf-8", headers=headers)


# -- 6. and 7. media -------------------------------------------------------------------------


def media(api: Api, request: Request) -> Response:
    run = _readable(api, request)
    key = request.query_params.get("key")
    kinds: dict[str, str] = run.manifest.get("schema") or {}
    media_keys = sorted(k for k, kind in kinds.items() if kind in (MEDIA, LIST_MEDIA))
    if not key or key not in media_keys:
        raise Refused(
            400,
            f"key={key!r} is not a media key of run {run.path}; its media keys: "
            f"{', '.join(media_keys) or 'none'}",
        )
    etag = _query_tag(run.rev, request)
    if _fresh(request, etag):
        return not_modified(etag)
    if request.query_params.get("step") is None:
        import pyarrow.compute as pc

        table = run.history([key])
        steps = pc.filter(table["_step"], pc.is_valid(table[key])).to_pylist()
        return json_answer(request, {"key": key, "kind": kinds[key], "steps": steps}, etag)
    step = _int(request, "step", 0, 0, 1 << 62)
    try:
        refs = run.media_refs(key, step)
    except RunNotFoundError:
        raise Refused(
            404, f"run {run.path} has no {key!r} at step {step}; ask without step"
        ) from None
    items = [_item(run, ref) for ref in refs]
    return json_answer(request, {"key": key, "step": step, "items": items}, etag)


def _item(run: StoredRun, ref: dict[str, Any]) -> dict[str, Any]:
    """One media value as the page draws it (no Pillow, no numpy: sizes are in the ref)."""
    path = ref.get("path")
    if not isinstance(path, str) or BLOB.match(path) is None:
        raise CorruptRunError(f"run {run.path}: media reference {path!r} is not a media blob")
    caption = ref.get("caption")
    if ref["_type"] == "image":
        return {
            "type": "image",
            "url": f"{API}/runs/{run.project}/{run.id}/blob/{path}",
            "width": ref.get("width"),
            "height": ref.get("height"),
            "caption": caption,
        }
    data = run.media_bytes(ref)
    if ref["_type"] == "histogram":
        hist = json.loads(data)
        return {
            "type": "histogram",
            "counts": hist.get("counts", []),
            "edges": hist.get("edges", []),
            "caption": caption,
        }
    import pyarrow as pa

    from .._store.segments import read_parquet

    table = read_parquet(pa.BufferReader(data))
    shown = table.slice(0, TABLE_ROWS).to_pylist()
    return {
        "type": "table",
        "columns": table.column_names,
        "rows": [[row[c] for c in table.column_names] for row in shown],
        "total_rows": table.num_rows,
        "caption": caption,
    }


def blob(api: Api, request: Request) -> Response:
    path = request.path_params["path"]
    m = BLOB.match(path)
    if m is None or m.group(2)[:2] != m.group(1):
        raise Refused(
            400,
            f"blob path {path!r} is not media/<2 hex>/<64 hex>.(png|json|parquet); take the "
            "url a media answer gives",
        )
    run = _readable(api, request)
    etag = f'"{m.group(2)}"'
    if _fresh(request, etag):
        return not_modified(etag)
    try:
        f = open_inside(run.dir, path, "media blob")
    except FileNotFoundError:
        raise Refused(404, f"run {run.path} has no media blob {path}") from None
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    return StreamingResponse(chunks(f), media_type=BLOB_TYPES[m.group(3)], headers=headers)


# -- 8. saved files --------------------------------------------------------------------------


def saved_file(api: Api, request: Request) -> Response:
    name = request.path_params["name"]
    try:
        clean = check_file_name(name)
    except InvalidIdError as exc:
        raise Refused(400, str(exc)) from None
    if clean != name:
        raise Refused(400, f"file name {name!r} is not in its normal form {clean!r}; use that")
    run = _readable(api, request)
    version = request.query_params.get("version") or None
    found = run.file_version(name, version)  # RunNotFoundError (404) names what it has
    etag = f'"{found.get("sha256") or found.get("version")}"'
    if _fresh(request, etag):
        return not_modified(etag)
    f = run.open_file(name, version)
    filename = PurePosixPath(name).name.replace('"', "")
    headers = {
        "ETag": etag,
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    if isinstance(found.get("size"), int):
        headers["Content-Length"] = str(found["size"])
    return StreamingResponse(chunks(f), media_type="application/octet-stream", headers=headers)
