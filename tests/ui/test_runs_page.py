"""The runs page (/) in headless Chromium: what a user sees in the table of runs.

One root for the module, written by real processes: 40 runs of a sweep (project ``p``), a
failed run, a preempted run (SIGTERM), a crashed run (SIGKILL, never resumed), a run SIGKILLed
and resumed on another host (two attempts) and a damaged run (its revisions overwritten).
Each test starts its own ``localrun ui`` on it (the conftest reaper ends it after the test).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import run_py
from tests.ui.conftest import UiServer, child_code, make_resumed_run, make_run, start_ui, wait_ready

SWEEP = 40
DASH = "\u2013"  # the pager's "1\u201320 of 40"

SWEEP_CODE = f"""
import localrun
for i in range({SWEEP}):
    run = localrun.init(project="p", id=f"run-{{i:02d}}", name=f"sweep-{{i}}",
                        config={{"lr": i / 100, "opt": {{"name": "adam" if i % 2 else "sgd"}}}},
                        tags=["sweep"] + (["odd"] if i % 2 else []), group="g1")
    for step in range(i + 1):
        run.log({{"loss": 1.0 / (step + 1)}})
    run.summary["best"] = 100 - i
    run.finish()
"""

PREEMPTED = """
import os, signal, time, localrun
run = localrun.init(project="q", id="pre")
run.log({"loss": 1.0})
run.flush()
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""

CRASHED = """
import os, signal, localrun
run = localrun.init(project="q", id="crash")
run.log({"loss": 1.0})
run.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs-page") / "runs"
    root.mkdir()
    done = run_py(SWEEP_CODE, root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    make_run(root, "q", "fail", steps=3, exit_code=1)
    pre = run_py(PREEMPTED, root, timeout=120)
    assert pre.returncode != 0, pre.stderr[-2000:]
    crash = run_py(child_code(CRASHED), root, timeout=120, LOCALRUN_LEASE_TTL="1")
    assert crash.returncode == -9, crash.stderr[-2000:]
    make_resumed_run(root, "q", "resumed", kill_at=5, steps=10)
    make_run(root, "z", "broken", steps=2)
    for rev in (root / "z" / "broken" / "log").iterdir():
        rev.write_text("{not json")
    time.sleep(1.5)  # the crashed run's 1 s lease has expired: readers call it crashed
    return root


@pytest.fixture
def ui(runs_root: Path) -> UiServer:
    return start_ui(runs_root)


def open_runs(page: Any, ui: UiServer, **params: str) -> None:
    page.goto(ui.page_url("/", **params))
    wait_ready(page)


def shown(page: Any) -> list[str]:
    """The run paths of the table's rows, top to bottom."""
    return page.eval_on_selector_all("table#runs tr[data-run]", "rs => rs.map(r => r.dataset.run)")


def column(page: Any, col: str) -> list[str]:
    return page.eval_on_selector_all(
        f"table#runs tr[data-run] td[data-col='{col}']", "cs => cs.map(c => c.textContent.trim())"
    )


def wait_rows(page: Any, n: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('table#runs tr[data-run]').length === n", arg=n
    )


def row(page: Any, path: str) -> Any:
    return page.locator(f"table#runs tr[data-run='{path}']")


def test_states_attempts_and_a_damaged_run_are_shown(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="q")
    assert sorted(shown(page)) == ["q/crash", "q/fail", "q/pre", "q/resumed"]
    for path, state in [
        ("q/pre", "preempted"),
        ("q/crash", "crashed"),
        ("q/fail", "failed"),
        ("q/resumed", "finished"),
    ]:
        assert row(page, path).get_attribute("data-state") == state
        assert row(page, path).locator("td[data-col=state]").inner_text().strip() == state
    assert row(page, "q/resumed").locator("td[data-col=attempts]").inner_text().strip() == "2"
    assert row(page, "q/pre").locator("td[data-col=attempts]").inner_text().strip() == "1"

    page.select_option("select#project", "z")
    page.wait_for_selector("table#runs tr[data-run='z/broken']")
    broken = row(page, "z/broken")
    assert broken.get_attribute("data-state") == "damaged"
    assert "not valid JSON" in broken.locator("td[data-col=problem]").inner_text()
    assert "project=z" in page.url


