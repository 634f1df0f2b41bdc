"""The :class:`~localrun._sync.remote.ObjectStore` of a ``localrun server`` (``http(s)://``).

Speaks the server's ``/api/v1`` (``localrun/_server/app.py``) with httpx. Uploads stream from
the file in chunks with their size and sha256 in headers, so neither side ever holds a whole
object and the server stores only what arrives intact. Every way the server can be out of
reach (down, slow, full, a wrong token, a broken connection, a 5xx) is one
:class:`~localrun.errors.RemoteUnavailableError` naming the URL and what to do: the sync
daemon retries those with backoff. An object the server holds with other content is a
:class:`~localrun.errors.RemoteConflictError`. Nothing here retries by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from .._store.layout import FORMAT_VERSION, check_file_name
from ..errors import InvalidIdError, RemoteConflictError, RemoteUnavailableError, SyncError
from .remote import Progress

API = "/api/v1"
ERROR_HEADER = "x-localrun-error"
CHUNK = 1 << 20
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=30.0)
TOKEN_HINT = "set LOCALRUN_TOKEN (or LOCALRUN_TOKEN_FILE) to the token the server was started with"


def _public_url(url: str) -> str:
    """``url`` without user, password, query or trailing ``/``: what names the remote."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class HttpStore:
    """Objects under the root of the ``localrun server`` at ``url``."""

    def __init__(self, url: str, token: str | None, timeout: httpx.Timeout = TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidIdError(
                f"{url!r} is not the URL of a localrun server; give one like http://host:8765"
            )
        self.url = _public_url(url)
        self.has_token = token is not None
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        self._client = httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout)
        self._checked = False

    # -- the ObjectStore protocol ---------------------------------------------------------

    def stat(self, key: str) -> int | None:
        self._check_server()
        response = self._send("HEAD", key, f"{self.url} checking {key}")
        if response.status_code == 404:
            return None
        self._check(response, key)
        return int(response.headers["x-localrun-size"])

    def sizes(self, prefix: str) -> None:
        """The server lists one folder at a time: the engine looks at each object instead."""
        return None

    def put_file(
        self, key: str, src: Path, size: int, sha256: str | None, progress: Progress
    ) -> None:
        with open(src, "rb") as f:
            if sha256 is None:  # a segment: the server checks the hash the headers declare
                sha256 = _sha256(f)
            body = _read_exactly(f, size, src, progress)
            self._put(key, body, size, sha256)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put(key, data, len(data), hashlib.sha256(data).hexdigest())

    def get_bytes(self, key: str) -> bytes | None:
        self._check_server()
        response = self._send("GET", key, f"{self.url} reading {key}")
        if response.status_code == 404:
            return None
        self._check(response, key)
        return response.content

    def list(self, prefix: str) -> list[str]:
        self._check_server()
        prefix = prefix.rstrip("/")
        if prefix:
            _check_key(prefix)
        try:
            response = self._client.get("/list", params={"prefix": prefix})
        except httpx.HTTPError as exc:
            self._unreachable(exc, f"listing {prefix or 'the root'}")
        self._check(response, prefix or "the root")
        names = response.json()["names"]
        return [str(n) for n in names]

    def close(self) -> None:
        self._client.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _put(self, key: str, body: bytes | Iterator[bytes], size: int, sha256: str) -> None:
        self._check_server()
        headers = {
            "content-length": str(size),
            "content-type": "application/octet-stream",
            "x-localrun-size": str(size),
            "x-localrun-sha256": sha256,
        }
        url = "/objects/" + quote(_check_key(key), safe="/")
        try:
            response = self._client.put(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._unreachable(exc, f"sending {key}")
        self._check(response, key)

    def _check_server(self) -> None:
        """Once: is a localrun server of this format there? A 404 for every object from some
        other web server (a wrong port, a proxy's wrong path) must not read as "nothing there"."""
        if self._checked:
            return
        try:
            response = self._client.get("/health")
        except httpx.HTTPError as exc:
            self._unreachable(exc, "checking it is a localrun server")
        found = None
        if response.status_code != 404:
            self._check(response, f"GET {API}/health")
            with contextlib.suppress(ValueError, AttributeError):
                found = response.json().get("format")
        if not isinstance(found, int):
            raise SyncError(
                f"{self.url} does not answer like a localrun server (GET {API}/health gave no "
                "localrun format): check the URL's host, port and path"
            )
        if found != FORMAT_VERSION:
            raise SyncError(
                f"the localrun server at {self.url} stores format {found}, this localrun "
                f"writes format {FORMAT_VERSION}: run the same localrun version on both sides"
            )
        self._checked = True

    def _send(self, method: str, key: str, what: str) -> httpx.Response:
        url = "/objects/" + quote(_check_key(key), safe="/")
        try:
            return self._client.request(method, url)
        except httpx.HTTPError as exc:
            self._unreachable(exc, what)

    def _unreachable(self, exc: httpx.HTTPError, doing: str) -> NoReturn:
        if isinstance(exc, httpx.ConnectError):
            why = (
                f"cannot connect to the localrun server at {self.url} ({exc}): check that "
                "`localrun server` runs there and that the host and port are right"
            )
        elif isinstance(exc, httpx.TimeoutException):
            why = (
                f"the localrun server at {self.url} did not answer in time while {doing} "
                f"({type(exc).__name__}): it is overloaded, or the network is slow"
            )
        else:
            why = (
                f"the connection to the localrun server at {self.url} broke while {doing} "
                f"({type(exc).__name__}: {exc})"
            )
        raise RemoteUnavailableError(f"{why}; sync retries later, nothing local changed") from exc

    def _check(self, response: httpx.Response, key: str) -> None:
        """Return if ``response`` succeeded, else raise the error its status means."""
        status = response.status_code
        if status < 300:
            return
        detail = _detail(response)
        where = f"the localrun server at {self.url}"
        if status == 401:
            sent = "the token it was sent" if self.has_token else "a request without a token"
            raise RemoteUnavailableError(f"{where} refused {sent} ({detail}): {TOKEN_HINT}")
        if status == 409:
            raise RemoteConflictError(f"{where} refused {key}: {detail}")
        if status == 507:
            raise RemoteUnavailableError(f"{where} is full, {key} refused: {detail}")
        if status >= 500 or status in (408, 429):
            raise RemoteUnavailableError(
                f"{where} failed ({status}) on {key}: {detail}; see the server's log; "
                "sync retries later"
            )
        raise SyncError(f"{where} refused {key} ({status}): {detail}")


def _check_key(key: str) -> str:
    """``key`` if it is canonical: a client must not send what the URL layer would rewrite."""
    if check_file_name(key) != key:
        raise InvalidIdError(f"object key {key!r} is not canonical (no '//', './', trailing '/')")
    return key


def _detail(response: httpx.Response) -> str:
    """The server's own words about a refusal (a HEAD answer carries them in a header)."""
    if ERROR_HEADER in response.headers:
        return response.headers[ERROR_HEADER]
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])
    except ValueError:
        pass
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _sha256(f: BinaryIO) -> str:
    """The hash of the open file ``f`` from its start, left at its start again."""
    digest = hashlib.sha256()
    while block := f.read(CHUNK):
        digest.update(block)
    f.seek(0)
    return digest.hexdigest()


def _read_exactly(f: BinaryIO, size: int, src: Path, progress: Progress) -> Iterator[bytes]:
    """``size`` bytes of the open file ``f`` in chunks, each reported to ``progress``.

    A file shorter than ``size`` (it changed since it was listed) is a :class:`SyncError`
    raised before the last byte goes out, so the server drops the cut body.
    """
    left = size
    while left > 0:
        block = f.read(min(CHUNK, left))
        if not block:
            raise SyncError(
                f"{src} has {size - left} bytes, {size} were expected: it changed while it was "
                "being sent (a file of a run is never rewritten: check what writes to it)"
            )
        left -= len(block)
        progress.advance(len(block))
        yield block
