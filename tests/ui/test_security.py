"""The dashboard's security, through a real ``localrun ui`` (httpx, raw sockets and Chromium).

- No URL reads a file outside the root: run ids, file names, media blob paths, ``/static/..``,
  percent-encoded and double-encoded variants, and links planted inside a run.
- Off loopback a token is required; ``?token=`` logs a browser in with an HttpOnly cookie.
- No request of any page leaves the server's own origin (air-gapped clusters: no CDN, ever).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import child_env
from tests.ui.conftest import make_resumed_run, make_run, run_py, wait_ready

SECRET = "TOP-SECRET-1f0c9a"  # planted outside the root: no answer may contain it
PASSWD = "root:x:0:0"  # /etc/passwd's first line
SOURCE = "def create_app("  # localrun/_server/app.py, next to static/: not an asset


@pytest.fixture
def planted(ui_root: Path, tmp_path: Path) -> Path:
    """A root with a run holding a saved file and an image, and secrets around it: a file next
    to the root, and links inside the run (a media blob and a saved file) pointing at it."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    (tmp_path / "work").mkdir()
    code = """
    import os, sys, localrun, numpy as np
    os.chdir(sys.argv[1])
    run = localrun.init(project="p", id="r1")
    open("model.pt", "wb").write(b"weights")
    run.log({"loss": 1.0, "img": localrun.Image(np.zeros((4, 4, 3), dtype=np.uint8))})
    run.save("model.pt")
    run.finish()
    """
    done = run_py(code.replace("sys.argv[1]", repr(str(tmp_path / "work"))), ui_root)
    assert done.returncode == 0, done.stderr[-2000:]
    run = ui_root / "p" / "r1"
    # A second blob in the run's media folder that is a link to the secret, and the saved
    # file's stored copies replaced by links: a server that follows links leaks the secret.
    link_blob = run / "media" / "ab" / ("ab" + "0" * 62 + ".png")
    link_blob.parent.mkdir(parents=True, exist_ok=True)
    link_blob.symlink_to(secret)
    for stored in [run / "files" / "model.pt", *run.glob("files/.versions/*/model.pt")]:
        stored.unlink()
        stored.symlink_to(secret)
    return ui_root


