"""The dashboard in headless Chromium: from navigation to drawn charts, against a static floor.

Run: .venv/bin/python benchmarks/bench_ui.py (needs Debian's chromium: .ci/install-browser)
Scale with BENCH_UI_REPEAT (visits measured per page, default 5). BENCH_DIR picks the folder
the runs go in (default /dev/shm where it exists: writing 10,000 runs' manifests with their
fsyncs on a disk takes minutes, and the timed part reads them through the page cache anyway).

Three pages, each timed from navigation start to ``performance.mark("localrun:drawn")`` (the
page marks it once its first data is drawn, all charts, and sets ``body[data-ready="1"]``),
every visit in a fresh browser context (nothing cached but what the server keeps):

1. a run page of one run of 1,000,000 steps x 5 metrics (target: under 1 s);
2. a compare page of 20 runs x 5 metrics x 100,000 steps (target: under 2 s);
3. the runs page of a root of 10,000 runs (target: under 1 s).

The floor of each is the same page with the same static assets whose API answers were
recorded once from the real server and are then served as precomputed JSON by a tiny static
server (no query, no downsampling, no file read): what the browser alone costs. The difference
is what ``localrun ui`` adds.

The runs are written directly through localrun's store (one Parquet segment and a manifest
each, like bench_sync.py): logging 10^7 rows through ``log()`` would time the logger, not the
dashboard. The 10,000 runs of the runs page have a config and a summary but no rows (the runs
page reads manifests only).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from _table import print_table

from localrun._store import manifest as mf
from localrun._store import revisions, segments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ui.chromium import CHROMIUM, CHROMIUM_ARGS

STATIC = Path(__file__).resolve().parents[1] / "localrun" / "_server" / "static"
TITLE = "Dashboard in headless Chromium (bench_ui.py)"
REPEAT = int(os.environ.get("BENCH_UI_REPEAT", "5"))
COMPLETE: list[float] = []  # the runs page's visits: ms to its whole list, in visit order
METRICS = ["loss", "acc", "lr", "grad_norm", "val_loss"]
URL_LINE = re.compile(r" at (http://\S+) \(")
MIME = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
}


# -- the runs ---------------------------------------------------------------------------------


def curves(steps: int, seed: int) -> dict[str, pa.Array]:
    """Five noisy training curves (noise and spikes: downsampling has something to keep)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float64)
    decay = 1.0 / (1.0 + t / max(steps / 20, 1))
    values = {
        "loss": decay + 0.05 * rng.standard_normal(steps),
        "acc": 1.0 - decay + 0.02 * rng.standard_normal(steps),
        "lr": 1e-3 * np.cos(np.pi * t / (2 * steps)),
        "grad_norm": np.abs(rng.standard_cauchy(steps)).clip(0, 100),
        "val_loss": decay * 1.1 + 0.03 * rng.standard_normal(steps),
    }
    return {k: pa.array(v, pa.float64()) for k, v in values.items()}


def write_run(
    root: Path,
    project: str,
    run_id: str,
    steps: int,
    seed: int = 0,
    config: dict[str, Any] | None = None,
) -> None:
    """One finished run of ``steps`` rows of :data:`METRICS` (none: a manifest only), written
    through the store as a run's one segment and its manifest."""
    run_dir = root / project / run_id
    run_dir.mkdir(parents=True)
    m = mf.new(project, run_id, config=config or {})
    m["schema"] = dict.fromkeys(METRICS, "number")
    m["state"] = "finished"
    started = 1.7e9 + seed * 10
    m["attempts"] = [
        {
            "attempt": 1,
            "host": "bench",
            "pid": 1000 + seed,
            "started": started,
            "ended": started + steps * 0.01,
            "state": "finished",
            "exit_code": 0,
        }
    ]
    if steps:
        step = pa.array(np.arange(steps, dtype=np.int64))
        clock = pa.array(started + np.arange(steps, dtype=np.float64) * 0.01)
        cols: dict[str, pa.Array] = {
            "_step": step,
            "_timestamp": clock,
            "_runtime": pa.array(np.arange(steps) * 0.01),
        }
        cols.update(curves(steps, seed))
        m["segments"] = [segments.write(run_dir, 1, 0, pa.table(cols), {"config": {}})]
        m["summary"] = {k: float(cols[k][-1].as_py()) for k in METRICS}
        m["last_step"] = steps - 1
    else:
        rng = np.random.default_rng(seed)
        m["summary"] = {"loss": float(rng.random()), "acc": float(rng.random())}
    revisions.publish(run_dir, 0, m)
    revisions.write_copy(run_dir, m)


