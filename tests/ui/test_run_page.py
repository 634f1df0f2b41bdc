"""The run page (/runs/p/id) in headless Chromium: what a user sees of one run.

The module's root holds ``p/rich``, written by two real processes: the first (host node-a)
prints a line, saves ``model.txt``, logs images (6 px high, 10+step px wide), histograms and
tables for steps 0..2 and is SIGKILLed (the node is preempted); the second (host node-b)
resumes it, prints, saves a second version of ``model.txt``, logs steps 3..5 and finishes.
And ``z/broken``, a run whose revisions were overwritten (damaged).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_py
from tests.ui.conftest import (
    UiServer,
    child_code,
    make_run,
    start_ui,
    start_writer,
    wait_ready,
)

STEP_CODE = """
for step in range({start}, {stop}):
    run.log({{"loss": 1 / (step + 1),
             "samples": localrun.Image(np.full((6, 10 + step, 3), step * 40, np.uint8),
                                       caption=f"s{{step}}"),
             "weights": localrun.Histogram(np_histogram=([1, 2 + step, 3], [0.0, 1.0, 2.0, 3.0])),
             "preds": localrun.Table(columns=["x", "y"], data=[[step, "a"], [step + 1, "b"]])}})
"""

FIRST = """
import os, signal, numpy as np, localrun
run = localrun.init(project="p", id="rich", name="rich run", resume="allow",
                    config={{"opt": {{"name": "adam", "lr": 0.01}}, "batch": 32}},
                    notes="a run with everything", tags=["demo"], group="g")
print("hello from attempt one", flush=True)
open({model!r}, "w").write("weights v1")
run.save({model!r})
{steps}
run.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""

SECOND = """
import numpy as np, localrun
run = localrun.init(project="p", id="rich", resume="allow")
print("hello from attempt two", flush=True)
open({model!r}, "w").write("weights v2, longer")
run.save({model!r})
{steps}
run.summary["final"] = 0.125
run.finish()
"""


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("run-page")
    root = base / "runs"
    root.mkdir()
    model = str(base / "model.txt")
    first = FIRST.format(model=model, steps=STEP_CODE.format(start=0, stop=3))
    killed = run_py(child_code(first, "node-a"), root, timeout=120, LOCALRUN_LEASE_TTL="1")
    assert killed.returncode == -9, killed.stderr[-2000:]
    second = SECOND.format(model=model, steps=STEP_CODE.format(start="run.step", stop=6))
    done = run_py(child_code(second, "node-b"), root, timeout=120, LOCALRUN_LEASE_TTL="1")
    assert done.returncode == 0, done.stderr[-2000:]
    make_run(root, "z", "broken", steps=2)
    for rev in (root / "z" / "broken" / "log").iterdir():
        rev.write_text("{not json")
    return root


@pytest.fixture
def ui(run_root: Path) -> UiServer:
    return start_ui(run_root)


def open_run(page: Any, ui: UiServer, path: str = "p/rich") -> None:
    page.goto(ui.page_url(f"/runs/{path}"))
    wait_ready(page)


def kv(page: Any, table: str) -> dict[str, str]:
    """A config/summary table as {dotted key: shown value}."""
    rows = page.eval_on_selector_all(
        f"table#{table} tr[data-key]",
        "rs => rs.map(r => [r.dataset.key, r.cells[1].textContent])",
    )
    return dict(rows)