def raw_get(url: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``GET target`` sent byte for byte (no client normalises ``..`` or decodes ``%2e``);
    HTTP/1.0, so the body comes whole, never chunked (a chunk boundary could split a secret)."""
    parts = urlsplit(url)
    lines = [f"GET {target} HTTP/1.0", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def _blob(run: Path) -> str:
    """The media path of the run's real image (``media/ab/<sha>.png``)."""
    (found,) = [p for p in (run / "media").glob("[0-9a-f][0-9a-f]/*.png") if not p.is_symlink()]
    return found.relative_to(run).as_posix()


UP = ["..", "%2e%2e", "%2E%2E", ".%2e", "%252e%252e", "..%2f..", "..%252f.."]
SLASH = ["/", "%2f", "%2F", "%252f", "\\", "%5c"]


def traversal_targets(blob: str) -> list[str]:
    """Every URL shape that names a file, with escapes spelled every way we know."""
    targets: list[str] = []
    for up in UP:
        for sl in SLASH:
            esc = sl.join([up] * 6)  # deep enough to reach / from any tmp dir
            outside = f"{esc}{sl}secret.txt"
            passwd = f"{esc}{sl}etc{sl}passwd"
            targets += [
                # run ids: project and id
                f"/api/v1/runs/{outside}",
                f"/api/v1/runs/{up}/{up}",
                f"/api/v1/runs/p/{outside}",
                f"/api/v1/runs/{up}{sl}{up}/r1",
                f"/api/v1/runs/p/{up}/series?key=loss",
                f"/api/v1/runs/{up}/r1/console",
                f"/api/v1/runs/p/{passwd}",
                f"/api/v1/group-series?run=p/{outside}&key=loss",
                f"/api/v1/group-series?run={up}/{up}&key=loss",
                f"/api/v1/runs?project={up}",
                f"/api/v1/runs?project={outside}",
                # file names
                f"/api/v1/runs/p/r1/files/{outside}",
                f"/api/v1/runs/p/r1/files/{passwd}",
                f"/api/v1/runs/p/r1/files/model.pt?version={outside}",
                # media blob paths and media keys
                f"/api/v1/runs/p/r1/blob/{outside}",
                f"/api/v1/runs/p/r1/blob/media/{outside}",
                f"/api/v1/runs/p/r1/blob/media/ab/{outside}",
                f"/api/v1/runs/p/r1/blob/{blob}{sl}{outside}",
                f"/api/v1/runs/p/r1/blob/media/ab/{up}{sl}{up}{sl}{up}{sl}{up}{sl}secret.txt",
                f"/api/v1/runs/p/r1/media?key={outside}",
                f"/api/v1/runs/p/r1/media?key=img&step={outside}",
                f"/api/v1/runs/p/r1/console?attempt={outside}",
                # the assets and the pages
                f"/static/{outside}",
                f"/static/{passwd}",
                f"/static/{up}{sl}app.py",
                f"/static/vendor/{up}{sl}{up}{sl}app.py",
                f"/{outside}",
                f"/runs/{outside}",
                f"/runs/p/{outside}",
                f"/compare?run={outside}",
            ]
    # absolute paths where a relative one is expected
    targets += [
        "/api/v1/runs/p/r1/files//etc/passwd",
        "/api/v1/runs/p/r1/files/%2fetc%2fpasswd",
        "/api/v1/runs/p/r1/blob//etc/passwd",
        "/api/v1/runs/p/r1/blob/%2fetc%2fpasswd",
        "/api/v1/runs/%2f/etc",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/api/v1/runs/p/r1%00/files/model.pt",
        "/api/v1/runs/p/r1/files/model.pt%00.txt",
    ]
    return targets


def test_no_url_reads_a_file_outside_the_root(planted: Path, ui_server) -> None:
    """Every traversal of the API or the assets is refused (4xx, never a 5xx crash); a page
    answers its index.html whatever its path; no answer holds a byte of the secret."""
    server = ui_server(planted)
    run = planted / "p" / "r1"
    blob = _blob(run)
    # the same raw requests do reach files that are meant to be served
    status, body = raw_get(server.url, f"/api/v1/runs/p/r1/blob/{blob}")
    assert status == 200 and body.startswith(b"\x89PNG"), (status, body[:100])
    status, body = raw_get(server.url, "/static/app.js")
    assert status == 200 and b"import" in body
    targets = traversal_targets(blob)
    leaks, crashes, accepted = [], [], []
    seen: dict[int, int] = {}
    for target in targets:
        status, body = raw_get(server.url, target)
        if any(s.encode() in body for s in (SECRET, PASSWD, SOURCE)):
            leaks.append(f"{status} {target}")
        if status >= 500:
            crashes.append(f"{status} {target}: {body[:200]!r}")
        # an API or asset URL naming an escape is refused; only pages (index.html) answer 200
        if target.startswith(("/api/", "/static/")) and not 400 <= status < 500:
            accepted.append(f"{status} {target}")
        seen[status] = seen.get(status, 0) + 1
    print(f"{len(targets)} traversal URLs tried; answers by status: {sorted(seen.items())}")
    assert not leaks, "files outside the root were served:\n" + "\n".join(leaks)
    assert not crashes, "traversals crashed the server:\n" + "\n".join(crashes[:20])
    assert not accepted, "traversals answered as if valid:\n" + "\n".join(accepted[:20])


def test_pages_naming_escapes_show_an_error_and_never_the_file(
    planted: Path, ui_server, page, console_errors
) -> None:
    """In the browser: a run page whose id names an escape is refused by the server (a 404
    for a path no route takes) or drawn with the API's refusal in ``div#error`` (400 or 404);
    never with anything of the secret."""
    console_errors.allow(r"status of 40[04]")  # the browser logs each refused fetch
    server = ui_server(planted)
    shown = 0
    for path in (
        "/runs/p/..%252f..%252f..%252fsecret.txt",
        "/runs/%252e%252e/%252e%252e",
        "/runs/..%5c..%5c..%5csecret.txt/x",
        "/runs/p/r1%00",
        "/runs/p/.hidden",
        "/runs/..%2F..%2F..%2Fsecret.txt/x",
        "/runs/p/r1%2F..%2F..%2F..%2Fsecret.txt",
    ):
        answer = page.goto(server.page_url(path))
        assert answer is not None
        if answer.status == 200:
            page.wait_for_selector("div#error:not([hidden])")
            status = page.get_attribute("div#error", "data-status")
            assert status in ("400", "404"), (path, status, page.inner_text("div#error"))
            shown += 1
        else:
            assert answer.status == 404, (path, answer.status)
        html = page.content()
        assert SECRET not in html and PASSWD not in html, path
    assert shown >= 5  # the API's refusals were drawn by the page, not only the router's 404


def test_links_planted_inside_a_run_are_not_followed(planted: Path, ui_server) -> None:
    """A media blob or a saved file that is a symbolic link out of the run is refused (the
    store opens run files with O_NOFOLLOW), while the run's real blob is served."""
    server = ui_server(planted)
    run = planted / "p" / "r1"
    with server.client() as http:
        real = http.get(f"/api/v1/runs/p/r1/blob/{_blob(run)}")
        assert real.status_code == 200, real.text
        assert real.content.startswith(b"\x89PNG")
        assert "immutable" in real.headers["cache-control"]
        link = http.get("/api/v1/runs/p/r1/blob/media/ab/ab" + "0" * 62 + ".png")
        saved = http.get("/api/v1/runs/p/r1/files/model.pt")
    for answer in (link, saved):
        assert SECRET not in answer.text
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert answer.json()["error"]  # a message, not a bare status


def test_run_names_are_checked_before_any_file_is_touched(ui_root: Path, ui_server) -> None:
    """An unknown run is a 404 naming it; names the store refuses are 400 or 404, with JSON."""
    make_run(ui_root, steps=3)
    server = ui_server(ui_root)
    with server.client() as http:
        missing = http.get("/api/v1/runs/p/nosuch")
        assert missing.status_code == 404
        assert "p/nosuch" in missing.json()["error"]
        for bad in ("/api/v1/runs/p/..", "/api/v1/runs/../p", "/api/v1/runs/p/.hidden"):
            status, body = raw_get(server.url, bad)
            assert status in (400, 404), (bad, status, body[:200])


# -- the token ----------------------------------------------------------------------------------

TOKEN = "t0ken-for-the-browser-test"


def test_ui_off_loopback_refuses_to_start_without_a_token(ui_root: Path) -> None:
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "localrun._cli",
            "ui",
            "--root",
            str(ui_root),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        env=child_env(ui_root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "LOCALRUN_TOKEN" in done.stderr


def test_a_token_protected_ui_refuses_without_the_token(ui_root: Path, ui_server) -> None:
    make_run(ui_root, steps=3)
    server = ui_server(ui_root, host="0.0.0.0", token=TOKEN)
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        assert anon.get("/api/v1/health").status_code == 200  # readiness probes only
        for path in ("/", "/runs/p/r1", "/static/app.js", "/api/v1/runs", "/api/v1/runs/p/r1"):
            refused = anon.get(path)
            assert refused.status_code == 401, path
            assert "token" in refused.json()["error"]
            assert TOKEN not in refused.text
        wrong = anon.get("/?token=not-it", follow_redirects=False)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    with httpx.Client(base_url=server.url, cookies={"localrun_token": "not-it"}) as forged:
        assert forged.get("/api/v1/runs").status_code == 401
    with server.client() as bearer:
        assert bearer.get("/api/v1/runs").status_code == 200


def test_token_login_sets_an_httponly_cookie_and_the_pages_work(
    ui_root: Path, ui_server, page
) -> None:
    """``?token=`` once: an HttpOnly SameSite=Strict cookie, a redirect without the token, and
    then the pages and their API calls work in the browser."""
    path = make_run(ui_root, steps=20)
    server = ui_server(ui_root, host="0.0.0.0", token=TOKEN)
    with httpx.Client(base_url=server.url, timeout=30) as anon:
        login = anon.get(f"/runs/{path}?token={TOKEN}&poll=300", follow_redirects=False)
    assert login.status_code == 303
    assert login.headers["location"] == f"/runs/{path}?poll=300"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie

    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(f"{server.url}/?token={TOKEN}&poll=300")
    assert page.url == f"{server.url}/?poll=300"  # the token left the address bar
    page.wait_for_selector(f'tr[data-run="{path}"]')
    (jar,) = page.context.cookies()
    assert jar["name"] == "localrun_token" and jar["httpOnly"] and jar["sameSite"] == "Strict"
    assert TOKEN not in page.evaluate("document.cookie")  # no script can read it
    page.goto(server.page_url(f"/runs/{path}"))
    page.wait_for_selector('div.chart[data-key="loss"][data-ready="1"]')
    wait_ready(page)
    assert not failed, failed


# -- no request leaves the server's origin --------------------------------------------------------


def test_no_page_requests_anything_but_its_own_server(ui_root: Path, ui_server, page) -> None:
    """Every request of the runs, run and compare pages (assets, API, images) goes to the
    server's own origin; anything else is recorded and aborted (an offline cluster would hang
    on it)."""
    a = make_resumed_run(ui_root, run_id="a", kill_at=10, steps=20)
    b = make_run(ui_root, run_id="b", steps=20, config={"lr": 0.1})
    server = ui_server(ui_root)
    origin = server.url
    seen: list[str] = []
    foreign: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        if url.startswith(origin + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    page.route("**/*", guard)
    page.on("request", lambda r: seen.append(r.url))
    for target in ("/", f"/runs/{a}", f"/compare?run={a}&run={b}"):
        page.goto(server.page_url(target))
        wait_ready(page)
    assert seen, "the pages made no request at all"
    outside = [u for u in seen if not u.startswith((origin + "/", "data:", "blob:"))]
    assert not outside and not foreign, outside + foreign
    assert any("/api/v1/" in u for u in seen) and any("/static/" in u for u in seen)