def make_roots(work: Path) -> dict[str, tuple[Path, str]]:
    """The three roots and the page (path + query) to open on each."""
    one, cmp_, many = work / "one", work / "compare", work / "many"
    for root in (one, cmp_, many):
        mf.ensure_root(root)
    write_run(one, "big", "r1", 1_000_000)
    for i in range(20):
        write_run(
            cmp_, "cmp", f"r{i:02d}", 100_000, seed=i, config={"lr": 10 ** -(i % 4), "seed": i}
        )
    for i in range(10_000):
        config = {"lr": 10 ** -(i % 5), "batch": 2 ** (i % 7), "opt": ["adam", "sgd"][i % 2]}
        write_run(many, f"p{i % 10}", f"r{i:05d}", 0, seed=i, config=config)
    compare = "/compare?" + "&".join(f"run=cmp/r{i:02d}" for i in range(20))
    return {
        "run page, 1e6 steps x 5 metrics": (one, "/runs/big/r1"),
        "compare, 20 runs x 5 metrics x 1e5 steps": (cmp_, compare),
        "runs page, 10,000 runs": (many, "/"),
    }


# -- the servers ------------------------------------------------------------------------------


def start_ui(root: Path) -> tuple[subprocess.Popen[str], str]:
    """``localrun ui`` on a free loopback port; returns once it printed its URL."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "localrun._cli", "ui", "--root", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    found = URL_LINE.search(line)
    if not found:
        proc.kill()
        raise SystemExit(f"localrun ui did not start: {line!r}")
    return proc, found[1]


class Recorded(BaseHTTPRequestHandler):
    """The floor: the assets from ``static/``, every page as ``index.html``, and the API's
    answers as they were recorded (path + query -> bytes), nothing computed."""

    protocol_version = "HTTP/1.1"
    answers: ClassVar[dict[str, tuple[int, str, bytes]]] = {}
    misses: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if self.path in self.answers:
            status, ctype, body = self.answers[self.path]
        elif path.startswith("/static/") and ".." not in path:
            file = STATIC / path[len("/static/") :]
            status, ctype = (200, MIME.get(file.suffix, "application/octet-stream"))
            body = file.read_bytes() if file.is_file() else b""
            status = 200 if file.is_file() else 404
        elif path.startswith("/api/"):
            self.misses.append(self.path)
            status, ctype, body = 404, "application/json", b'{"error": "not recorded"}'
        else:
            status, ctype, body = 200, MIME[".html"], (STATIC / "index.html").read_bytes()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Quiet(ThreadingHTTPServer):
    """Chromium drops its idle keep-alive connections when a context closes: not an error."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def start_floor() -> tuple[ThreadingHTTPServer, str]:
    server = Quiet(("127.0.0.1", 0), Recorded)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# -- the browser ------------------------------------------------------------------------------


def visit(browser: Any, url: str, record: dict[str, tuple[int, str, bytes]] | None = None) -> float:
    """Open ``url`` in a fresh context; ms from navigation start to the page's drawn mark.

    With ``record``, every API answer the page got is stored in it (path + query -> answer).
    The runs page marks "drawn" at its first rows, which may be the runs a server still
    reading a root has read so far; :data:`COMPLETE` gets the time its whole list was drawn.
    """
    from urllib.parse import urlsplit

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    pending: list[Any] = []
    if record is not None:
        page.on("response", lambda r: pending.append(r) if "/api/v1/" in r.url else None)
    try:
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=120_000)
        drawn = page.evaluate(
            "performance.getEntriesByName('localrun:drawn').map(e => e.startTime)"
        )
        if page.evaluate("location.pathname") == "/":
            page.wait_for_function("document.body.dataset.complete === '1'", timeout=120_000)
            whole = page.evaluate(
                "performance.getEntriesByName('localrun:complete').map(e => e.startTime)"
            )
            COMPLETE.append(float(whole[0]))
        if errors:
            raise SystemExit(f"{url}: JavaScript errors: {errors}")
        if not drawn:
            raise SystemExit(f"{url}: the page never marked localrun:drawn")
        for r in pending:
            if r.status == 200:
                parts = urlsplit(r.url)
                key = parts.path + (f"?{parts.query}" if parts.query else "")
                record[key] = (200, r.headers.get("content-type", "application/json"), r.body())  # type: ignore[index]
        return float(drawn[0])
    finally:
        context.close()