def test_a_column_header_sorts_and_toggles_the_order(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="p", sort="id", order="asc")
    assert shown(page)[0] == "p/run-00"
    page.click("th[data-sort=last_step]")
    page.wait_for_function("() => location.search.includes('sort=last_step')")
    page.wait_for_function(
        "() => document.querySelector('table#runs tr[data-run]').dataset.run === 'p/run-39'"
    )
    steps = [int(s) for s in column(page, "last_step")]
    assert steps == sorted(steps, reverse=True) and steps[0] == SWEEP - 1
    assert page.get_attribute("th[data-sort=last_step]", "aria-sort") == "descending"

    page.click("th[data-sort=last_step]")
    page.wait_for_function("() => location.search.includes('order=asc')")
    page.wait_for_function(
        "() => document.querySelector('table#runs tr[data-run]').dataset.run === 'p/run-00'"
    )
    steps = [int(s) for s in column(page, "last_step")]
    assert steps == sorted(steps) and steps[0] == 0
    assert page.get_attribute("th[data-sort=last_step]", "aria-sort") == "ascending"


def test_search_narrows_as_you_type_and_the_link_reproduces_it(page: Any, ui: UiServer) -> None:
    open_runs(page, ui)
    assert len(shown(page)) == SWEEP + 5  # every run of the root fits on the first page
    page.fill("input#search", "sweep-1")
    # sweep-1 and sweep-10..19: the name's substring, case-insensitive, on the server
    wait_rows(page, 11)
    assert sorted(shown(page)) == sorted(["p/run-01"] + [f"p/run-{i}" for i in range(10, 20)])
    page.wait_for_function("() => new URLSearchParams(location.search).get('q') === 'sweep-1'")

    link = page.url
    page.goto("about:blank")
    page.goto(link)
    wait_ready(page)
    assert page.input_value("input#search") == "sweep-1"
    assert len(shown(page)) == 11

    page.fill("input#search", "SWEEP-5")
    wait_rows(page, 1)
    assert shown(page) == ["p/run-05"]
    page.fill("input#search", "no run is called this")
    wait_rows(page, 0)
    assert "No runs match" in page.inner_text("table#runs")


def test_paging_counts_and_buttons(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="p", limit="20", sort="id", order="asc")
    total = SWEEP  # project p holds the sweep only
    assert page.inner_text("#count") == f"1{DASH}20 of {total}"
    first = shown(page)
    assert first == [f"p/run-{i:02d}" for i in range(20)]
    assert page.is_disabled("button#prev") and not page.is_disabled("button#next")

    page.click("button#next")
    page.wait_for_function("t => document.querySelector('#count').textContent.startsWith('21')")
    assert page.inner_text("#count") == f"21{DASH}40 of {total}"
    assert shown(page) == [f"p/run-{i:02d}" for i in range(20, 40)]
    assert "page=2" in page.url
    assert page.is_disabled("button#next")

    page.click("button#prev")
    page.wait_for_function(
        "d => document.querySelector('#count').textContent.startsWith('1' + d)", arg=DASH
    )
    assert shown(page) == first
    assert page.is_disabled("button#prev")


def test_state_filter_and_value_filter(page: Any, ui: UiServer) -> None:
    open_runs(page, ui)
    page.click("details#state > summary")
    page.check("details#state input[value=preempted]")
    page.wait_for_function("() => location.search.includes('state=preempted')")
    wait_rows(page, 1)
    assert shown(page) == ["q/pre"]
    # several states at once: the runs to look at after a night of preemptions
    page.check("details#state input[value=crashed]")
    wait_rows(page, 2)
    assert sorted(shown(page)) == ["q/crash", "q/pre"]
    assert parse_qs(urlparse(page.url).query)["state"] == ["preempted", "crashed"] or parse_qs(
        urlparse(page.url).query
    )["state"] == ["crashed", "preempted"]
    assert page.inner_text("details#state > summary").strip() == "crashed, preempted"
    page.reload()  # the URL holds the view: the same two states, ticked
    wait_ready(page)
    wait_rows(page, 2)
    assert page.is_checked("details#state input[value=crashed]")
    assert not page.is_checked("details#state input[value=failed]")
    page.click("details#state > summary")
    page.click("details#state #all-states")
    wait_rows(page, SWEEP + 5)  # every run: the sweep, q/* and z/broken
    assert "state=" not in page.url
    page.fill("input#where", "config.lr>=0.35")
    page.press("input#where", "Enter")
    wait_rows(page, 5)
    assert sorted(shown(page)) == [f"p/run-{i}" for i in range(35, 40)]
    assert parse_qs(urlparse(page.url).query)["where"] == ["config.lr>=0.35"]


