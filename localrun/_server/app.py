"""The ASGI app of ``localrun server``, and the function the command line serves it with.

The HTTP face of :mod:`.objects`, under ``/api/v1`` (the dashboard of a later issue adds its
routes to the same app):

=========================================== ===============================================
``GET  /api/v1/health``                     ``{"localrun": version, "format": N}``, no token
``HEAD /api/v1/objects/<key>``              200 with ``X-Localrun-Size``, or 404
``GET  /api/v1/objects/<key>``              the object's bytes, streamed, or 404
``PUT  /api/v1/objects/<key>``              put-if-absent (a run's ``manifest.json``: replaced
                                            unless older); headers ``X-Localrun-Size`` and
                                            ``X-Localrun-Sha256``; 201 stored, 200 no change
``GET  /api/v1/list?prefix=<folder key>``   ``{"names": [...]}`` directly under it
=========================================== ===============================================

Errors are ``{"error": "..."}`` with 400 (bad key or body), 401 (token), 403 (a symbolic
link on the way), 409 (exists with other content), 507 (no space). A body is streamed to disk
in chunks as it arrives, never held whole: memory stays bounded whatever the object's size.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__, _query_series
from .._store.layout import FORMAT_VERSION, ROOT_MARKER
from .._store.manifest import ensure_root
from ..errors import RunNotFoundError, UsageError
from . import pages, ui_api
from .objects import CHUNK, ObjectError, RootStore, Upload, chunks

API = "/api/v1"
OPEN_PATHS = frozenset({f"{API}/health"})  # answered without a token (readiness probes)
SIZE = "x-localrun-size"
SHA256 = "x-localrun-sha256"
ERROR_HEADER = "x-localrun-error"
STALL = 300.0  # seconds a client may send nothing mid-body before its upload is dropped


class TokenAuth:
    """Every request but :data:`OPEN_PATHS` must carry ``Authorization: Bearer <token>``.

    Compared in constant time (``hmac.compare_digest``), so the answer's timing tells nothing
    about how much of a guess was right. Without a token (loopback only) everything passes.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._refused(scope):
            sent = any(name == b"authorization" for name, _ in scope["headers"])
            why = "a wrong token" if sent else "no token"
            response = _error(
                401,
                f"this localrun server requires its token and got {why}",
                **{"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope) -> bool:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return False
        return not self._allowed(scope)

    def _allowed(self, scope: Scope) -> bool:
        """The bearer header (syncers, scripts), or the dashboard's cookie (a browser cannot
        send a header when it follows a link: the cookie is set by :mod:`.pages`' login)."""
        assert self.expected is not None
        given = b""
        cookie = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
            elif name == b"cookie":
                cookie = value
        if hmac.compare_digest(given, self.expected):
            return True
        sent = pages.cookie_token(cookie)
        return sent is not None and hmac.compare_digest(b"Bearer " + sent, self.expected)


def create_app(
    root: Path, token: str | None, pushes: bool = True, ready: Callable[[], None] | None = None
) -> Starlette:
    """The app on ``root``: the dashboard and its JSON API always; with ``pushes`` (``localrun
    server``) also the object routes syncers push to, on a root made if it is not one yet.
    Without (``localrun ui``) the app is read-only: no route writes, whatever the token.

    ``ready`` is called once the app has started (``serve`` prints the address then).
    """
    if pushes:
        ensure_root(root)
    store = RootStore(root)

    async def health(request: Request) -> Response:
        return JSONResponse({"localrun": __version__, "format": FORMAT_VERSION})

    async def get_object(request: Request) -> Response:
        opened = await run_in_threadpool(store.open, request.path_params["key"])
        if opened is None:
            return _error(404, "no such object")
        f, size = opened
        headers = {"content-length": str(size), SIZE: str(size)}
        if request.method == "HEAD":
            f.close()
            return Response(status_code=200, headers=headers)
        return StreamingResponse(chunks(f), headers=headers, media_type="application/octet-stream")

    async def put_object(request: Request) -> Response:
        key = request.path_params["key"]
        size, sha256 = _declared(request, key)
        upload = await run_in_threadpool(store.begin, key, size, sha256)
        try:
            created = await _receive(request, upload)
        except ClientDisconnect:  # the client went away (or silent): nobody reads an answer
            upload.abort()
            return Response(status_code=400)
        except BaseException:  # also a cancel at shutdown: no await may run here, so inline
            upload.abort()
            raise
        return JSONResponse({"created": created}, status_code=201 if created else 200)

    async def list_names(request: Request) -> Response:
        prefix = request.query_params.get("prefix", "").rstrip("/")
        names = await run_in_threadpool(store.list, prefix)
        return JSONResponse({"names": names})

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ObjectError)
        return _error(exc.status, exc.message)

    routes: list[BaseRoute] = [Route(f"{API}/health", health, methods=["GET"])]
    if pushes:
        routes += [
            Route(f"{API}/objects/{{key:path}}", get_object, methods=["GET", "HEAD"]),
            Route(f"{API}/objects/{{key:path}}", put_object, methods=["PUT"]),
            Route(f"{API}/list", list_names, methods=["GET"]),
        ]
    routes += ui_api.routes(root, watch=not pushes)
    routes += pages.routes()
    app = Starlette(
        routes=routes, exception_handlers={ObjectError: refused}, lifespan=_started(ready)
    )
    app.add_middleware(TokenAuth, token=token)
    app.add_middleware(pages.TokenLogin, token=token)  # added last: outermost, sees ?token= first
    return app


def _started(
    ready: Callable[[], None] | None,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's start: pay the first page's one-time costs, then call ``ready``.

    Why: a fresh server's first answers paid for imports and first calls that have nothing
    to do with the run asked for: anyio's worker threads and files, the Parquet reader, the
    query layer's schema module and the downsampling (``_query_series.warm_up``). Paid here,
    before the address is printed, none of them is left to the first chart a user opens
    (``tests/test_ui_api.py`` checks that it imports nothing). On this machine that was not a
    difference a first visit shows (docs/ui.md#measured): uvicorn's own start and the runs
    list's first read had paid most of them; the address is now printed when it is ready.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(_query_series.warm_up)  # also starts anyio's worker thread
        async with await anyio.open_file(pages.STATIC / "index.html", "rb"):
            pass  # the pages' FileResponse reads through anyio's files, a module it loads lazily
        if ready is not None:
            ready()
        yield

    return lifespan


def _error(status: int, message: str, **headers: str) -> Response:
    """A refusal: ``{"error": message}``, and the message in a header too (a HEAD answer has
    no body), with anything outside ASCII escaped so a header can carry it."""
    header = message.encode("ascii", "backslashreplace").decode()
    return JSONResponse(
        {"error": message}, status_code=status, headers={ERROR_HEADER: header, **headers}
    )


def _declared(request: Request, key: str) -> tuple[int, str]:
    """The size and sha256 a PUT declares; a Content-Length that disagrees is refused."""
    size_text = request.headers.get(SIZE, "")
    sha256 = request.headers.get(SHA256, "").lower()
    if not size_text.isdigit() or not sha256:
        raise ObjectError(
            400, f"PUT {key} needs the headers X-Localrun-Size (bytes) and X-Localrun-Sha256"
        )
    length = request.headers.get("content-length")
    if length is not None and length != size_text:
        raise ObjectError(
            400, f"PUT {key}: Content-Length {length} differs from X-Localrun-Size {size_text}"
        )
    return int(size_text), sha256


async def _receive(request: Request, upload: Upload) -> bool:
    """Stream the body into ``upload`` in chunks of up to 1 MiB, then finish it.

    After a refusal mid-body (no space), the rest of the declared body is read and dropped so
    the client, still sending, gets the answer instead of a reset connection.
    """
    buffer = bytearray()
    body = _stalling(request.stream())
    try:
        async for chunk in body:
            buffer += chunk
            if len(buffer) >= CHUNK:
                await run_in_threadpool(upload.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await run_in_threadpool(upload.write, bytes(buffer))
        return await run_in_threadpool(upload.finish)
    except ObjectError as exc:
        await run_in_threadpool(upload.abort)
        if exc.status == 507:
            await _drain(body, upload.size - upload.received)
        raise


async def _stalling(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``stream``, ended with :class:`ClientDisconnect` if the client goes silent too long."""
    while True:
        try:
            with anyio.fail_after(STALL):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ClientDisconnect() from None
        yield chunk


async def _drain(body: AsyncIterator[bytes], left: int) -> None:
    async for chunk in body:
        left -= len(chunk)
        if left < 0:
            return


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (serving without a token is safe only then)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(root: Path, host: str, port: int, token: str | None, pushes: bool = True) -> None:
    """Serve ``root`` on ``host:port`` until SIGINT/SIGTERM: ``localrun server`` (``pushes``)
    or the read-only ``localrun ui``.

    Binds the socket itself so that ``port=0`` picks a free port, and prints the URL it really
    listens on (one line on stdout) once it accepts connections.
    """
    import uvicorn

    command = "localrun server" if pushes else "localrun ui"
    if token is None and not is_loopback(host):
        who = "on the server and on every syncer" if pushes else "and open the page with ?token="
        raise UsageError(
            f"{command} on {host} would be reachable from other machines without a token; "
            f"set LOCALRUN_TOKEN (or LOCALRUN_TOKEN_FILE) {who}, or serve on 127.0.0.1 (from "
            "another machine: ssh -L PORT:127.0.0.1:PORT this-host)"
        )
    _check_root(root) if pushes else _check_existing_root(root)
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host

    def ready() -> None:
        print(
            f"{command}: {root} at http://{shown}:{bound} "
            f"({'token required' if token else 'no token, this machine only'})",
            flush=True,
        )

    app = create_app(root, token, pushes, ready)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(1)


def _check_root(root: Path) -> None:
    """Serve a localrun root, a new folder or an empty one; refuse anything else.

    ``--root ~`` (a typo, a missing path component) must not turn a home folder into a root
    that anyone with the token writes into.
    """
    if not root.exists():
        return
    if not root.is_dir():
        raise UsageError(f"--root {root} is a file; give a folder for the server's root")
    if (root / ROOT_MARKER).exists() or not any(root.iterdir()):
        return
    from .._query import Api

    try:
        Api(root).check()  # a root made before the marker existed: runs, no marker
    except RunNotFoundError:
        raise UsageError(
            f"--root {root} is neither a localrun root nor empty; give an existing localrun "
            "root, an empty folder or a new one"
        ) from None


def _check_existing_root(root: Path) -> None:
    """The dashboard reads a root that exists; it never makes one (a typo'd ``--root`` shows
    an error, not an empty page)."""
    from .._query import Api

    if not root.is_dir():
        raise UsageError(f"--root {root} is not a folder; give the localrun root to look at")
    if not (root / ROOT_MARKER).exists():
        try:
            Api(root).check()
        except RunNotFoundError:
            raise UsageError(
                f"--root {root} is not a localrun root (no {ROOT_MARKER}, no runs); give the "
                "root your runs are written to (LOCALRUN_DIR)"
            ) from None


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise UsageError(
            f"localrun server cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "pick another --port (0 picks a free one) or --host"
        ) from None
    sock.listen(128)
    return sock