def test_overview_shows_config_summary_notes_and_state(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    head = page.inner_text("h1")
    assert "rich run" in head and "finished" in head
    config = kv(page, "config")
    assert config["opt.name"] == "adam" and config["opt.lr"] == "0.01"
    assert config["batch"] == "32"
    summary = kv(page, "summary")
    assert summary["final"] == "0.125"
    overview = page.inner_text("section#overview")
    assert "a run with everything" in overview
    assert page.locator("div#damaged").is_hidden()


def test_the_first_draw_asks_for_the_runs_details_once(page: Any, ui: UiServer) -> None:
    """The page hands the details it fetched to its charts: asking again costs a round trip
    before the first chart (over an ``ssh -L`` tunnel, the network's)."""
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/v1/" in r.url else None)
    page.goto(ui.page_url("/runs/p/rich", poll=60_000))
    wait_ready(page)
    details = [u for u in asked if u.split("?")[0].endswith("/api/v1/runs/p/rich")]
    assert len(details) == 1, asked
    assert any("/api/v1/runs/p/rich/series?" in u for u in asked), asked
    assert page.locator("#metrics div.chart[data-ready='1']").count() >= 1


def test_chart_settings_stay_in_the_address_and_a_reload_keeps_them(
    page: Any, ui: UiServer
) -> None:
    """Smoothing, log scale, x axis and metric filter are in the run page's URL (as on the
    compare page): a reload or a link shows the charts as they looked."""
    from tests.ui.test_charts import SET_INPUT, chart, redraw_after

    page.goto(ui.page_url("/runs/p/rich"))
    wait_ready(page)
    redraw_after(page, "loss", SET_INPUT, ["#smoothing", "0.6"])
    redraw_after(page, "loss", SET_INPUT, ["#logscale", True])
    assert "smoothing=0.6" in page.url and "log=1" in page.url and "poll=" in page.url
    page.reload()
    wait_ready(page)
    assert page.input_value("#smoothing") == "0.6" and page.is_checked("#logscale")
    assert chart(page, "loss")["raw"] == "1"  # drawn smoothed, with the raw curve under it
    assert page.evaluate("window.__localrunCharts[0].plot('loss').scales.y.distr") == 3


def test_attempts_table_of_a_preempted_and_resumed_run(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    first = page.locator("section#attempts tr[data-attempt='1']")
    second = page.locator("section#attempts tr[data-attempt='2']")
    assert first.locator("td[data-col=host]").inner_text() == "node-a"
    assert first.locator("td[data-col=state]").inner_text().strip() == "crashed"
    assert second.locator("td[data-col=host]").inner_text() == "node-b"
    assert second.locator("td[data-col=state]").inner_text().strip() == "finished"
    assert second.locator("td[data-col=exit_code]").inner_text().strip() == "0"
    assert first.locator("td[data-col=first_step]").inner_text().strip() == "0"
    assert second.locator("td[data-col=first_step]").inner_text().strip() == "3"
    for row in (first, second):  # each attempt's process and times
        assert row.locator("td[data-col=pid]").inner_text().strip().isdigit()
        for col in ("started", "ended"):
            assert row.locator(f"td[data-col={col}]").inner_text().strip() not in ("", "—")
    # the timeline: one bar per attempt on a shared time axis; the first ends (the last commit
    # of the killed process) before the second starts
    bars = page.locator("section#attempts .timeline .bar")
    assert bars.count() == 2
    a = bars.nth(0).bounding_box()
    b = bars.nth(1).bounding_box()
    assert a is not None and b is not None
    assert a["x"] < b["x"] and a["x"] + a["width"] <= b["x"] + 1


def natural_width(page: Any) -> int:
    return int(
        page.eval_on_selector(
            "div.media[data-key=samples] img", "i => i.complete ? i.naturalWidth : -1"
        )
    )


def test_media_image_and_its_step_slider(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    panel = page.locator("div.media[data-key=samples]")
    slider = panel.locator("input.step-slider")
    assert slider.get_attribute("max") == "5"
    assert slider.input_value() == "5"  # the newest step first
    page.wait_for_function(
        "() => { const i = document.querySelector('div.media[data-key=samples] img');"
        " return i && i.complete && i.naturalWidth === 15; }"
    )
    assert page.eval_on_selector("div.media[data-key=samples] img", "i => i.naturalHeight") == 6
    slider.fill("0")
    page.wait_for_function(
        "() => { const i = document.querySelector('div.media[data-key=samples] img');"
        " return i && i.complete && i.naturalWidth === 10; }"
    )
    assert "s0" in panel.inner_text()
    slider.fill("3")
    page.wait_for_function(
        "() => { const i = document.querySelector('div.media[data-key=samples] img');"
        " return i && i.complete && i.naturalWidth === 13; }"
    )
    # the histogram is drawn (3 bars) and the table shows the step's rows
    assert page.get_attribute("div.media[data-key=weights] canvas", "data-bars") == "3"
    canvas = page.locator("div.media[data-key=weights] canvas")
    box = canvas.bounding_box()
    assert box is not None
    canvas.hover(position={"x": 34 + (box["width"] - 40) / 2, "y": box["height"] / 2})
    assert canvas.get_attribute("title") == "[1, 2): 7"  # the middle bin of step 5
    cells = page.eval_on_selector_all(
        "div.media[data-key=preds] tbody td", "cs => cs.map(c => c.textContent)"
    )
    assert cells == ["5", "a", "6", "b"]


def test_files_list_versions_and_download_their_bytes(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    links = page.locator("section#files a.download")
    assert links.count() == 2
    got = []
    for i in range(2):
        with page.expect_download() as info:
            links.nth(i).click()
        download = info.value
        assert download.suggested_filename == "model.txt"
        got.append(Path(download.path()).read_bytes())
    assert got == [b"weights v2, longer", b"weights v1"]  # newest first


def test_console_of_each_attempt(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    page.wait_for_function(
        "() => document.querySelector('pre#console-text').textContent.includes('attempt two')"
    )
    both = page.inner_text("pre#console-text")
    assert "hello from attempt one" in both and "hello from attempt two" in both
    assert both.index("attempt one") < both.index("attempt two")
    page.select_option("select#console-attempt", "1")
    page.wait_for_function(
        "() => !document.querySelector('pre#console-text').textContent.includes('attempt two')"
    )
    assert "hello from attempt one" in page.inner_text("pre#console-text")
    page.select_option("select#console-attempt", "2")
    page.wait_for_function(
        "() => document.querySelector('pre#console-text').textContent.includes('attempt two')"
    )
    assert "hello from attempt one" not in page.inner_text("pre#console-text")


def test_an_unknown_run_shows_the_404_message(page: Any, ui: UiServer, console_errors: Any) -> None:
    console_errors.allow(r"status of 404")  # the browser logs the failed fetch
    page.goto(ui.page_url("/runs/p/nope"))
    page.wait_for_selector("div#error:not([hidden])")
    assert page.get_attribute("div#error", "data-status") == "404"
    assert "no run p/nope" in page.inner_text("div#error")
    assert "nope" in page.inner_text("h1")


def test_an_unknown_runs_page_backs_off_and_shows_the_run_once_it_appears(
    ui_root: Path, page: Any, console_errors: Any
) -> None:
    """A page opened before its run exists (a link shared before the job started) polls with a
    doubling wait, not every period forever, and draws the run once it is there."""
    console_errors.allow(r"status of 404")
    code = """
        import sys, localrun
        with localrun.init(project="p", id=sys.argv[1], console=False, system_metrics=False) as run:
            run.log({"loss": 0.5})
        """
    first = run_py(code.replace("sys.argv[1]", "'first'"), ui_root)
    assert first.returncode == 0, first.stderr
    server = start_ui(ui_root)
    asked: list[float] = []
    page.on(
        "request",
        lambda r: asked.append(time.monotonic()) if r.url.split("?")[0].endswith("/p/later") else 0,
    )
    page.goto(server.page_url("/runs/p/later", poll=100))
    page.wait_for_selector('div#error[data-status="404"]')
    page.wait_for_timeout(3500)  # (not time.sleep: playwright delivers events while it waits)
    # Every 100 ms that is 35 requests; doubling (100, 200, ... up to 1.6 s) about 6.
    assert 3 <= len(asked) <= 10, asked
    done = run_py(code.replace("sys.argv[1]", "'later'"), ui_root)
    assert done.returncode == 0, done.stderr
    page.wait_for_function(
        "() => document.querySelector('h1').textContent.includes('later')"
        " && document.querySelector('div#error').hidden",
        timeout=20_000,
    )


def test_a_damaged_run_shows_its_problem_and_the_page_works(page: Any, ui: UiServer) -> None:
    open_run(page, ui, "z/broken")
    damaged = page.locator("div#damaged")
    assert damaged.is_visible()
    assert "not valid JSON" in damaged.inner_text()
    assert "damaged" in page.inner_text("h1")
    assert page.locator("div#error").is_hidden()
    # the rest of the page is there: its sections and a way back
    for section in ("overview", "attempts", "files", "console"):
        assert page.locator(f"section#{section}").count() == 1
    page.click("header a.brand")
    page.wait_for_url(re.compile(r"/(\?.*)?$"))
    wait_ready(page)
    assert page.locator("tr[data-run='z/broken'][data-state=damaged]").count() == 1


def test_system_charts_open_on_demand_and_stay_open(page: Any, ui: UiServer) -> None:
    open_run(page, ui)
    assert page.locator("section#system div.chart").count() == 0  # closed by default
    toggle = page.locator("button#system-toggle")
    assert toggle.get_attribute("aria-expanded") == "false"
    wanted = int(re.search(r"\d+", toggle.inner_text())[0])  # "show N charts"
    assert wanted > 0
    toggle.click()
    page.wait_for_function(
        "n => { const cs = document.querySelectorAll('section#system div.chart');"
        " return cs.length === n && [...cs].every(c => c.dataset.ready === '1'); }",
        arg=wanted,
    )
    assert toggle.get_attribute("aria-expanded") == "true"
    page.reload()
    wait_ready(page)
    assert page.locator("section#system div.chart").count() == wanted  # remembered
    page.click("button#system-toggle")
    page.wait_for_function("() => !document.querySelector('section#system div.chart')")


def console_at_end(page: Any) -> bool:
    return bool(
        page.eval_on_selector(
            "pre#console-text", "p => p.scrollTop + p.clientHeight >= p.scrollHeight - 8"
        )
    )


def test_console_follows_a_running_run_unless_scrolled_up(
    ui_root: Path, page: Any, tmp_path: Path
) -> None:
    writer = start_writer(ui_root, tmp_path / "go", run_id="talks")
    writer.advance(5)
    server = start_ui(ui_root)
    page.goto(server.page_url("/runs/p/talks"))
    wait_ready(page)
    page.wait_for_function(
        "() => document.querySelector('pre#console-text').textContent.includes('committed 5')"
    )
    writer.advance(80)  # far more lines than the console box shows
    page.wait_for_function(
        "() => document.querySelector('pre#console-text').textContent.includes('committed 85')"
    )
    assert console_at_end(page)  # followed the end
    page.eval_on_selector("pre#console-text", "p => { p.scrollTop = 0; }")
    writer.advance(5)
    page.wait_for_function(
        "() => document.querySelector('pre#console-text').textContent.includes('committed 90')"
    )
    assert page.eval_on_selector("pre#console-text", "p => p.scrollTop") == 0  # left to read
    writer.finish()
