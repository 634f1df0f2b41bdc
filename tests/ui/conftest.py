"""Fixtures for the dashboard's browser tests (``make test-browser``; marker ``browser``).

Everything is real: runs are written by child Python processes through ``localrun.init`` /
``log`` (one of them SIGKILLed and resumed by a process that calls itself another host), the
dashboard is a ``localrun ui`` subprocess on a free loopback port, and the pages are drawn by
Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser) driven by playwright.

Every page a test opens collects its JavaScript errors: an uncaught exception or a
``console.error`` fails the test (a test that expects one, e.g. a 404 for an unknown run, says
so with ``console_errors.allow(regex)``). Each test's last page is saved as a screenshot under
the test's temp dir (the CI artifact; its path is printed).
"""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import child_env, run_py, spawn, track
from tests.ui.chromium import CHROMIUM, CHROMIUM_ARGS

UI_DIR = Path(__file__).resolve().parent
TEST_TIMEOUT = 180  # s per browser test (pytest-timeout): Chromium on 2 busy cores is slow
PAGE_TIMEOUT_MS = 20_000  # playwright's default wait for a selector or a navigation
POLL = 300  # ms: the pages' polling period in the tests (?poll=300)
URL_LINE = re.compile(r"^localrun ui: (?P<root>.+) at (?P<url>http://\S+) \(")


