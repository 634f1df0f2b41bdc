"""A real S3-compatible server for the tests: OpenStack Swift with its ``s3api`` middleware.

Why Swift and not only moto: moto answers from a Python dict, so it cannot show what a real object
store does to a sync (listing pagination from a real container database, multipart uploads, ETags
computed by the object server, requests that go over real sockets to four processes). Swift is in
Debian (installed by ``.ci/install-servers``) and starts in a couple of seconds on loopback.

The session fixture ``swift_s3`` builds a one-replica ring in a temporary directory, starts the
account, container, object and proxy servers (tempauth + s3api) on free loopback ports, creates one
bucket and yields its address and keys; everything is stopped and the directory removed at the end.
Nothing is written outside the temporary directory, and nothing of ``/etc/swift`` is used: each
server is started through a small launcher that points Swift at the temporary swift.conf before
anything is configured (Swift glances at /etc/swift/swift.conf on import, then forgets it).

pyarrow's S3 client (the AWS C++ SDK) sends a CRC checksum trailer with every upload unless
``AWS_REQUEST_CHECKSUM_CALCULATION=when_required``, and Swift 2.30's s3api rejects that trailer;
the fixture sets that variable for the whole session, as a user of an older S3 server must.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SWIFT_PYTHON = "/usr/bin/python3"  # Debian's python3-swift lives in the system interpreter
ACCESS_KEY = "test:tester"  # tempauth's "account:user" is the S3 access key ...
SECRET_KEY = "testing"  # ... and its key the secret
BUCKET = "localrun"
REGION = "us-east-1"
START_TIMEOUT = 60.0  # seconds; it takes a few on an idle machine (4.5 s of CPU in all)
INSTALL_HINT = "install them with .ci/install-servers (Debian's swift-* and memcached packages)"

# Runs one Swift WSGI server in the foreground, reading swift.conf from our directory rather than
# /etc/swift (Swift reads /etc/swift/swift.conf unless told otherwise before it starts). Given the
# three backend ports, it first builds the rings (one device, one replica, 2**6 partitions): the
# proxy is the only server that reads them at start, and building them in its process, while the
# other servers start, saves the interpreter start-ups of nine swift-ring-builder calls.
_LAUNCHER = textwrap.dedent(
    """
    import sys
    from swift.common import utils
    swift_dir, conf, app = sys.argv[1:4]
    # Before anything imports swift.common.storage_policy, which reads swift.conf at import:
    utils.set_swift_dir(swift_dir)
    if sys.argv[4:]:
        from swift.common.ring import RingBuilder
        for kind, port in zip(("account", "container", "object"), sys.argv[4:7]):
            builder = RingBuilder(6, 1, 1)
            builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
                             "port": int(port), "device": "d1", "weight": 100.0})
            builder.rebalance()
            builder.save(f"{swift_dir}/{kind}.builder")
            builder.get_ring().save(f"{swift_dir}/{kind}.ring.gz")
    from swift.common.wsgi import run_wsgi
    sys.exit(run_wsgi(conf, app, verbose=True))
    """
)


@dataclass(frozen=True)
class SwiftS3:
    """Where the running server is, and what a client needs to reach the test bucket."""

    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    bucket: str
    region: str
    log_dir: Path  # each server's output, to read when a test fails

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``, the form pyarrow's ``endpoint_override`` and DuckDB take."""
        return self.endpoint.removeprefix("http://")

    def filesystem(self) -> Any:
        """A pyarrow S3FileSystem on this server (plain http, path-style addressing)."""
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.host_port,
            scheme="http",
            region=self.region,
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
        )

    def logs(self) -> str:
        """The last lines of every server's output (for a failure message)."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together so that they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _check_xattrs(devices: Path) -> None:
    """Swift's object server keeps metadata in user xattrs: fail clearly where there are none."""
    probe = devices / ".xattr-probe"
    probe.touch()
    try:
        os.setxattr(probe, "user.localrun", b"1")
    except OSError as e:
        pytest.fail(
            f"Swift needs user extended attributes and {devices} has none ({e}): "
            "set TMPDIR (or pytest's --basetemp) to a directory on ext4 or xfs",
            pytrace=False,
        )
    finally:
        probe.unlink()