def warm_up(browser: Any, floor_url: str) -> None:
    """A browser's first page costs it several hundred ms of its own (a user's browser has paid
    them long before): loaded once, from the floor's static files (its API answers nothing
    yet), before anything is measured, so a first visit times the server's first answers."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(floor_url + "/", wait_until="load")
        page.wait_for_timeout(500)
    finally:
        context.close()


def measure(browser: Any, base: str, page_path: str) -> tuple[float, float, float, str]:
    """(first visit, median, best) ms over :data:`REPEAT` visits after the first, and for the
    runs page when its first visit drew the whole list, if its first rows came before (the
    server was still reading the root: they are the runs read so far)."""
    COMPLETE.clear()
    first = visit(browser, base + page_path)
    whole = COMPLETE[0] if COMPLETE else first
    times = [visit(browser, base + page_path) for _ in range(REPEAT)]
    later = f", the whole list at {fmt(whole)}" if whole > first + 1 else ""
    return first, statistics.median(times), min(times), later


def fmt(ms: float) -> str:
    return f"{ms:,.0f} ms" if not math.isnan(ms) else "n/a"


def main() -> None:
    if not Path(CHROMIUM).exists():
        note = f"{CHROMIUM} missing: run .ci/install-browser"
        print_table(TITLE, [("dashboard: navigation to drawn", "n/a", note)])
        return
    from playwright.sync_api import sync_playwright

    targets = {"run page": 1000.0, "compare": 2000.0, "runs page": 1000.0}
    default_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="bench-ui-", dir=os.environ.get("BENCH_DIR", default_dir)))
    rows: list[tuple[str, str, str]] = []
    floor, floor_url = start_floor()
    procs: list[subprocess.Popen[str]] = []
    try:
        print(f"writing the runs under {work} ...", flush=True)
        pages = make_roots(work)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            warm_up(browser, floor_url)
            for label, (root, page_path) in pages.items():
                proc, url = start_ui(root)
                procs.append(proc)
                print(f"{label}: {url}{page_path[:60]}", flush=True)
                first, median, best, whole = measure(browser, url, page_path)
                Recorded.answers.clear()
                Recorded.misses.clear()
                visit(browser, url + page_path, record=Recorded.answers)
                f_first, f_median, f_best, _ = measure(browser, floor_url, page_path)
                missed = sorted(set(Recorded.misses))
                target = next(v for k, v in targets.items() if label.startswith(k))
                verdict = "meets" if median < target else "MISSES"
                rows.append(
                    (
                        f"{label}: navigation to drawn",
                        fmt(median),
                        f"median of {REPEAT} (best {fmt(best)}, first visit {fmt(first)}{whole}); {verdict} the target < {target / 1000:g} s",
                    )
                )
                note = (
                    f"median of {REPEAT} (best {fmt(f_best)}, first visit {fmt(f_first)}): "
                    "the same page, API answers precomputed"
                )
                if missed:
                    note += f"; {len(missed)} API URLs not recorded, e.g. {missed[0][:80]}"
                rows.append((f"{label}: floor (static JSON)", fmt(f_median), note))
                proc.terminate()
                proc.wait(timeout=30)
                if label.startswith("runs page"):
                    # A server started again on the same root: it starts from the runs page
                    # file the last one saved (.runs-page.json) instead of reading every run.
                    proc, url = start_ui(root)
                    procs.append(proc)
                    again, _, _, whole = measure(browser, url, page_path)
                    rows.append(
                        (
                            f"{label}: first visit, server restarted",
                            fmt(again),
                            f"against {fmt(first)} for the first server on this root{whole}",
                        )
                    )
                    proc.terminate()
                    proc.wait(timeout=30)
            browser.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        floor.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print_table(f"{TITLE} (load average {load})", rows)


if __name__ == "__main__":
    main()
