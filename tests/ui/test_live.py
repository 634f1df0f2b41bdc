"""Live pages: an open page follows runs being written by other processes, without a reload.

A child process (:class:`tests.ui.conftest.Writer`) commits rows only when the test lets it and
says when each is committed, so the test knows what is stored; the page, polling every 300 ms
(``?poll=300``), must then draw it. Each test puts a mark on ``window`` first and checks it is
still there at the end: the page was never reloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ui.conftest import make_run, start_writer, wait_ready

LOSS = 'div.chart[data-key="loss"]'


def mark_window(page: Any) -> None:
    page.evaluate("window.__notReloaded = true")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"


def chart(page: Any, selector: str = LOSS) -> dict[str, str]:
    return page.eval_on_selector(selector, "el => ({...el.dataset})")


def wait_chart(page: Any, condition: str, selector: str = LOSS) -> dict[str, str]:
    """Wait until the chart's dataset ``d`` satisfies the JS ``condition``; returns it."""
    page.wait_for_function(
        f"""() => {{
            const el = document.querySelector({selector!r});
            if (!el || el.dataset.ready !== "1") return false;
            const d = el.dataset;
            return {condition};
        }}"""
    )
    return chart(page, selector)


def test_run_page_draws_new_points_as_the_run_is_written(
    ui_root: Path, ui_server, page, tmp_path: Path
) -> None:
    writer = start_writer(ui_root, tmp_path / "go", run_id="live")
    writer.advance(20)  # steps 0..19 committed
    server = ui_server(ui_root)
    page.goto(server.page_url("/runs/p/live"))
    wait_ready(page)
    first = wait_chart(page, "Number(d.xmax) >= 19")
    assert int(first["points"]) >= 20 and first["series"] == "1"
    mark_window(page)

    writer.advance(30)  # steps 20..49
    grown = wait_chart(page, "Number(d.xmax) >= 49 && Number(d.points) >= 50")
    assert int(grown["points"]) > int(first["points"])
    writer.advance(25)  # and again: the page keeps following
    wait_chart(page, "Number(d.xmax) >= 74 && Number(d.points) >= 75")
    assert page.locator("h1").inner_text().lower().count("running") >= 1

    writer.finish()
    page.wait_for_function(
        "document.querySelector('h1').innerText.toLowerCase().includes('finished')"
    )
    assert_not_reloaded(page)


def test_run_page_shows_a_resume_on_another_node_without_reload(
    ui_root: Path, ui_server, page, tmp_path: Path
) -> None:
    """Node A is preempted (SIGKILL) while the page is open; the job resumes on node B: the
    page shows attempt 2 on node-b in the attempts table and a resume marker on the charts."""
    node_a = start_writer(ui_root, tmp_path / "go-a", run_id="moved", host="node-a")
    node_a.advance(20)
    server = ui_server(ui_root)
    page.goto(server.page_url("/runs/p/moved"))
    wait_ready(page)
    page.wait_for_selector('tr[data-attempt="1"]')
    assert "node-a" in page.locator('tr[data-attempt="1"] td[data-col="host"]').inner_text()
    before = wait_chart(page, "Number(d.xmax) >= 19")
    assert before["markers"] == "0"
    assert page.locator('tr[data-attempt="2"]').count() == 0
    mark_window(page)

    node_a.proc.kill()  # the node is preempted
    node_a.proc.wait()
    node_b = start_writer(ui_root, tmp_path / "go-b", run_id="moved", host="node-b")
    assert node_b.allowed == 20  # resumed after the last committed step
    node_b.advance(15)  # steps 20..34 by attempt 2

    page.wait_for_selector('tr[data-attempt="2"]')
    assert "node-b" in page.locator('tr[data-attempt="2"] td[data-col="host"]').inner_text()
    after = wait_chart(page, 'd.markers === "1" && Number(d.xmax) >= 34')
    assert after["series"] == "1"
    assert "crashed" in page.locator('tr[data-attempt="1"] td[data-col="state"]').inner_text()
    node_b.finish()
    page.wait_for_function(
        """() => (document.querySelector('tr[data-attempt="2"] td[data-col="state"]') || {})
                 .innerText?.includes("finished")"""
    )
    assert_not_reloaded(page)


def test_runs_page_shows_new_runs_and_state_changes(
    ui_root: Path, ui_server, page, tmp_path: Path
) -> None:
    make_run(ui_root, run_id="old", steps=5)
    server = ui_server(ui_root)
    page.goto(server.page_url("/"))
    wait_ready(page)
    page.wait_for_selector('tr[data-run="p/old"][data-state="finished"]')
    assert page.locator('tr[data-run="p/live"]').count() == 0
    mark_window(page)

    writer = start_writer(ui_root, tmp_path / "go", run_id="live")
    writer.advance(3)
    page.wait_for_selector('tr[data-run="p/live"][data-state="running"]')
    make_run(ui_root, project="other", run_id="fresh", steps=3)  # a new project too
    page.wait_for_selector('tr[data-run="other/fresh"]')
    options = page.eval_on_selector_all("select#project option", "os => os.map(o => o.value)")
    assert "other" in options, options
    writer.finish()
    page.wait_for_selector('tr[data-run="p/live"][data-state="finished"]')
    assert page.locator("tr[data-run]").count() == 3
    assert_not_reloaded(page)


def test_compare_legend_follows_a_run_that_finishes(
    ui_root: Path, ui_server, page, tmp_path: Path
) -> None:
    """The compare page's legend says each run's state; a run that finishes while the page is
    open says so without a reload (the legend used to keep the state of the first load)."""
    done = make_run(ui_root, run_id="done", steps=10)
    writer = start_writer(ui_root, tmp_path / "go", run_id="live")
    writer.advance(10)
    server = ui_server(ui_root)
    page.goto(server.page_url(f"/compare?run={done}&run=p/live"))
    wait_ready(page)
    states = "ul#compare-legend li[data-run='{}']"
    assert page.get_attribute(states.format(done), "data-state") == "finished"
    assert page.get_attribute(states.format("p/live"), "data-state") == "running"
    mark_window(page)
    writer.finish()
    page.wait_for_selector(states.format("p/live") + "[data-state='finished']")
    assert page.inner_text(states.format("p/live") + " .state") == "finished"
    assert_not_reloaded(page)
