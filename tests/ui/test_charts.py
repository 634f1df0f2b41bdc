"""The metric charts (static/chart.js) in a real Chromium, on runs written by real processes.

The charts are drawn on the compare page of one run (the run page embeds the same
``MetricCharts``). What is asserted is what uPlot drew: each ``div.chart`` says after every draw
how many series and points it drew, its x scale and its resume markers (``data-*``), and
``window.__localrunCharts`` gives the uPlot instance of a metric, whose ``data`` is exactly the
arrays on screen (after smoothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.ui.conftest import (
    UiServer,
    child_code,
    make_resumed_run,
    make_run,
    run_py,
    start_writer,
    wait_ready,
)

# -- helpers ------------------------------------------------------------------------------------


def open_runs(pg: Any, server: UiServer, *runs: str, **params: str) -> None:
    """The compare page of ``runs``, waited until its charts are drawn."""
    query = "&".join(f"run={r}" for r in runs)
    pg.goto(server.page_url(f"/compare?{query}", **params))
    wait_ready(pg)


def chart(pg: Any, key: str) -> dict[str, str]:
    """The data-* attributes of the chart of ``key``."""
    return pg.eval_on_selector(f'div.chart[data-key="{key}"]', "d => ({...d.dataset})")


def drawn(pg: Any, key: str, raw: bool = False) -> list[list[float | None]]:
    """The aligned arrays uPlot draws for ``key``: [x, y1, y2, ...] (undefined -> None), the
    runs' curves; with ``raw``, [x, ...] of the faint raw curves drawn under smoothed ones."""
    return pg.evaluate(
        """([key, raw]) => {
             const u = window.__localrunCharts[0].plot(key);
             return u.data
               .filter((_, i) => i === 0 || Boolean(u.series[i].raw) === raw)
               .map(a => Array.from(a, v => v === undefined ? null : v));
           }""",
        [key, raw],
    )


def redraw_after(pg: Any, key: str, action: str, arg: Any = None) -> None:
    """Run ``action`` (JS taking ``arg``) and wait until the chart of ``key`` drew again."""
    pg.evaluate(
        """([key, action, arg]) => {
             const div = document.querySelector(`div.chart[data-key="${key}"]`);
             div.dataset.ready = "";
             (new Function("arg", action))(arg);
           }""",
        [key, action, arg],
    )
    pg.wait_for_selector(f'div.chart[data-key="{key}"][data-ready="1"]')


SET_INPUT = """
const [sel, value] = arg;
const input = document.querySelector(sel);
if (input.type === "checkbox") input.checked = value; else input.value = value;
input.dispatchEvent(new Event(input.type === "range" || input.type === "search" ? "input" : "change"));
"""


