"""`localrun server` and HttpStore, its client: a real server process on 127.0.0.1 per test.

What a user relies on: a push stores exactly the bytes sent or nothing; nothing is ever
written outside the server's root whatever the key; the token is required and its absence
is named; a down, full or killed server is a clear retryable error and never a half object;
a large upload does not grow the server's memory.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

import localrun
from localrun import _settings
from localrun._sync.httpstore import HttpStore
from localrun.errors import RemoteConflictError, RemoteUnavailableError, SyncError
from tests.conftest import child_env, run_py, start_at_barrier, track

# Each test starts a real `localrun server` process: minutes in all, so `make test-servers`.
pytestmark = pytest.mark.server

TOKEN = "t0k3n-for-tests-0123456789abcdef"
RUN = "proj/run1"


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    root: Path

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_server(
    root: Path,
    token: str | None = TOKEN,
    host: str = "127.0.0.1",
    wrap: list[str] | None = None,
    tracked: bool = True,
    **extra: str,
) -> Server:
    """`localrun server --port 0` in a subprocess; returns once /api/v1/health answers.

    ``tracked``: ended after the test (the conftest reaper); a module's shared server is not."""
    env = child_env(root, **extra)
    if token is not None:
        env["LOCALRUN_TOKEN"] = token
    cmd = [sys.executable, "-m", "localrun._cli", "server", "--root", str(root)]
    cmd += ["--host", host, "--port", "0"]
    proc = subprocess.Popen(
        [*(wrap or []), *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if tracked:
        track(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the server did not start: {proc.communicate()[1][-2000:]}")
    url = line.split(" at ")[1].split()[0]
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                return Server(proc, url, root)
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server never answered its health check"
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path / "server-root")
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


@pytest.fixture
def store(server: Server) -> Iterator[HttpStore]:
    s = HttpStore(server.url, TOKEN)
    yield s
    s.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that need no root of their own (each uses its own project):
    a server start costs seconds on a loaded machine."""
    srv = start_server(tmp_path_factory.mktemp("shared") / "server-root", tracked=False)
    yield srv
    srv.proc.terminate()
    try:
        srv.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.kill()


@pytest.fixture
def shared_store(shared: Server) -> Iterator[HttpStore]:
    s = HttpStore(shared.url, TOKEN)
    yield s
    s.close()


_projects = itertools.count()


@pytest.fixture
def run(shared: Server) -> str:
    """``project/run_id`` of a run no other test on the shared server uses."""
    return f"p{next(_projects)}-{os.getpid()}/run1"


class Count:
    """A progress that counts what it is told."""

    def __init__(self) -> None:
        self.n = 0

    def advance(self, nbytes: int) -> None:
        self.n += nbytes


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """A file of ``size`` bytes that is not all one byte, and its sha256."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    with open(path, "wb") as f:
        left = size
        while left:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return sha256_file(path)


def leftovers(folder: Path) -> list[str]:
    """Every temp file (a half upload) anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name]


def raw(server: Server, method: str, path: str, body: bytes = b"", **headers: str) -> int:
    """Send ``path`` exactly as written (no client normalises it) and return the status."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


def put_headers(body: bytes, token: str | None = TOKEN) -> dict[str, str]:
    h = {"X-Localrun-Size": str(len(body)), "X-Localrun-Sha256": hashlib.sha256(body).hexdigest()}
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


# -- round trips ---------------------------------------------------------------------------


def test_put_stat_get_list_round_trip_and_a_repeat_is_a_no_op(
    store: HttpStore, server: Server, tmp_path: Path
) -> None:
    src = tmp_path / "seg.parquet"
    digest = make_file(src, 3_000_001)
    key = f"{RUN}/history/0001-000001.parquet"
    assert store.stat(key) is None and store.get_bytes(key) is None
    progress = Count()
    store.put_file(key, src, 3_000_001, digest, progress)
    assert progress.n == 3_000_001
    assert store.stat(key) == 3_000_001
    assert store.get_bytes(key) == src.read_bytes()
    stored = server.root / key
    assert sha256_file(stored) == digest
    inode = stored.stat().st_ino

    store.put_bytes(f"{RUN}/log/000000000001.json", b'{"rev": 1}')
    assert store.list("") == ["localrun.json", "proj"]
    assert store.list("proj") == ["run1"]
    assert store.list(RUN) == ["history", "log"]
    assert store.list(f"{RUN}/log") == ["000000000001.json"]
    assert store.list("nothing/here") == []

    store.put_file(key, src, 3_000_001, digest, Count())  # a re-push: the same object
    store.put_bytes(f"{RUN}/log/000000000001.json", b'{"rev": 1}')
    assert stored.stat().st_ino == inode
    assert store.list(f"{RUN}/history") == ["0001-000001.parquet"]
    assert leftovers(server.root) == []
    # The server's root is a localrun root: the API and the CLI accept it.
    localrun.Api(server.root).check()


def test_a_revision_that_exists_with_other_bytes_is_a_conflict(
    shared_store: HttpStore, run: str
) -> None:
    key = f"{run}/log/000000000002.json"
    shared_store.put_bytes(key, b'{"rev": 2, "uid": "a"}')
    with pytest.raises(RemoteConflictError, match="already exists on the server with other"):
        shared_store.put_bytes(key, b'{"rev": 2, "uid": "b"}')
    assert shared_store.get_bytes(key) == b'{"rev": 2, "uid": "a"}'


def test_the_manifest_copy_is_replaced_but_never_rolled_back_nor_by_another_run(
    shared_store: HttpStore, run: str
) -> None:
    key = f"{run}/manifest.json"
    shared_store.put_bytes(key, b'{"rev": 3, "uid": "u1"}')
    shared_store.put_bytes(key, b'{"rev": 5, "uid": "u1"}')
    assert shared_store.get_bytes(key) == b'{"rev": 5, "uid": "u1"}'
    shared_store.put_bytes(key, b'{"rev": 4, "uid": "u1"}')  # a slower syncer: kept at 5
    assert shared_store.get_bytes(key) == b'{"rev": 5, "uid": "u1"}'
    with pytest.raises(RemoteConflictError, match="another run"):
        shared_store.put_bytes(key, b'{"rev": 9, "uid": "u2"}')
    assert shared_store.get_bytes(key) == b'{"rev": 5, "uid": "u1"}'


def test_a_root_marker_of_another_format_is_refused(
    shared_store: HttpStore, shared: Server
) -> None:
    before = (shared.root / "localrun.json").read_bytes()
    shared_store.put_bytes("localrun.json", b'{"format": 2, "created": 1}')  # ours: a no-op
    with pytest.raises(RemoteConflictError, match="format 99"):
        shared_store.put_bytes("localrun.json", b'{"format": 99}')
    assert (shared.root / "localrun.json").read_bytes() == before


# -- bodies that are not what they claim ------------------------------------------------------


def test_a_body_whose_sha256_differs_is_refused_and_nothing_is_stored(
    shared_store: HttpStore, shared: Server, tmp_path: Path, run: str
) -> None:
    src = tmp_path / "f"
    make_file(src, 2_500_000)
    key = f"{run}/files/model.pt.v1"
    with pytest.raises(SyncError, match="sha256") as info:
        shared_store.put_file(key, src, 2_500_000, "0" * 64, Count())
    assert not isinstance(info.value, RemoteUnavailableError)  # retrying cannot help
    assert "nothing was stored" in str(info.value)
    assert shared_store.stat(key) is None
    assert leftovers(shared.root) == []


@pytest.mark.parametrize(("declared", "sent"), [(1000, 400), (400, 1000)])
def test_a_body_of_another_size_than_declared_is_refused_and_nothing_is_stored(
    shared: Server, declared: int, sent: int, run: str
) -> None:
    body = os.urandom(sent)
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "x-localrun-size": str(declared),
        "x-localrun-sha256": hashlib.sha256(body[:declared]).hexdigest(),
    }
    # No Content-Length (a chunked body): only the declared size can catch it.
    response = httpx.put(
        f"{shared.url}/api/v1/objects/{run}/files/x", content=iter([body]), headers=headers
    )
    assert response.status_code == 400, response.text
    assert "nothing was stored" in response.json()["error"]
    assert not (shared.root / run / "files" / "x").exists()
    assert leftovers(shared.root) == []
    # A Content-Length that disagrees with the declared size is refused before the body.
    headers["content-length"] = str(sent)
    response = httpx.put(
        f"{shared.url}/api/v1/objects/{run}/files/x", content=body, headers=headers
    )
    assert response.status_code == 400


def test_a_local_file_shorter_than_listed_is_not_sent_whole(
    shared_store: HttpStore, shared: Server, tmp_path: Path, run: str
) -> None:
    src = tmp_path / "f"
    digest = make_file(src, 3_000_000)
    with pytest.raises(SyncError, match="changed while it was being sent"):
        shared_store.put_file(f"{run}/files/f", src, 5_000_000, digest, Count())
    assert shared_store.stat(f"{run}/files/f") is None


# -- keys that would escape the root ----------------------------------------------------------

ESCAPES = [
    "/api/v1/objects/../../escaped",
    "/api/v1/objects/proj/run1/../../../escaped",
    "/api/v1/objects/%2e%2e/%2e%2e/escaped",
    "/api/v1/objects/proj/run1/%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped",
    "/api/v1/objects//OUTSIDE/escaped",
    "/api/v1/objects/%2FOUTSIDE%2Fescaped",
    "/api/v1/objects/proj/run1/files/a%00b",
    "/api/v1/objects/proj/run1/files\\..\\..\\..\\escaped",
    "/api/v1/objects/proj/run1/files/" + "a" * 300,
    "/api/v1/objects/proj/run1/files/" + "a/" * 600 + "b",
    "/api/v1/objects/proj/.resume/x",
    "/api/v1/objects/.hidden/run/x",
    "/api/v1/objects/escaped",
    "/api/v1/objects/proj/run1/files/x.tmp-host-1-abcd",
]


def test_a_key_that_would_escape_the_root_is_refused_and_nothing_is_written(
    server: Server, tmp_path: Path
) -> None:
    outside = tmp_path / "OUTSIDE"
    outside.mkdir()
    before = sorted(p for p in tmp_path.rglob("*"))
    body = b"not yours"
    for path in ESCAPES:
        path = path.replace("OUTSIDE", str(outside).lstrip("/").replace("/", "%2F"))
        assert raw(server, "PUT", path, body, **put_headers(body)) in (400, 403), path
        assert raw(server, "GET", path, Authorization=f"Bearer {TOKEN}") in (400, 403, 404), path
    for prefix in ("..", "../..", "/etc", "proj/../..", "%2e%2e"):
        status = raw(
            server, "GET", f"/api/v1/list?prefix={prefix}", Authorization=f"Bearer {TOKEN}"
        )
        assert status == 400, prefix
    after = sorted(p for p in tmp_path.rglob("*"))
    new = [p for p in after if p not in before]
    assert all(p.is_dir() and p.is_relative_to(server.root) for p in new), new
    assert list(outside.iterdir()) == []


def test_a_symlinked_folder_inside_the_root_is_never_followed(
    server: Server, store: HttpStore, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_text("private")
    (server.root / "proj").mkdir()
    (server.root / "proj" / "run1").symlink_to(outside)
    body = b"payload"
    status = raw(server, "PUT", f"/api/v1/objects/{RUN}/files/x", body, **put_headers(body))
    assert status == 403
    with pytest.raises(SyncError, match="symbolic link"):
        store.put_bytes(f"{RUN}/history/0001-000001.parquet", body)
    with pytest.raises(SyncError, match="symbolic link"):
        store.get_bytes(f"{RUN}/secret")
    with pytest.raises(SyncError, match="symbolic link"):
        store.stat(f"{RUN}/secret")
    with pytest.raises(SyncError, match="symbolic link"):
        store.list(RUN)
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    # A link as the object itself is not an object either.
    (server.root / "proj" / "run2").mkdir()
    (server.root / "proj" / "run2" / "f").symlink_to(outside / "secret")
    with pytest.raises(SyncError, match="symbolic link"):
        store.get_bytes("proj/run2/f")


def test_the_client_refuses_a_key_the_url_layer_would_rewrite(shared_store: HttpStore) -> None:
    for key in ("proj/run1/../x", "/abs/x", "proj//run1/x", "proj/./x"):
        with pytest.raises(localrun.InvalidIdError):
            shared_store.put_bytes(key, b"x")


# -- the token ------------------------------------------------------------------------------


def test_a_wrong_or_missing_token_is_refused_and_named(shared: Server, run: str) -> None:
    for token in ("wrong", None, TOKEN + "x", TOKEN[:-1]):
        bad = HttpStore(shared.url, token)
        for call in (
            lambda s: s.stat(f"{run}/x"),
            lambda s: s.put_bytes(f"{run}/log/000000000001.json", b"{}"),
            lambda s: s.get_bytes(f"{run}/x"),
            lambda s: s.list(""),
        ):
            with pytest.raises(RemoteUnavailableError, match="LOCALRUN_TOKEN") as info:
                call(bad)
            assert ("without a token" in str(info.value)) == (token is None)
            assert shared.url in str(info.value)
        bad.close()
    project = shared.root / run.split("/")[0]
    assert not project.exists()
    body = b"{}"
    assert raw(shared, "PUT", f"/api/v1/objects/{run}/f", body, **put_headers(body, None)) == 401
    assert not project.exists()
    assert raw(shared, "GET", "/api/v1/health") == 200  # readiness needs no token


def test_the_token_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    monkeypatch.setenv("LOCALRUN_TOKEN_FILE", str(token_file))
    assert _settings.token() == TOKEN
    monkeypatch.setenv("LOCALRUN_TOKEN", "from-env")
    assert _settings.token() == "from-env"  # the variable wins over the file
    monkeypatch.delenv("LOCALRUN_TOKEN")
    token_file.write_text("\n")
    with pytest.raises(localrun.UsageError, match="LOCALRUN_TOKEN_FILE.*empty"):
        _settings.token()
    monkeypatch.setenv("LOCALRUN_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(localrun.UsageError, match="LOCALRUN_TOKEN_FILE.*cannot be read"):
        _settings.token()
    monkeypatch.setenv("LOCALRUN_TOKEN", "two words")
    with pytest.raises(localrun.UsageError, match="LOCALRUN_TOKEN.*spaces"):
        _settings.token()


def test_a_server_started_with_a_token_file_takes_that_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    srv = start_server(tmp_path / "r", token=None, LOCALRUN_TOKEN_FILE=str(token_file))
    s = HttpStore(srv.url, TOKEN)
    s.put_bytes(f"{RUN}/log/000000000001.json", b"{}")
    assert (tmp_path / "r" / RUN / "log" / "000000000001.json").read_bytes() == b"{}"
    with pytest.raises(RemoteUnavailableError, match="LOCALRUN_TOKEN"):
        HttpStore(srv.url, "other").stat(f"{RUN}/log/000000000001.json")
    s.close()
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


def test_a_host_other_machines_reach_needs_a_token(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "localrun._cli", "server", "--root", str(tmp_path / "r")]
    done = subprocess.run(
        [*cmd, "--host", "0.0.0.0", "--port", "0"],
        env=child_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "LOCALRUN_TOKEN" in done.stderr and "127.0.0.1" in done.stderr
    assert not (tmp_path / "r").exists()
    srv = start_server(tmp_path / "r", token=TOKEN, host="0.0.0.0")  # with one it serves
    assert srv.url.startswith("http://0.0.0.0:")
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


# -- a remote that is down, full or killed ------------------------------------------------------


def test_a_server_that_is_down_is_a_retryable_error_naming_the_url(server: Server) -> None:
    s = HttpStore(server.url, TOKEN)
    s.put_bytes(f"{RUN}/log/000000000001.json", b"{}")
    server.kill()
    for call in (
        lambda: s.stat(f"{RUN}/log/000000000001.json"),
        lambda: s.put_bytes(f"{RUN}/log/000000000002.json", b"{}"),
        lambda: s.list(RUN),
    ):
        with pytest.raises(RemoteUnavailableError, match="localrun server") as info:
            call()
        assert server.url in str(info.value)
    s.close()


def _unshare_tmpfs_works(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
        capture_output=True,
    )
    probe.rmdir()
    return done.returncode == 0


def test_a_full_or_read_only_disk_is_a_retryable_error_that_leaves_nothing(tmp_path: Path) -> None:
    """A real ENOSPC then EROFS: the server runs in its own mount namespace on an 8 MB tmpfs."""
    if not _unshare_tmpfs_works(tmp_path):
        pytest.skip(
            "this host lacks unshare/nsenter or forbids `unshare -rm` + a tmpfs mount (user namespaces)"
        )
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f'mount -t tmpfs -o size=8m tmpfs {disk} && exec "$@"'
    srv = start_server(disk / "root", wrap=["unshare", "-rm", "sh", "-c", script, "sh"])
    # The tmpfs is visible only in the server's namespace: look at it through /proc.
    seen = Path(f"/proc/{srv.proc.pid}/root") / str(disk / "root").lstrip("/")
    assert (seen / "localrun.json").is_file()
    s = HttpStore(srv.url, TOKEN)
    big = tmp_path / "big"
    digest = make_file(big, 20_000_000)
    with pytest.raises(RemoteUnavailableError, match="is full") as info:
        s.put_file(f"{RUN}/files/big", big, 20_000_000, digest, Count())
    assert "no space left" in str(info.value) and "Free space" in str(info.value)
    assert s.stat(f"{RUN}/files/big") is None
    assert leftovers(seen) == []
    small = tmp_path / "small"
    digest = make_file(small, 5_000_000)  # fits only if the failed temp was freed
    s.put_file(f"{RUN}/files/small", small, 5_000_000, digest, Count())
    assert sha256_file(seen / RUN / "files" / "small") == digest
    # Any other failed write (here a read-only filesystem) is a 500 that says why.
    remount = ["nsenter", "-t", str(srv.proc.pid), "-U", "-m", "--preserve-credentials"]
    subprocess.run([*remount, "mount", "-o", "remount,ro", str(disk)], check=True)
    with pytest.raises(RemoteUnavailableError, match="cannot write") as info:
        s.put_bytes("proj/run2/log/000000000001.json", b"{}")
    assert "Read-only file system" in str(info.value)
    assert s.stat("proj/run2/log/000000000001.json") is None
    s.close()
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


class Pause:
    """A progress that blocks the upload once ``at`` bytes went out, until released."""

    def __init__(self, at: int) -> None:
        self.at, self.n = at, 0
        self.paused = threading.Event()
        self.release = threading.Event()

    def advance(self, nbytes: int) -> None:
        self.n += nbytes
        if self.n >= self.at and not self.paused.is_set():
            self.paused.set()
            assert self.release.wait(120)


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_server_stopped_mid_upload_leaves_no_partial_object(tmp_path: Path, sig: int) -> None:
    root = tmp_path / "server-root"
    srv = start_server(root)
    made = run_py("import localrun; localrun.init(project='proj', id='run1').finish()", root)
    assert made.returncode == 0, made.stderr
    src = tmp_path / "f"
    digest = make_file(src, 40_000_000)
    key = f"{RUN}/files/ckpt.v1"
    s = HttpStore(srv.url, TOKEN)
    pause = Pause(at=16_000_000)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            s.put_file(key, src, 40_000_000, digest, pause)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=upload)
    t.start()
    assert pause.paused.wait(60)
    # The server is mid-body: part of the object is in its temp file, on disk.
    _wait_for("the temp file", lambda: any(os.path.getsize(p) > 6_000_000 for p in leftovers(root)))
    srv.proc.send_signal(sig)
    srv.proc.wait(timeout=60)  # SIGTERM: after its 5 s of grace, the upload is cancelled
    pause.release.set()
    t.join(60)
    assert len(errors) == 1 and isinstance(errors[0], RemoteUnavailableError), errors
    assert not (root / key).exists()
    if sig == signal.SIGTERM:
        assert leftovers(root) == []  # a stopped server drops its uploads' temp files
    srv2 = start_server(root)
    s2 = HttpStore(srv2.url, TOKEN)
    assert s2.stat(key) is None
    assert s2.list(f"{RUN}/files") == []  # a killed server's temp file is never an object
    s2.put_file(key, src, 40_000_000, digest, Count())  # the retry stores it whole
    assert sha256_file(root / key) == digest
    s.close()
    s2.close()
    srv2.proc.terminate()
    srv2.proc.wait(timeout=30)
    # What a killed server leaves, `localrun verify --repair` removes (docs/server.md).
    repair = subprocess.run(
        [sys.executable, "-m", "localrun._cli", "--root", str(root), "verify", "--repair"],
        env=child_env(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert leftovers(root) == [], repair.stdout + repair.stderr


CLIENT = """
import sys, os, signal
from pathlib import Path
from localrun._sync.httpstore import HttpStore
class Stop:
    n = 0
    def advance(self, k):
        self.n += k
        if self.n >= 16_000_000:
            print("paused", flush=True)
            signal.pause()
url, token, key, src, size, sha = sys.argv[1:]
HttpStore(url, token).put_file(key, Path(src), int(size), sha, Stop())
"""


def test_a_client_killed_mid_upload_leaves_nothing_on_the_server(
    shared: Server, tmp_path: Path, run: str
) -> None:
    src = tmp_path / "f"
    digest = make_file(src, 48_000_000)
    key = f"{run}/files/big"
    client = track(
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, shared.url, TOKEN, key, str(src), "48000000", digest],
            env=child_env(tmp_path),
            stdout=subprocess.PIPE,
            text=True,
        )
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "paused"
    folder = shared.root / run / "files"
    _wait_for("the temp file", lambda: any(p.stat().st_size > 4_000_000 for p in folder.iterdir()))
    client.send_signal(signal.SIGKILL)
    client.wait()
    _wait_for("the server to drop the temp file", lambda: leftovers(shared.root) == [])
    assert not (shared.root / key).exists()


# -- scale and races --------------------------------------------------------------------------


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.mark.slow
def test_a_200_mb_upload_streams_with_bounded_server_memory(
    server: Server, store: HttpStore, tmp_path: Path
) -> None:
    size = 200 * 1024 * 1024
    src = tmp_path / "sparse"
    with open(src, "wb") as f:  # sparse: no disk for the source, 200 MB to send
        f.truncate(size)
    digest = sha256_file(src)
    store.put_bytes(f"{RUN}/log/000000000001.json", b"{}")  # warm the server's code paths
    before = _rss(server.proc.pid, "VmRSS")
    progress = Count()
    store.put_file(f"{RUN}/files/huge", src, size, digest, progress)
    peak = _rss(server.proc.pid, "VmHWM")  # the highest the server's memory ever was
    assert progress.n == size
    assert store.stat(f"{RUN}/files/huge") == size
    assert sha256_file(server.root / RUN / "files" / "huge") == digest
    grew = peak - before
    print(f"server RSS before {before >> 20} MB, peak {peak >> 20} MB")
    assert grew < 100 * 1024 * 1024, f"the server's memory grew by {grew >> 20} MB"


PUT_SAME = """
import os, sys
from pathlib import Path
from localrun._sync.httpstore import HttpStore
from localrun.errors import RemoteConflictError
class Nothing:
    def advance(self, n): pass
url, token, key, src, sha = os.environ["ARGS"].split("|")
try:
    HttpStore(url, token).put_file(key, Path(src), os.path.getsize(src), sha, Nothing())
    print("stored", flush=True)
except RemoteConflictError as exc:
    print("conflict", exc, flush=True)
"""


@pytest.mark.parametrize("same", [True, False], ids=["same-bytes", "other-bytes"])
def test_two_clients_putting_one_object_at_once_leave_one_intact_object(
    shared: Server, tmp_path: Path, same: bool, run: str
) -> None:
    key = f"{run}/history/0001-000007.parquet"
    sources = []
    for i in range(2):
        src = tmp_path / f"src{i}"
        sources.append((src, make_file(src, 30_000_000, seed=0 if same else i)))
    go = tmp_path / "go"
    procs = []
    for src, digest in sources:
        procs += start_at_barrier(
            PUT_SAME,
            1,
            tmp_path / "unused",
            go,
            ARGS=f"{shared.url}|{TOKEN}|{key}|{src}|{digest}",
        )
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = sorted(out.strip().split()[0] for out, _ in outs)
    stored = sha256_file(shared.root / key)
    if same:
        assert results == ["stored", "stored"]
        assert stored == sources[0][1]
    else:
        assert results == ["conflict", "stored"], outs
        assert stored in (sources[0][1], sources[1][1])  # the winner's, whole
    assert leftovers(shared.root) == []
    assert json.loads(
        httpx.get(
            f"{shared.url}/api/v1/list",
            params={"prefix": f"{run}/history"},
            headers={"authorization": f"Bearer {TOKEN}"},
        ).text
    )["names"] == ["0001-000007.parquet"]


# -- end to end: `localrun sync` to the server --------------------------------------------------

HAS_SYNC = importlib.util.find_spec("localrun._sync.replica") is not None


def test_localrun_sync_to_a_server_makes_a_replica_the_api_reads(
    server: Server, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    done = run_py(
        """
        import localrun
        run = localrun.init(project="proj", id="run1", flush_interval=0.05)
        for i in range(300):
            run.log({"loss": 1 / (i + 1), "acc": i / 300}, step=i)
        run.finish()
        localrun.init(project="proj", id="run2").finish()
        """,
        local,
    )
    assert done.returncode == 0, done.stderr
    cmd = [sys.executable, "-m", "localrun._cli", "sync", "--to", server.url, RUN]
    done = subprocess.run(
        cmd, env=child_env(local, LOCALRUN_TOKEN=TOKEN), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    mine = localrun.Api(local).run(RUN)
    theirs = localrun.Api(server.root).run(RUN)
    assert theirs.history().equals(mine.history())
    assert theirs.state == mine.state

    # the server's dashboard shows the pushed run as `localrun ui` would show it locally
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as web:
        page = web.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        listed = web.get("/api/v1/runs").json()
        assert [(r["path"], r["state"], r["last_step"]) for r in listed["runs"]] == [
            (RUN, "finished", 299)
        ]
        detail = web.get(f"/api/v1/runs/{RUN}").json()
        assert detail["state"] == "finished" and detail["config"] == mine.config
        drawn = web.get(f"/api/v1/runs/{RUN}/series", params={"key": "loss"}).json()
        (loss,) = drawn["series"]
        assert loss["count"] == 300 and loss["y"][0] == 1.0
        assert httpx.get(f"{server.url}/api/v1/runs", timeout=30).status_code == 401

    stored = {p: p.stat().st_mtime_ns for p in server.root.rglob("*") if p.is_file()}
    again = subprocess.run(
        cmd, env=child_env(local, LOCALRUN_TOKEN=TOKEN), capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert {p: p.stat().st_mtime_ns for p in server.root.rglob("*") if p.is_file()} == stored

    refused = subprocess.run(
        [*cmd[:-1], "proj/run2"], env=child_env(local), capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == localrun.errors.RemoteUnavailableError.exit_code  # 13
    assert "LOCALRUN_TOKEN" in refused.stdout + refused.stderr


def test_a_url_that_is_some_other_web_server_is_named_as_such(tmp_path: Path) -> None:
    """Every object of a plain web server is a 404: that must not read as "nothing there"."""
    other = track(
        subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
    )
    assert other.stdout is not None
    port = other.stdout.readline().split("port ")[1].split()[0]
    s = HttpStore(f"http://127.0.0.1:{port}", TOKEN)
    for call in (lambda: s.stat(f"{RUN}/x"), lambda: s.list(""), lambda: s.get_bytes("x/y/z")):
        with pytest.raises(SyncError, match="does not answer like a localrun server"):
            call()
    s.close()


def test_a_folder_that_is_neither_a_root_nor_empty_is_not_served(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    cmd = [sys.executable, "-m", "localrun._cli", "server", "--root", str(home), "--port", "0"]
    done = subprocess.run(cmd, env=child_env(home), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "neither a localrun root nor empty" in done.stderr
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
    # A root made by localrun (runs in it) is served as it is.
    made = run_py("import localrun; localrun.init(project='p', id='r').finish()", home)
    assert made.returncode == 0, made.stderr
    srv = start_server(home)
    assert HttpStore(srv.url, TOKEN).list("p") == ["r"]
    srv.proc.terminate()
    srv.proc.wait(timeout=30)
