"""The compare page (static/compare.js) in a real Chromium: runs side by side, grouped with a band.

Runs are written by real child processes; what is asserted is what the page drew (the legend's
entries, each chart's ``data-*`` and the uPlot instance's data through
``window.__localrunCharts``) and what the URL holds (a comparison is a bookmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.ui.conftest import make_resumed_run, make_run, run_py, wait_ready
from tests.ui.test_charts import SET_INPUT, chart, drawn, open_runs, redraw_after, write_run

SEEDED = """
seed = {seed}
for s in range({steps}):
    run.log({{"loss": 1.0 / (s + 1) + 0.1 * seed}})
"""


def seeded_run(root: Path, run_id: str, lr: float, seed: int, steps: int = 100) -> str:
    """A run with config {lr, seed} whose loss is 1/(step+1) + 0.1 * seed."""
    body = f"run.config.update({{'lr': {lr}, 'seed': {seed}}})\n" + SEEDED.format(
        seed=seed, steps=steps
    )
    return write_run(root, run_id, body)


def test_three_runs_draw_three_series_with_a_legend(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    runs = [make_run(ui_root, run_id=f"r{i}", steps=20 + 10 * i) for i in range(3)]
    server = ui_server(ui_root)
    open_runs(page, server, *runs)
    legend = page.eval_on_selector_all(
        "li[data-run]",
        "lis => lis.map(li => [li.dataset.run, li.querySelector('a').getAttribute('href')])",
    )
    assert legend == [[r, f"/runs/{r}"] for r in runs]
    colors = page.eval_on_selector_all(
        "li[data-run] .swatch", "ss => ss.map(s => getComputedStyle(s).backgroundColor)"
    )
    assert len(set(colors)) == 3
    for key in ("loss", "acc"):
        state = chart(page, key)
        assert state["series"] == "3"
        assert state["points"] == str(20 + 30 + 40)
        assert (state["xmin"], state["xmax"]) == ("0", "39")  # the longest run's steps
    # each run's curve is its own data: r0 stops at step 19, r2 goes on to 39
    x, y0, _y1, y2 = drawn(page, "loss")
    assert [v for v in y0 if v is not None] == [1.0 / (s + 1) for s in range(20)]
    assert y2[x.index(39)] == 1.0 / 40
    # the series' colours are the legend's
    strokes = page.evaluate(
        "window.__localrunCharts[0].plot('loss').series.slice(1).map(s => s._stroke)"
    )
    assert len(set(strokes)) == 3
    # hovering where only the longest run has a point still shows every run's value
    box = page.locator('div.chart[data-key="loss"] .u-over').bounding_box()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2)
    values = page.locator('div.chart[data-key="loss"] .u-legend .u-series .u-value')
    page.wait_for_function(
        "els => els.slice(1).every(e => /\\d/.test(e.textContent))",
        arg=values.element_handles(),
    )
    # smoothing applies to every run's curve, and draws as many points
    raw = drawn(page, "loss")
    redraw_after(page, "loss", SET_INPUT, ["#smoothing", "0.8"])
    smooth = drawn(page, "loss")
    assert chart(page, "loss")["points"] == str(20 + 30 + 40)
    assert chart(page, "loss")["raw"] == "3" and drawn(page, "loss", raw=True) == raw
    for run in (1, 2, 3):
        assert smooth[run] != raw[run]
        assert [v is None for v in smooth[run]] == [v is None for v in raw[run]]


def test_compared_runs_are_fetched_on_one_x_range(ui_root: Path, ui_server: Any, page: Any) -> None:
    runs = [make_run(ui_root, run_id=f"r{i}", steps=10 + 25 * i) for i in range(2)]
    server = ui_server(ui_root)
    queries: list[dict[str, list[str]]] = []
    page.on(
        "request",
        lambda r: queries.append(parse_qs(urlsplit(r.url).query)) if "/series" in r.url else None,
    )
    open_runs(page, server, *runs)
    assert len(queries) >= 2
    assert {(q["xmin"][0], q["xmax"][0]) for q in queries} == {("0", "34")}


def test_resume_markers_of_compared_runs(ui_root: Path, ui_server: Any, page: Any) -> None:
    resumed = make_resumed_run(ui_root, kill_at=20, steps=40)
    plain = make_run(ui_root, run_id="plain", steps=40)
    server = ui_server(ui_root)
    open_runs(page, server, resumed, plain)
    assert chart(page, "loss")["markers"] == "1"
    # grouped, the band still shows where the resumed run was preempted
    redraw_after(page, "loss", SET_INPUT, ["#group-by", "tag"])
    assert chart(page, "loss")["series"] == "3"  # one group: its mean and band edges
    assert chart(page, "loss")["markers"] == "1"


def test_group_by_config_draws_mean_and_band(ui_root: Path, ui_server: Any, page: Any) -> None:
    runs = [
        seeded_run(ui_root, "a0", lr=0.1, seed=0),
        seeded_run(ui_root, "a1", lr=0.1, seed=1),
        seeded_run(ui_root, "a2", lr=0.1, seed=2),
        seeded_run(ui_root, "b0", lr=0.01, seed=5),
    ]
    server = ui_server(ui_root)
    open_runs(page, server, *runs)
    options = page.eval_on_selector_all("#group-by option", "os => os.map(o => o.value)")
    assert options[0] == "none" and "config.lr" in options and "config.seed" in options
    assert options[-1] == "tag"
    redraw_after(page, "loss", SET_INPUT, ["#group-by", "config.lr"])
    state = chart(page, "loss")
    assert state["series"] == "6"  # per group: mean, upper and lower edge of the band
    u = "window.__localrunCharts[0].plot('loss')"
    assert page.evaluate(f"{u}.bands.length") == 2
    labels = page.evaluate(f"{u}.series.slice(1).map(s => s.label)")
    assert labels[0].startswith("lr=0.01 (1)") and labels[3].startswith("lr=0.1 (3)")
    data = drawn(page, "loss")
    x = data[0]
    i = 0  # the first bucket (its centre: a fraction of a step after step 0), step 0's values
    assert 0 <= x[i] < 1
    # lr=0.1: seeds 0, 1, 2 -> losses 1.0, 1.1, 1.2 at step 0: mean 1.1, min 1.0, max 1.2
    mean, hi, lo = data[4][i], data[5][i], data[6][i]
    assert abs(mean - 1.1) < 1e-9 and abs(hi - 1.2) < 1e-9 and abs(lo - 1.0) < 1e-9
    # lr=0.01: one run, its own curve and no width
    assert abs(data[1][i] - 1.5) < 1e-9 and data[2][i] == data[3][i] == data[1][i]
    # the legend gives each run its group's colour
    swatches = page.eval_on_selector_all(
        "li[data-run]",
        "lis => lis.map(li => [li.dataset.group, li.querySelector('.swatch').style.background])",
    )
    assert [g for g, _ in swatches] == ["lr=0.1", "lr=0.1", "lr=0.1", "lr=0.01"]
    assert swatches[0][1] == swatches[1][1] == swatches[2][1] != swatches[3][1]
    # a std band: mean +- the population std of 1.0, 1.1, 1.2
    redraw_after(page, "loss", SET_INPUT, ["#band", "std"])
    data = drawn(page, "loss")
    std = (2 * 0.1**2 / 3) ** 0.5
    assert abs(data[4][i] - 1.1) < 1e-9
    assert abs(data[5][i] - (1.1 + std)) < 1e-9 and abs(data[6][i] - (1.1 - std)) < 1e-9
    # the grouping is in the URL: reloading it draws the same groups
    query = parse_qs(urlsplit(page.url).query)
    assert query["group"] == ["config.lr"] and query["band"] == ["std"] and query["run"] == runs
    page.reload()
    wait_ready(page)
    assert page.eval_on_selector("#group-by", "s => s.value") == "config.lr"
    assert chart(page, "loss")["series"] == "6"


def test_group_by_tag(ui_root: Path, ui_server: Any, page: Any) -> None:
    runs = [
        make_run(ui_root, run_id="t1", steps=10, tags=["baseline"]),
        make_run(ui_root, run_id="t2", steps=10, tags=["baseline"]),
        make_run(ui_root, run_id="t3", steps=10, tags=["new"]),
    ]
    server = ui_server(ui_root)
    open_runs(page, server, *runs, group="tag")
    state = chart(page, "loss")
    assert state["series"] == "6"
    labels = page.evaluate(
        "window.__localrunCharts[0].plot('loss').series.slice(1).map(s => s.label)"
    )
    assert labels[0].startswith("tag baseline (2)") and labels[3].startswith("tag new (1)")


def test_an_unknown_run_shows_an_error_and_the_others_still_draw(
    ui_root: Path, ui_server: Any, page: Any, console_errors: Any
) -> None:
    console_errors.allow(r"404")
    good = make_run(ui_root, run_id="good", steps=10)
    server = ui_server(ui_root)
    open_runs(page, server, good, "p/nope")
    page.wait_for_selector('#error[data-status="404"]')
    assert "nope" in page.text_content("#error")
    assert chart(page, "loss")["series"] == "1"


def test_removing_a_run_from_the_legend(ui_root: Path, ui_server: Any, page: Any) -> None:
    runs = [make_run(ui_root, run_id=f"r{i}", steps=10) for i in range(3)]
    server = ui_server(ui_root)
    open_runs(page, server, *runs)
    page.evaluate("delete document.body.dataset.ready")
    page.click('li[data-run="p/r1"] a.remove')
    wait_ready(page)
    assert page.eval_on_selector_all("li[data-run]", "lis => lis.map(l => l.dataset.run)") == [
        "p/r0",
        "p/r2",
    ]
    assert parse_qs(urlsplit(page.url).query)["run"] == ["p/r0", "p/r2"]
    assert chart(page, "loss")["series"] == "2"


def test_runs_with_different_metrics(ui_root: Path, ui_server: Any, page: Any) -> None:
    both = make_run(ui_root, run_id="both", steps=20, metrics=("loss", "acc"))
    only_loss = make_run(ui_root, run_id="lossonly", steps=30, metrics=("loss",))
    server = ui_server(ui_root)
    open_runs(page, server, both, only_loss)
    assert chart(page, "loss")["series"] == "2"
    assert chart(page, "acc")["series"] == "1"
    assert page.is_hidden("#error")
    # x = acc: the run without acc has no such axis and draws nothing, without an error
    redraw_after(page, "loss", SET_INPUT, ["#xaxis", "acc"])
    assert chart(page, "loss")["series"] == "1"
    assert page.is_hidden("#error")


MANY = """
import localrun
for i in range({runs}):
    run = localrun.init(project="p", id=f"m{{i}}", config={{"seed": i}})
    for s in range({steps}):
        run.log({{f"m{{k}}": (s % (7 + k)) * (1 + i) for k in range(5)}})
    run.finish()