def write_run(root: Path, run_id: str, body: str, project: str = "p") -> str:
    """A finished run whose rows are logged by ``body`` (Python, ``run`` in scope)."""
    code = child_code(
        f"import localrun\nrun = localrun.init(project={project!r}, id={run_id!r})\n"
        + body
        + "\nrun.finish()\n"
    )
    done = run_py(code, root, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return f"{project}/{run_id}"


# -- tests --------------------------------------------------------------------------------------


def test_one_chart_per_metric_over_the_runs_step_range(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    path = make_run(ui_root, steps=50, metrics=("loss", "acc"))
    server = ui_server(ui_root)
    open_runs(page, server, path)
    keys = page.eval_on_selector_all("div.chart", "ds => ds.map(d => d.dataset.key)")
    assert keys == ["acc", "loss"]
    for key in keys:
        state = chart(page, key)
        assert state["series"] == "1"
        assert state["points"] == "50"
        assert float(state["xmin"]) == 0 and float(state["xmax"]) == 49
        assert state["markers"] == "0"
    x, loss = drawn(page, "loss")
    assert x == list(range(50))
    assert loss[0] == 1.0 and abs(loss[49] - 1 / 50) < 1e-12
    # the hover legend shows the value under the cursor
    box = page.locator('div.chart[data-key="loss"] .u-over').bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    value = page.locator('div.chart[data-key="loss"] .u-legend .u-series:nth-child(2) .u-value')
    page.wait_for_function(
        "el => el.textContent.trim() !== '—' && el.textContent.trim() !== '--'",
        arg=value.element_handle(),
    )
    assert float(value.text_content()) == 1.0


def test_a_preempted_and_resumed_run_shows_one_marker(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    path = make_resumed_run(ui_root, kill_at=30, steps=60, hosts=("node-a", "node-b"))
    server = ui_server(ui_root)
    # Every text drawn on a canvas, recorded as drawn (the marker's label is canvas pixels).
    page.add_init_script(
        "window.__texts = []; const fill = CanvasRenderingContext2D.prototype.fillText;"
        "CanvasRenderingContext2D.prototype.fillText = function (t, ...rest) {"
        " window.__texts.push(String(t)); return fill.call(this, t, ...rest); };"
    )
    open_runs(page, server, path)
    state = chart(page, "loss")
    assert state["markers"] == "1"
    assert "#2 node-b" in page.evaluate("window.__texts")  # the label says which attempt, where
    assert float(state["xmin"]) == 0 and float(state["xmax"]) == 59
    markers = page.evaluate("window.__localrunCharts[0].plots.get('loss').markers")
    assert [(m["attempt"], m["host"]) for m in markers] == [(2, "node-b")]
    # the second attempt starts where the first one's committed rows end
    assert markers[0]["x"] == markers[0]["step"] == 30
    x, _ = drawn(page, "loss")
    assert x == list(range(60))  # no row twice, none missing across the resume


def test_smoothing_changes_the_drawn_values_not_their_count(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    path = write_run(ui_root, "noisy", "for s in range(200):\n    run.log({'loss': 1.0 + (s % 2)})")
    server = ui_server(ui_root)
    open_runs(page, server, path)
    before = chart(page, "loss")
    raw = drawn(page, "loss")[1]
    redraw_after(page, "loss", SET_INPUT, ["#smoothing", "0.9"])
    after = chart(page, "loss")
    smooth = drawn(page, "loss")[1]
    assert (
        (after["series"], after["points"]) == (before["series"], before["points"]) == ("1", "200")
    )
    assert smooth != raw
    # the raw curve stays drawn, faint, under the smoothed one (and only while smoothing)
    assert (before["raw"], after["raw"]) == ("0", "1")
    assert drawn(page, "loss", raw=True)[1] == raw
    # debiased EMA (TensorBoard's): starts at the first value, converges to the mean 1.5
    assert smooth[0] == raw[0] == 1.0
    assert abs(smooth[-1] - 1.5) < 0.1
    assert max(smooth) < 2.0 and min(smooth[20:]) > 1.3
    # the setting is in the URL (a bookmark restores it)
    assert "smoothing=0.9" in page.url


def test_log_scale(ui_root: Path, ui_server: Any, page: Any) -> None:
    path = make_run(ui_root, steps=1000, metrics=("loss",))
    server = ui_server(ui_root)
    open_runs(page, server, path)
    assert page.evaluate("window.__localrunCharts[0].plot('loss').scales.y.distr") == 1
    redraw_after(page, "loss", SET_INPUT, ["#logscale", True])
    u = "window.__localrunCharts[0].plot('loss')"
    assert page.evaluate(f"{u}.scales.y.distr") == 3  # uPlot's log distribution
    ymin, ymax = page.evaluate(f"[{u}.scales.y.min, {u}.scales.y.max]")
    assert 0 < ymin <= 1e-3 and ymax >= 1  # loss spans 1 .. 1/1000: three decades
    assert chart(page, "loss")["points"] == "1000"


def test_x_by_wall_time_and_by_another_metric(ui_root: Path, ui_server: Any, page: Any) -> None:
    import time

    started = time.time()
    path = make_run(ui_root, steps=40, metrics=("loss", "acc"))
    ended = time.time()
    server = ui_server(ui_root)
    open_runs(page, server, path)
    redraw_after(page, "loss", SET_INPUT, ["#xaxis", "time"])
    state = chart(page, "loss")
    assert started - 1 <= float(state["xmin"]) <= float(state["xmax"]) <= ended + 1
    assert page.evaluate("window.__localrunCharts[0].plot('loss').scales.x.time") is True
    assert state["points"] == "40"
    # any number key can be the x axis: acc = step / 40
    redraw_after(page, "loss", SET_INPUT, ["#xaxis", "acc"])
    x, _ = drawn(page, "loss")
    assert x == [s / 40 for s in range(40)]
    assert "x=acc" in page.url


def test_a_spike_survives_downsampling(ui_root: Path, ui_server: Any, page: Any) -> None:
    path = write_run(
        ui_root,
        "spiky",
        "for s in range(50000):\n    run.log({'loss': 1000.0 if s == 31337 else 1.0})",
    )
    server = ui_server(ui_root)
    open_runs(page, server, path)
    width = page.eval_on_selector('div.chart[data-key="loss"]', "d => d.clientWidth")
    state = chart(page, "loss")
    assert int(state["points"]) <= 2 * width < 50000  # downsampled on the server
    x, y = drawn(page, "loss")
    assert max(y) == 1000.0
    assert x[y.index(1000.0)] == 31337
    # the last bucket's min/max row of a flat curve is its first row, not necessarily step 49999
    assert float(state["xmin"]) == 0 and 49000 < float(state["xmax"]) <= 49999


def test_drag_zooms_at_full_resolution_and_double_click_resets(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    path = write_run(ui_root, "long", "for s in range(20000):\n    run.log({'loss': float(s % 7)})")
    server = ui_server(ui_root)
    open_runs(page, server, path)
    full = chart(page, "loss")
    box = page.locator('div.chart[data-key="loss"] .u-over').bounding_box()
    page.evaluate("document.querySelector('div.chart[data-key=loss]').dataset.ready = ''")
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.50, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.51, y, steps=4)
    page.mouse.up()
    page.wait_for_function(
        "() => { const d = document.querySelector('div.chart[data-key=loss]').dataset;"
        " return d.ready === '1' && Number(d.xmax) - Number(d.xmin) < 1000; }"
    )
    zoomed = chart(page, "loss")
    lo, hi = float(zoomed["xmin"]), float(zoomed["xmax"])
    assert 9000 < lo < hi < 11000 and hi - lo < 1000
    x, _ = drawn(page, "loss")
    # every row of the range, not one per bucket of the whole run
    inside = [v for v in x if lo <= v <= hi]
    assert len(inside) >= int(hi) - int(lo) - 1
    assert int(zoomed["points"]) > int(hi - lo) * 0.9
    page.dblclick('div.chart[data-key="loss"] .u-over')
    page.wait_for_function(
        "() => document.querySelector('div.chart[data-key=loss]').dataset.xmin === '0'"
    )
    reset = chart(page, "loss")
    assert (reset["xmin"], reset["xmax"], reset["points"]) == (
        full["xmin"],
        full["xmax"],
        full["points"],
    )


def test_metric_search_filters_the_charts(ui_root: Path, ui_server: Any, page: Any) -> None:
    path = make_run(ui_root, steps=10, metrics=("train/loss", "val/loss", "val/acc"))
    server = ui_server(ui_root)
    open_runs(page, server, path)
    keys = "() => [...document.querySelectorAll('div.chart')].map(d => d.dataset.key)"
    assert page.evaluate(keys) == ["train/loss", "val/acc", "val/loss"]
    page.fill("#metric-search", "val/")
    page.wait_for_function(f"({keys})().length === 2")
    assert page.evaluate(keys) == ["val/acc", "val/loss"]
    page.fill("#metric-search", "LOSS")
    page.wait_for_function(f"({keys})().join() === 'train/loss,val/loss'")


def test_live_points_appear_and_an_unchanged_run_is_not_refetched(
    ui_root: Path, ui_server: Any, page: Any, tmp_path: Path
) -> None:
    writer = start_writer(ui_root, tmp_path / "go", run_id="live")
    writer.advance(10)
    server = ui_server(ui_root)
    series_requests: list[str] = []
    page.on("request", lambda r: series_requests.append(r.url) if "/series" in r.url else None)
    open_runs(page, server, "p/live")
    assert chart(page, "loss")["xmax"] == "9"
    writer.advance(15)
    page.wait_for_function(
        "document.querySelector('div.chart[data-key=loss]').dataset.xmax === '24'", timeout=30_000
    )
    assert chart(page, "loss")["points"] == "25"
    writer.finish()
    page.wait_for_function(
        "() => { const c = window.__localrunCharts[0]; return c.info.get('p/live').state === 'finished'; }",
        timeout=30_000,
    )
    # the run stopped changing: polls (every 300 ms) get 304s and fetch no series
    page.wait_for_timeout(400)
    settled = len(series_requests)
    page.wait_for_timeout(1500)
    assert len(series_requests) == settled


def test_a_narrower_window_redraws_narrower_charts_with_fewer_points(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    path = write_run(ui_root, "wide", "for s in range(5000):\n    run.log({'loss': float(s % 13)})")
    server = ui_server(ui_root)
    open_runs(page, server, path)
    u = "window.__localrunCharts[0].plot('loss')"
    wide = page.evaluate(f"{u}.width")
    assert int(chart(page, "loss")["points"]) > 2 * 400
    page.set_viewport_size({"width": 600, "height": 900})
    # uPlot is resized to its box, and the series refetched for the fewer pixels
    page.wait_for_function(
        f"() => {{ const d = document.querySelector('div.chart[data-key=loss]');"
        f" return {u}.width === d.clientWidth && {u}.width < {wide}"
        f" && Number(d.dataset.points) <= 2 * d.clientWidth; }}"
    )