def test_a_config_column_can_be_added_and_sorts(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="p", col="-")
    assert page.locator("th[data-sort='summary.best']").count() == 0
    page.select_option("select#add-column", "summary.best")
    page.wait_for_selector("th[data-sort='summary.best']")
    page.click("th[data-sort='summary.best']")
    page.wait_for_function("() => location.search.includes('sort=summary.best')")
    page.wait_for_function(
        "() => document.querySelector('table#runs tr[data-run]').dataset.run === 'p/run-00'"
    )
    best = [int(v) for v in column(page, "summary.best")]
    assert best == sorted(best, reverse=True) and best[0] == 100


def test_selected_runs_open_the_compare_page(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="p", sort="id", order="asc")
    assert page.is_disabled("button#compare")
    page.check("input.select[data-run='p/run-01']")
    page.check("input.select[data-run='p/run-02']")
    assert re.search(r"2", page.inner_text("button#compare"))
    page.click("button#compare")
    page.wait_for_url(re.compile(r"/compare\?"))
    assert parse_qs(urlparse(page.url).query)["run"] == ["p/run-01", "p/run-02"]
    wait_ready(page)
    # Back: the runs page as it was, the two runs still ticked (to compare one more, say)
    page.go_back()
    page.wait_for_url(re.compile(r"/\?project=p"))
    page.wait_for_selector("input.select[data-run='p/run-01']")
    assert page.is_checked("input.select[data-run='p/run-01']")
    assert page.is_checked("input.select[data-run='p/run-02']")
    assert not page.is_checked("input.select[data-run='p/run-03']")
    assert re.search(r"2", page.inner_text("button#compare"))


def test_a_row_name_links_to_the_run_page(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="q")
    row(page, "q/resumed").locator("td[data-col=name] a").click()
    page.wait_for_url(re.compile(r"/runs/q/resumed"))
    wait_ready(page)
    assert page.locator("tr[data-attempt]").count() == 2


def test_a_tag_click_filters_and_its_chip_removes_the_filter(page: Any, ui: UiServer) -> None:
    open_runs(page, ui, project="p")
    assert len(shown(page)) == SWEEP
    row(page, "p/run-03").locator("td[data-col=tags] .tag", has_text="odd").click()
    wait_rows(page, SWEEP // 2)
    assert all(int(p[-2:]) % 2 for p in shown(page))
    assert parse_qs(urlparse(page.url).query)["tag"] == ["odd"]
    page.click(".chips .chip button")
    wait_rows(page, SWEEP)
    assert "tag=" not in page.url


HELD_FILL = """
import os, time
from localrun._server import runs_index
runs_index.CHUNK = 20
real, calls = runs_index._read, []
def read(folder, listed):
    calls.append(folder)
    if len(calls) == 41:  # the third part's first read: two parts (40 runs) are read
        open({held!r}, "w").close()
        while os.path.exists({hold!r}):  # the test removes it to let the fill go on
            time.sleep(0.01)
    return real(folder, listed)
runs_index._read = read
"""


def test_a_large_roots_runs_show_while_the_server_reads_them(tmp_path: Path, page: Any) -> None:
    """A server's first read of a large root (10,000 runs on NFS: a minute) shows the runs
    read so far at once, says how far it got, and completes the list when the read is done.
    The server is the real one, its first read held (by the test) after two parts of 20."""
    from tests.test_ui_api import _many_runs

    root = tmp_path / "runs"
    n = _many_runs(root)
    hold, held = tmp_path / "hold", tmp_path / "held"
    hold.touch()
    server = start_ui(root, prelude=HELD_FILL.format(hold=str(hold), held=str(held)))
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert time.monotonic() < deadline, "the server's first read never got to its hold"
            time.sleep(0.02)
        page.goto(server.page_url("/", sort="id", order="asc"))
        wait_ready(page)
        assert shown(page) == [f"many/r{i:03d}" for i in range(40)]
        assert page.inner_text("#reading") == f"· reading runs: 40 of {n}…"
        assert page.evaluate("document.body.dataset.complete") is None
    finally:
        hold.unlink()
    page.wait_for_function("document.body.dataset.complete === '1'", timeout=30_000)
    assert shown(page) == [f"many/r{i:03d}" for i in range(n)]
    assert page.locator("#reading").is_hidden()
    assert page.inner_text("#count") == f"1{DASH}{n} of {n}"