"""


def test_twenty_runs_of_five_metrics_draw_quickly(ui_root: Path, ui_server: Any, page: Any) -> None:
    # 5000 steps are downsampled to ~2 points per pixel like 1e5 would be: the same drawing work
    done = run_py(MANY.format(runs=20, steps=5000), ui_root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    server = ui_server(ui_root)
    open_runs(page, server, *[f"p/m{i}" for i in range(20)])
    for k in range(5):
        state = chart(page, f"m{k}")
        assert state["series"] == "20"
        assert int(state["points"]) <= 20 * 2 * page.eval_on_selector(
            f'div.chart[data-key="m{k}"]', "d => d.clientWidth"
        )
    # redrawing every chart from the fetched points (what smoothing does): a generous bound,
    # about 100 ms on this 2-core machine under load
    took = page.evaluate(
        "() => { const c = window.__localrunCharts[0]; const t = performance.now();"
        " c.draw(); return performance.now() - t; }"
    )
    assert took < 1500, f"redrawing 20 runs x 5 metrics took {took:.0f} ms"


def test_a_legend_link_leaves_for_the_run_page_and_stops_the_charts(
    ui_root: Path, ui_server: Any, page: Any
) -> None:
    runs = [make_run(ui_root, run_id=f"r{i}", steps=10) for i in range(2)]
    server = ui_server(ui_root)
    open_runs(page, server, *runs)
    assert page.evaluate("window.__localrunCharts.length") == 1
    page.evaluate("delete document.body.dataset.ready")
    page.click('li[data-run="p/r1"] a[href="/runs/p/r1"]')
    page.wait_for_url("**/runs/p/r1")
    wait_ready(page)
    # the compare page's charts are gone (stopped), the run page's are its own
    assert page.evaluate("window.__localrunCharts.every(c => c.runs.join() === 'p/r1')")
    page.wait_for_timeout(1000)  # a few polls (300 ms): the stopped charts draw and report nothing
    assert page.is_hidden("#error")
    assert page.locator("li[data-run]").count() == 0