def _configs(base: Path, ports: dict[str, int]) -> dict[str, Path]:
    """Write swift.conf and one config per server; return the server configs by name."""
    devices = base / "srv"
    (devices / "d1").mkdir(parents=True)
    (base / "swift.conf").write_text(
        textwrap.dedent(
            """
            [swift-hash]
            swift_hash_path_prefix = localrun-tests
            swift_hash_path_suffix = localrun-tests
            [storage-policy:0]
            name = Policy-0
            default = yes
            """
        )
    )
    common = textwrap.dedent(
        f"""
        [DEFAULT]
        bind_ip = 127.0.0.1
        workers = 0
        # A port taken since we found it free: fail in seconds (default 30) and try new ports.
        bind_timeout = 3
        swift_dir = {base}
        devices = {devices}
        mount_check = false
        disable_fallocate = true
        log_level = WARNING
        # No syslog in a container: verbose=True copies the log to stderr, our log file.
        log_facility = LOG_LOCAL0
        """
    )
    backend = {
        "account": "egg:swift#account",
        "container": "egg:swift#container",
        "object": "egg:swift#object",
    }
    confs: dict[str, Path] = {}
    for kind, egg in backend.items():
        conf = base / f"{kind}-server.conf"
        conf.write_text(
            common
            + f"bind_port = {ports[kind]}\n"
            + textwrap.dedent(
                f"""
                [pipeline:main]
                pipeline = {kind}-server
                [app:{kind}-server]
                use = {egg}
                """
            )
        )
        confs[f"{kind}-server"] = conf
    proxy = base / "proxy-server.conf"
    # cache: tempauth refuses to work without memcache, and the proxy caches account and container
    # info there (without it every S3 request costs two more backend requests).
    proxy.write_text(
        common
        + f"bind_port = {ports['proxy']}\n"
        + textwrap.dedent(
            f"""
            [pipeline:main]
            pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
            [app:proxy-server]
            use = egg:swift#proxy
            account_autocreate = true
            [filter:catch_errors]
            use = egg:swift#catch_errors
            [filter:gatekeeper]
            use = egg:swift#gatekeeper
            [filter:healthcheck]
            use = egg:swift#healthcheck
            [filter:proxy-logging]
            use = egg:swift#proxy_logging
            [filter:cache]
            use = egg:swift#memcache
            memcache_servers = 127.0.0.1:{ports["memcache"]}
            [filter:listing_formats]
            use = egg:swift#listing_formats
            [filter:s3api]
            use = egg:swift#s3api
            location = {REGION}
            [filter:tempauth]
            use = egg:swift#tempauth
            user_admin_admin = admin .admin .reseller_admin
            user_test_tester = {SECRET_KEY} .admin
            [filter:copy]
            use = egg:swift#copy
            [filter:slo]
            use = egg:swift#slo
            [filter:dlo]
            use = egg:swift#dlo
            """
        )
    )
    confs["proxy-server"] = proxy
    return confs


def _wait_listening(port: int, procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    """Until ``port`` accepts a connection; fail at once if a server has died."""
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a Swift server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no Swift server listens on port {port} after {START_TIMEOUT} s")
        time.sleep(0.05)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Start one server in a session of its own (stopped as a group, never by a test's ^C)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # Every address is 127.0.0.1: eventlet's green DNS resolver (dnspython) is not
            # needed, and not importing it halves each server's start-up.
            env={**os.environ, "EVENTLET_NO_GREENDNS": "yes"},
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(base: Path) -> tuple[SwiftS3, list[subprocess.Popen[bytes]]]:
    """Start memcached and the four servers on free ports, make the bucket; RuntimeError (with
    every server stopped) when that fails."""
    names = ("account", "container", "object", "proxy", "memcache")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    confs = _configs(base, ports)
    _check_xattrs(base / "srv")
    logs = base / "logs"
    logs.mkdir()
    server = SwiftS3(
        endpoint=f"http://127.0.0.1:{ports['proxy']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket=BUCKET,
        region=REGION,
        log_dir=logs,
    )
    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses root without -u
    memcached = ["memcached", *user, "-U", "0", "-m", "16", "-l", "127.0.0.1"]
    procs = [_spawn([*memcached, "-p", str(ports["memcache"])], logs / "memcached.log")]
    try:
        ring_ports = [str(ports[kind]) for kind in ("account", "container", "object")]
        for app, conf in confs.items():
            extra = ring_ports if app == "proxy-server" else []
            command = [SWIFT_PYTHON, "-c", _LAUNCHER, str(base), str(conf), app, *extra]
            procs.append(_spawn(command, logs / f"{app}.log"))
        deadline = time.monotonic() + START_TIMEOUT
        for kind in names[::-1]:  # memcache first, the proxy last
            _wait_listening(ports[kind], procs, deadline)
        server.filesystem().create_dir(BUCKET)
    except Exception as e:
        _stop(procs)
        raise RuntimeError(f"{e}\n{server.logs()}") from e
    return server, procs


@contextlib.contextmanager
def running_swift(base: Path) -> Iterator[SwiftS3]:
    """Start Swift with all its state under ``base``, yield it with an empty bucket, stop it.

    Tried up to three times: a free port can be taken by another process between the moment it
    was found free and the moment a server binds it.
    """
    if not shutil.which("swift-proxy-server") or not shutil.which("memcached"):
        pytest.fail(f"OpenStack Swift or memcached is not installed: {INSTALL_HINT}", pytrace=False)
    failures = []
    for attempt in range(3):
        try:
            server, procs = _start(base / f"try-{attempt}")
        except RuntimeError as e:
            failures.append(str(e))
            continue
        try:
            yield server
        finally:
            _stop(procs)
        return
    pytest.fail("Swift did not start:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture(scope="session")
def swift_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftS3]:
    """A running Swift with an empty bucket, shared by the session (see the module docstring)."""
    checksum = "AWS_REQUEST_CHECKSUM_CALCULATION"
    before = os.environ.get(checksum)
    os.environ[checksum] = "when_required"
    base = tmp_path_factory.mktemp("swift")
    try:
        with running_swift(base) as server:
            yield server
    finally:
        if before is None:
            os.environ.pop(checksum, None)
        else:
            os.environ[checksum] = before
        shutil.rmtree(base, ignore_errors=True)