# -- marker -----------------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/ui is a browser test with a timeout of its own.

    tryfirst: the marker must be on the item before ``-m "not browser"`` deselects by it.
    """
    for item in items:
        if UI_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


# -- runs written by real processes -------------------------------------------------------------

# Prepended to a child's code to make it "another node": localrun reads the host name once, at
# import (localrun._store.identity.HOST), so the child renames its host before importing it.
FAKE_HOST = "import socket\nsocket.gethostname = lambda: {host!r}\n"


def child_code(code: str, host: str | None = None) -> str:
    """``code`` (dedented), run as ``host`` when given."""
    body = textwrap.dedent(code)
    return (FAKE_HOST.format(host=host) + body) if host else body


def make_run(
    root: Path,
    project: str = "p",
    run_id: str = "r1",
    steps: int = 50,
    metrics: tuple[str, ...] = ("loss", "acc"),
    config: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    exit_code: int = 0,
    host: str | None = None,
    **init: Any,
) -> str:
    """Write a finished run ``project/run_id`` of ``steps`` rows in a child process; returns
    its path. ``loss`` falls as 1/(step+1), every other metric rises as step/steps."""
    code = f"""
    import localrun
    run = localrun.init(project={project!r}, id={run_id!r}, config={config or {}!r},
                        tags={tags or []!r}, **{init!r})
    for step in range({steps}):
        run.log({{k: (1.0 / (step + 1) if k == "loss" else step / {steps})
                  for k in {list(metrics)!r}}})
    run.finish(exit_code={exit_code})
    """
    done = run_py(child_code(code, host), root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return f"{project}/{run_id}"


def make_resumed_run(
    root: Path,
    project: str = "p",
    run_id: str = "resumed",
    kill_at: int = 30,
    steps: int = 60,
    hosts: tuple[str | None, str | None] = ("node-a", "node-b"),
) -> str:
    """A run SIGKILLed after committing steps ``0..kill_at-1`` (the node is preempted), then
    resumed (``resume="allow"``, same id) by another process calling itself ``hosts[1]`` that
    logs up to ``steps`` and finishes: two attempts, the first ``crashed``."""
    first = f"""
    import os, signal, localrun
    run = localrun.init(project={project!r}, id={run_id!r}, resume="allow")
    for step in range({kill_at}):
        run.log({{"loss": 1.0 / (step + 1), "acc": step / {steps}}})
    run.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
    killed = run_py(child_code(first, hosts[0]), root, timeout=120, LOCALRUN_LEASE_TTL="1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    second = resume_code(project, run_id, steps)
    done = run_py(child_code(second, hosts[1]), root, timeout=120, LOCALRUN_LEASE_TTL="1")
    assert done.returncode == 0, done.stderr[-2000:]
    return f"{project}/{run_id}"


def resume_code(project: str, run_id: str, steps: int, pause: float = 0.0) -> str:
    """A process resuming ``project/run_id`` and logging up to ``steps`` (``pause`` s apart,
    committing each row so that a watching page sees it), then finishing."""
    return f"""
    import time, localrun
    run = localrun.init(project={project!r}, id={run_id!r}, resume="allow")
    print("resumed", run.step, flush=True)
    for step in range(run.step, {steps}):
        run.log({{"loss": 1.0 / (step + 1), "acc": step / {steps}}})
        if {pause}:
            run.flush()
            time.sleep({pause})
    run.finish()
    """


@dataclass
class Writer:
    """A child process logging one run row by row (a live run, for the live tests).

    It logs ``loss`` and ``acc`` for steps ``0..`` and commits each row; it writes a row only
    when the test allows it (``advance``), so the test knows how many rows are stored without
    sleeping on the clock.
    """

    proc: subprocess.Popen[str]
    go: Path
    allowed: int = 0

    def advance(self, rows: int) -> int:
        """Let the writer commit ``rows`` more rows; wait until it did. Returns the total."""
        self.allowed += rows
        _tell(self.go, str(self.allowed))
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            assert line, (
                f"the writer died: {self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}"
            )
            if line.strip() == f"committed {self.allowed}":
                return self.allowed

    def finish(self) -> None:
        """Let the writer finish the run and exit."""
        _tell(self.go, "finish")
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err[-2000:]


WRITER = """
import os, time, localrun
go = os.environ["GO_FILE"]
run = localrun.init(project={project!r}, id={run_id!r}, resume="allow")
step = run.step
print("started", step, flush=True)
while True:
    want = open(go).read().strip() if os.path.exists(go) else "0"
    if want == "finish":
        break
    while step < int(want or 0):
        run.log({{"loss": 1.0 / (step + 1), "acc": step / 1000}})
        step += 1
        run.flush()
        print("committed", step, flush=True)
    time.sleep(0.01)
run.finish()
"""


WRITER_TTL = 6.0


def start_writer(
    root: Path, go: Path, project: str = "p", run_id: str = "live", host: str | None = None
) -> Writer:
    """Start a :class:`Writer` of ``project/run_id`` (a new run, or the next attempt of one);
    returns once it has opened the run (its ``init`` is done).

    Its lease TTL (6 s) is long enough that a loaded machine cannot starve the live writer's
    heartbeat for all of it: the dashboard shows a run whose heartbeat stood still for a TTL as
    crashed (and the next attempt of a killed writer waits that long to take the run over)."""
    code = child_code(WRITER.format(project=project, run_id=run_id), host)
    proc = spawn(code, root, GO_FILE=str(go), LOCALRUN_LEASE_TTL=str(WRITER_TTL))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("started"), (
        f"the writer did not start: {line!r} {proc.stderr.read()[-2000:] if proc.stderr else ''}"
    )
    writer = Writer(proc, go, allowed=int(line.split()[1]))
    _tell(go, str(writer.allowed))
    return writer


def _tell(go: Path, word: str) -> None:
    """Replace the writer's instruction file atomically (it never reads half a word)."""
    tmp = go.with_name(go.name + ".tmp")
    tmp.write_text(word)
    tmp.replace(go)


@pytest.fixture
def ui_root(tmp_path: Path) -> Path:
    """An empty localrun root of the test's own (tests fill it with :func:`make_run`)."""
    root = tmp_path / "runs"
    root.mkdir()
    return root


# -- the dashboard: a real `localrun ui` ------------------------------------------------------


@dataclass
class UiServer:
    """A running ``localrun ui`` subprocess."""

    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT, no trailing slash
    root: Path
    token: str | None = None
    lines: list[str] = field(default_factory=list)

    def page_url(self, path: str = "/", poll: int | None = POLL, **params: str) -> str:
        """The URL of a page with ``?poll=`` (the tests' short polling period) and ``params``."""
        from urllib.parse import urlencode

        query = {**params, **({"poll": str(poll)} if poll else {})}
        return self.url + path + (("&" if "?" in path else "?") + urlencode(query) if query else "")

    def client(self, **kw: Any) -> httpx.Client:
        """An httpx client on the server (a token, when the server has one, as a Bearer)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)


def start_ui(
    root: Path,
    host: str = "127.0.0.1",
    token: str | None = None,
    timeout: float = 60,
    prelude: str = "",
) -> UiServer:
    """Start ``python -m localrun._cli ui --root ROOT --port 0``; returns once ``/api/v1/health``
    answers. The conftest reaper (``track``) ends it after the test. ``prelude``: code the
    server process runs first (a test's instrumentation of the real server)."""
    extra = {"LOCALRUN_TOKEN": token} if token else {}
    args = ["ui", "--root", str(root), "--host", host, "--port", "0"]
    argv = [sys.executable, "-m", "localrun._cli", *args]
    if prelude:
        main = f"from localrun._cli import main\nmain({args!r})"
        argv = [sys.executable, "-c", textwrap.dedent(prelude) + "\n" + main]
    proc = track(
        subprocess.Popen(
            argv,
            env=child_env(root, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    assert proc.stdout is not None and proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    ready = sel.select(timeout=timeout)
    sel.close()
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        pytest.fail(f"localrun ui did not start: {proc.stderr.read()[-3000:]}")
    found = URL_LINE.match(line.strip())
    assert found, f"unexpected first line of localrun ui: {line!r}"
    url = found["url"]
    if host == "0.0.0.0":  # listens everywhere; the tests reach it on loopback
        url = url.replace("0.0.0.0", "127.0.0.1", 1)
    server = UiServer(proc, url, root, token, [line])
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"localrun ui exited: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "localrun ui never answered /api/v1/health"
        time.sleep(0.05)


@pytest.fixture
def ui_server() -> Callable[..., UiServer]:
    """``ui_server(root, host=..., token=...)`` starts a ``localrun ui`` on ``root``."""
    return start_ui


# -- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by playwright, one for the session (it is heavy)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium package; "
            "install it with .ci/install-browser (playwright never downloads a browser here)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]' (it is in the dev extra)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class ConsoleErrors:
    """The JavaScript errors of a test's pages: uncaught exceptions and ``console.error``."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect errors matching ``pattern`` (e.g. the browser's log line of an API 404)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def page(
    browser: Any, console_errors: ConsoleErrors, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A fresh page (its own context: no cookie shared between tests), 1280x900.

    At teardown: the screenshot (``<tmp>/screenshot-<test>.png``, path printed), then the test
    fails if the page logged an error it did not :meth:`ConsoleErrors.allow`.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: console_errors.errors.append(f"uncaught: {exc}"))
    pg.on(
        "console",
        lambda msg: (
            console_errors.errors.append(f"console.error: {msg.text} ({msg.location.get('url')})")
            if msg.type == "error"
            else None
        ),
    )
    try:
        yield pg
    finally:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:100]
        shot = tmp_path / f"screenshot-{name}.png"
        try:
            pg.screenshot(path=str(shot), full_page=True, timeout=10_000)
            print(f"screenshot: {shot}")
        except Exception as exc:  # a crashed page: report the test's own failure, not this
            print(f"screenshot failed: {exc}")
        context.close()
    bad = console_errors.unexpected()
    assert not bad, "JavaScript errors on the page:\n" + "\n".join(bad)


def wait_ready(pg: Any, timeout_ms: int = PAGE_TIMEOUT_MS) -> None:
    """Wait until the page says its first data is drawn (``body[data-ready="1"]``)."""
    pg.wait_for_function("document.body.dataset.ready === '1'", timeout=timeout_ms)
