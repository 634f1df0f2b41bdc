// The compare page: /compare?run=p/a&run=p/b. A legend of the runs (one colour each, the colour
// of their curves), then one chart per metric over all of them (chart.js). The chart settings
// (x axis, smoothing, log scale, grouping, band, metric filter) live in the URL next to the runs,
// so a comparison can be bookmarked and sent to a colleague as it looks.
import { runPage, withParams } from "./api.js";
import { colorFor, MetricCharts, settingsFrom, settingsParams } from "./chart.js";

/** The page's URL: the runs, then the settings that differ from the defaults. */
function compareUrl(runs, settings) {
  return withParams("/compare", { run: runs, ...settingsParams(settings) });
}

function legendItem(path, i, runs, params) {
  const li = document.createElement("li");
  li.dataset.run = path;
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = colorFor(i);
  const link = document.createElement("a");
  link.href = runPage(path);
  link.dataset.nav = "";
  link.textContent = path;
  const state = document.createElement("span");
  state.className = "state";
  li.append(swatch, link, state);
  if (runs.length > 1) {
    const remove = document.createElement("a");
    remove.className = "remove";
    remove.title = "remove from the comparison";
    remove.textContent = "×";
    remove.dataset.nav = "";
    remove.href = compareUrl(
      runs.filter((r) => r !== path),
      settingsFrom(params),
    );
    li.append(remove);
  }
  return li;
}

const STYLE = `
ul#compare-legend { list-style: none; display: flex; flex-wrap: wrap; gap: 0.3em 1.2em; padding: 0; margin: 0.4em 0; }
ul#compare-legend li { display: inline-flex; align-items: center; gap: 0.35em; }
ul#compare-legend .swatch { width: 14px; height: 4px; border-radius: 2px; display: inline-block; }
ul#compare-legend .state { color: #6b7385; font-size: 12px; }
ul#compare-legend .remove { color: #6b7385; text-decoration: none; }
`;

export function renderCompare(main, params) {
  delete document.body.dataset.ready;
  // each run once, in the order given
  const runs = [...new Set(params.getAll("run").filter(Boolean))];
  const h2 = document.createElement("h2");
  main.append(h2);
  if (runs.length === 0) {
    h2.textContent = "Compare runs";
    const p = document.createElement("p");
    p.innerHTML = 'Pick runs on the <a href="/" data-nav>runs page</a> and press Compare.';
    main.append(p);
    document.body.dataset.ready = "1";
    return () => {};
  }
  h2.textContent = `Compare ${runs.length} run${runs.length === 1 ? "" : "s"}`;
  if (!document.getElementById("lr-compare-style")) {
    const style = document.createElement("style");
    style.id = "lr-compare-style";
    style.textContent = STYLE;
    document.head.append(style);
  }
  const legend = document.createElement("ul");
  legend.id = "compare-legend";
  legend.append(...runs.map((path, i) => legendItem(path, i, runs, params)));
  const section = document.createElement("section");
  section.id = "metrics";
  main.append(legend, section);

  // names and states, once the runs were read and whenever a poll brings new details (a run
  // that finishes, or whose node died, while the page is open)
  const showInfo = (info) => {
    for (const li of legend.children) {
      const one = info.get(li.dataset.run);
      if (!one) continue;
      li.querySelector("a").textContent = one.name && one.name !== one.id
        ? `${one.name} (${li.dataset.run})`
        : li.dataset.run;
      li.querySelector(".state").textContent = one.state || "";
      li.dataset.state = one.state || "";
    }
  };
  const charts = new MetricCharts(section, {
    runs,
    stream: "history",
    groupable: true,
    onInfo: showInfo,
    colors: runs.map((_, i) => colorFor(i)),
    settings: settingsFrom(params),
    onSettings: (s) => history.replaceState(null, "", compareUrl(runs, s)),
    // grouped, a run's swatch takes its group's colour (the colour of the curve it is in)
    onGroups: (groups) => {
      for (const [i, li] of [...legend.children].entries()) {
        const g = groups.find((one) => one.runs.includes(li.dataset.run));
        li.querySelector(".swatch").style.background = g ? g.color : colorFor(i);
        li.title = g ? `in group ${g.label}` : "";
        if (g) li.dataset.group = g.label;
        else delete li.dataset.group;
      }
    },
  });
  let stopped = false;
  charts.start().then(() => {
    if (stopped) return;
    showInfo(charts.info);
    document.body.dataset.ready = "1";
    performance.mark("localrun:drawn");
  });
  return () => {
    stopped = true;
    charts.stop();
  };
}
