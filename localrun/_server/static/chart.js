// One uPlot chart per metric, for one run (the run page) or many (the compare page).
//
// The server downsamples (at most 2 points per horizontal pixel, min and max per bucket so spikes
// survive), so a chart of a 1e6-step run draws a few thousand points; everything here works on
// those. Smoothing, log scale and the hover legend are drawn here from the fetched points, so
// moving the slider costs no request. Polling asks each run for its revision (ETag: a 304 when
// nothing changed) and refetches series only for the runs whose revision moved.
//
// The DOM contract (docs/ui.md, the browser tests, the benchmark): controls input#metric-search,
// select#xaxis, input#smoothing, input#logscale (and on compare select#group-by, select#band);
// one div.chart[data-key] per metric with data-series, data-points, data-xmin, data-xmax,
// data-markers, data-raw (the faint raw curves drawn under smoothed ones) and data-ready="1" set
// after every draw. window.__localrunCharts lists the live MetricCharts (tests read a chart's
// drawn data through .plot(key).data).
/* global uPlot */
import { getJSON, poll, POLL_MS, runApi, showError } from "./api.js";

// Tableau 10, then d3's category10: 20 runs get 20 distinguishable colours.
export const PALETTE = [
  "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

// URL parameter <-> MetricCharts setting: the pages keep a chart's settings in their address,
// so a reload, a bookmark or a link a colleague opens shows the charts as they looked.
const SETTING_PARAMS = { x: "x", smoothing: "smoothing", log: "log", group: "group", band: "band", search: "metric" };
export const SETTING_NAMES = new Set(Object.values(SETTING_PARAMS));

/** The settings a page's URLSearchParams hold (MetricCharts' `settings` option). */
export function settingsFrom(params) {
  const s = {};
  for (const [setting, name] of Object.entries(SETTING_PARAMS)) {
    const v = params.get(name);
    if (v !== null && v !== "") s[setting] = v;
  }
  if ("log" in s) s.log = s.log === "1" || s.log === "true";
  if ("smoothing" in s) s.smoothing = Number(s.smoothing);
  return s;
}

/** The URL parameters of the settings that differ from the defaults. */
export function settingsParams(settings) {
  const q = {};
  if (!settings) return q;
  if (settings.x && settings.x !== "step") q.x = settings.x;
  if (settings.smoothing > 0) q.smoothing = settings.smoothing;
  if (settings.log) q.log = "1";
  if (settings.group && settings.group !== "none") q.group = settings.group;
  if (settings.band && settings.band !== "minmax") q.band = settings.band;
  if (settings.search) q.metric = settings.search;
  return q;
}

/** The colour of the i-th run or group (a golden-angle hue past the palette). */
export function colorFor(i) {
  return i < PALETTE.length ? PALETTE[i] : `hsl(${Math.round((i * 137.508) % 360)}, 60%, 45%)`;
}

function withAlpha(color, alpha) {
  if (color.startsWith("#")) {
    const n = parseInt(color.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }
  return color.replace("hsl(", "hsla(").replace(")", `, ${alpha})`);
}

/**
 * Exponential moving average, debiased like TensorBoard's: the first points are not pulled
 * toward 0 (each is divided by 1 - w^n, n the points seen), so a curve starts where its data
 * starts. Gaps (null/undefined) stay gaps and do not count.
 */
export function ema(ys, weight) {
  if (!(weight > 0)) return ys;
  const out = new Array(ys.length);
  let last = 0;
  let wn = 1; // weight ** (points seen)
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y === null || y === undefined || !Number.isFinite(y)) {
      out[i] = y;
      continue;
    }
    last = last * weight + (1 - weight) * y;
    wn *= weight;
    out[i] = weight >= 1 ? last : last / (1 - wn);
  }
  return out;
}

// The index of the point nearest to idx (in x) that series ys has: with compared runs on a
// joined x axis most x values belong to one run only, and the hover legend must still show
// every run's value.
function nearestDefined(ys, xs, idx) {
  if (idx === null || idx === undefined) return idx;
  if (ys[idx] !== null && ys[idx] !== undefined) return idx;
  let lo = idx - 1;
  let hi = idx + 1;
  while (lo >= 0 && (ys[lo] === null || ys[lo] === undefined)) lo--;
  while (hi < ys.length && (ys[hi] === null || ys[hi] === undefined)) hi++;
  if (lo < 0 && hi >= ys.length) return null;
  if (lo < 0) return hi;
  if (hi >= ys.length) return lo;
  return xs[idx] - xs[lo] <= xs[hi] - xs[idx] ? lo : hi;
}

function fmtNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  if (Number.isInteger(v) && a < 1e15) return String(v); // steps exactly, not 123460
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
  return String(Number(v.toPrecision(5)));
}

// A run's config flattened to dotted keys, scalars only (what can group runs).
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
    else if (v === null || ["string", "number", "boolean"].includes(typeof v)) out[key] = v;
  }
  return out;
}

const X_LABELS = { step: "step", time: "time", relative: "relative time (s)" };
const CHART_HEIGHT = 240;
const STYLE = `
.lr-controls { display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; align-items: center; margin: 0.4em 0; }
.lr-controls label { display: inline-flex; gap: 0.35em; align-items: center; color: #6b7385; }
.lr-controls output { min-width: 2.5em; color: #1d2330; }
.lr-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 440px), 1fr)); gap: 0.8em; }
.lr-grid .chart { min-width: 0; border: 1px solid #dde1e8; border-radius: 4px; padding: 4px 2px 0; }
.lr-grid .chart .u-title { font-size: 13px; font-weight: 600; }
.lr-grid .chart .u-legend { font-size: 12px; }
.lr-grid .chart .u-legend .u-series > * { padding: 1px 3px; }
.lr-empty { color: #6b7385; }
`;

function injectStyle() {
  if (document.getElementById("lr-chart-style")) return;
  const style = document.createElement("style");
  style.id = "lr-chart-style";
  style.textContent = STYLE;
  document.head.append(style);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
}

const live = [];
window.__localrunCharts = live;

export class MetricCharts {
  /**
   * @param {HTMLElement} container where the controls and charts go
   * @param {{runs: string[], stream?: "history"|"system", keys?: string[],
   *          groupable?: boolean, colors?: string[], settings?: object,
   *          onSettings?: (settings: object) => void, onGroups?: (groups: object[]) => void,
   *          onInfo?: (info: Map<string, object>) => void}} options
   *   settings: initial {x, smoothing, log, search, group, band} (the page's URL);
   *   onSettings: called with them when the user changes a control;
   *   onGroups: called after each fetch with the groups drawn ([] when not grouped);
   *   onInfo: called with every run's details when a poll brought new ones (a new state).
   */
  constructor(container, options) {
    this.container = container;
    this.runs = [...options.runs];
    this.stream = options.stream || "history";
    this.onlyKeys = options.keys ? new Set(options.keys) : null;
    this.groupable = options.groupable ?? this.runs.length > 1;
    this.colors = options.colors || this.runs.map((_, i) => colorFor(i));
    this.onSettings = options.onSettings || (() => {});
    this.onGroups = options.onGroups || (() => {}); // [{label, runs, color}] or [] ungrouped
    this.onInfo = options.onInfo || (() => {}); // after a poll that brought a run's new details
    const s = options.settings || {};
    this.settings = {
      x: s.x || (this.stream === "system" ? "time" : "step"),
      smoothing: Math.min(0.99, Math.max(0, Number(s.smoothing) || 0)),
      log: Boolean(s.log),
      search: s.search || "",
      group: this.groupable ? s.group || "none" : "none",
      band: s.band === "std" ? "std" : "minmax",
    };
    this.info = new Map(); // run path -> its /api/v1/runs/p/id answer
    this.series = new Map(); // run path -> its /series answer (for the current query)
    this.groups = []; // [{label, runs, color, data: Map key -> group-series answer}]
    this.plots = new Map(); // key -> {div, u, signature}
    this.zoom = null; // {xmin, xmax} after a drag, null for the whole range
    this.fetchedWidth = 0;
    this.keys = [];
    this.queue = Promise.resolve();
    this.stopPoll = null;
    this.drawnOnce = null;
    this.firstDraw = new Promise((resolve) => {
      this.drawnOnce = resolve;
    });
    this.build();
  }

  /**
   * Fetch, draw, and follow the runs; resolves once the first data is drawn.
   * @param {Object<string, object>} [known] run path -> its details as the page just fetched
   *   them: the first draw uses them instead of asking again (one round trip fewer before the
   *   first chart); every later poll asks.
   */
  start(known = {}) {
    this.known = new Map(Object.entries(known));
    live.push(this);
    this.stopPoll = poll(() => this.refresh(false), POLL_MS);
    this.resizer = new ResizeObserver(() => this.onResize());
    this.resizer.observe(this.grid);
    return this.firstDraw;
  }

  stop() {
    this.stopped = true; // a fetch still under way must not draw on the next page
    if (this.stopPoll) this.stopPoll();
    this.stopPoll = null;
    if (this.resizer) this.resizer.disconnect();
    clearTimeout(this.resizeTimer);
    cancelAnimationFrame(this.drawFrame);
    for (const p of this.plots.values()) if (p.u) p.u.destroy();
    this.plots.clear();
    const i = live.indexOf(this);
    if (i >= 0) live.splice(i, 1);
  }

  /** The uPlot instance drawing `key` (tests read its data). */
  plot(key) {
    const p = this.plots.get(key);
    return p ? p.u : null;
  }

  // ---- controls -------------------------------------------------------------------------

  build() {
    injectStyle();
    const s = this.settings;
    this.search = el("input", {
      id: "metric-search", type: "search", placeholder: "filter metrics", value: s.search,
      "aria-label": "filter metrics by name",
    });
    this.xaxis = el("select", { id: "xaxis" });
    this.smoothing = el("input", {
      id: "smoothing", type: "range", min: "0", max: "0.99", step: "0.01",
      value: String(s.smoothing),
    });
    this.smoothingOut = el("output", {}, String(s.smoothing));
    this.logscale = el("input", { id: "logscale", type: "checkbox", checked: s.log });
    const controls = el(
      "div", { class: "lr-controls" },
      this.search,
      el("label", {}, "x", this.xaxis),
      el("label", {}, "smoothing", this.smoothing, this.smoothingOut),
      el("label", {}, this.logscale, "log scale"),
    );
    if (this.groupable) {
      this.groupBy = el("select", { id: "group-by" });
      this.band = el(
        "select", { id: "band" },
        el("option", { value: "minmax" }, "min/max"),
        el("option", { value: "std" }, "± std"),
      );
      this.band.value = s.band;
      controls.append(el("label", {}, "group by", this.groupBy), el("label", {}, "band", this.band));
    }
    this.empty = el("p", { class: "lr-empty", hidden: true });
    this.grid = el("div", { class: "lr-grid" });
    this.container.append(controls, this.empty, this.grid);
    this.setOptions(this.xaxis, this.xOptions(), s.x);
    if (this.groupBy) this.setOptions(this.groupBy, [["none", "none"]], s.group);

    let searchTimer = null;
    this.search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => this.change({ search: this.search.value.trim() }, true), 200);
    });
    this.xaxis.addEventListener("change", () => {
      this.zoom = null;
      this.change({ x: this.xaxis.value }, true);
    });
    this.smoothing.addEventListener("input", () => {
      this.smoothingOut.value = this.smoothing.value;
      this.change({ smoothing: Number(this.smoothing.value) }, false);
    });
    this.logscale.addEventListener("change", () => this.change({ log: this.logscale.checked }, false));
    if (this.groupBy) {
      this.groupBy.addEventListener("change", () => this.change({ group: this.groupBy.value }, true));
      this.band.addEventListener("change", () => this.change({ band: this.band.value }, false));
    }
  }

  /** A setting changed: refetch (x axis, search, grouping) or only redraw (smoothing, log). */
  change(patch, refetch) {
    Object.assign(this.settings, patch);
    this.onSettings({ ...this.settings });
    if (refetch) this.refresh(true);
    else this.scheduleDraw();
  }

  /** Redraw at the next frame: a dragged slider fires many inputs, one draw per frame does. */
  scheduleDraw() {
    if (this.drawFrame) return;
    this.drawFrame = requestAnimationFrame(() => {
      this.drawFrame = 0;
      this.draw();
    });
  }

  setOptions(select, options, wanted) {
    const values = options.map(([v]) => v);
    const same =
      select.options.length === values.length &&
      values.every((v, i) => select.options[i].value === v);
    if (!same) {
      select.replaceChildren(...options.map(([v, label]) => el("option", { value: v }, label)));
    }
    select.value = values.includes(wanted) ? wanted : values[0];
  }

  xOptions() {
    const base = this.stream === "system" ? ["time", "relative"] : ["step", "time", "relative"];
    const opts = base.map((v) => [v, X_LABELS[v]]);
    if (this.stream !== "system") for (const k of this.allKeys()) opts.push([k, k]);
    return opts;
  }

  groupOptions() {
    const keys = new Set();
    for (const info of this.info.values()) {
      for (const k of Object.keys(flatten(info.config))) keys.add(k);
    }
    return [
      ["none", "none"],
      ...[...keys].sort().map((k) => [`config.${k}`, `config.${k}`]),
      ["tag", "tag"],
    ];
  }

  // ---- data ---------------------------------------------------------------------------

  /** Every number key the runs have (history) or their system keys, sorted. */
  allKeys() {
    const keys = new Set();
    for (const info of this.info.values()) {
      if (this.stream === "system") for (const k of info.system_keys || []) keys.add(k);
      else {
        for (const [k, kind] of Object.entries(info.keys || {})) {
          if (kind === "number" && !k.startsWith("_")) keys.add(k);
        }
      }
    }
    return [...keys].filter((k) => !this.onlyKeys || this.onlyKeys.has(k)).sort();
  }

  visibleKeys() {
    const q = this.settings.search.toLowerCase();
    return this.allKeys().filter((k) => !q || k.toLowerCase().includes(q));
  }

  /** Serialised: a poll and a control change never fetch or draw at the same time. */
  refresh(force) {
    this.queue = this.queue
      .then(() => this.update(force))
      .catch((err) => {
        if (!this.stopped) showError(err);
        this.finishFirstDraw(); // the page is ready (showing the error), not blank forever
      });
    return this.queue;
  }

  async update(force) {
    if (this.stopped) return;
    const moved = await this.fetchInfo();
    if (this.stopped) return;
    this.setOptions(this.xaxis, this.xOptions(), this.settings.x);
    this.settings.x = this.xaxis.value;
    if (this.groupBy) {
      this.setOptions(this.groupBy, this.groupOptions(), this.settings.group);
      this.settings.group = this.groupBy.value;
    }
    this.keys = this.visibleKeys();
    this.layout();
    const width = this.chartWidth();
    const stale = force || this.widthMoved(width);
    if (!stale && moved.length === 0) {
      this.finishFirstDraw();
      return;
    }
    this.fetchedWidth = width;
    if (this.settings.group !== "none") await this.fetchGroups(width);
    else {
      this.groups = [];
      await this.fetchSeries(stale ? this.runs : moved, width);
    }
    if (this.stopped) return;
    this.draw();
    this.onGroups(this.groups.map(({ label, runs, color }) => ({ label, runs, color })));
  }

  /** Narrower by 5%: refetch (at most ~2 points per pixel); wider by 10%: more detail. */
  widthMoved(width) {
    return width < 0.95 * this.fetchedWidth || width > 1.1 * this.fetchedWidth;
  }

  /** Show a failed request; clear the box once the requests succeed again (only our error). */
  report(err) {
    if (this.stopped) return;
    if (err) {
      showError(err);
      this.shownError = true;
    } else if (this.shownError) {
      showError(null);
      this.shownError = false;
    }
  }

  /** Each run's details (a 304 when its revision has not moved); the runs that moved. */
  async fetchInfo() {
    const moved = [];
    const known = this.known || new Map();
    this.known = null;
    const answers = await Promise.allSettled(
      this.runs.map((path) => (known.has(path) ? { data: known.get(path) } : getJSON(runApi(path)))),
    );
    let failure = null;
    let changed = false;
    answers.forEach((a, i) => {
      const path = this.runs[i];
      if (a.status === "rejected") {
        failure = failure || a.reason;
        return;
      }
      const old = this.info.get(path);
      if (!old || old.rev !== a.value.data.rev || !this.series.has(path)) moved.push(path);
      changed = changed || old !== a.value.data; // a 304 hands back the same object
      this.info.set(path, a.value.data);
    });
    this.report(failure);
    if (changed) this.onInfo(this.info); // a state can change without a revision (crashed)
    return moved;
  }

  /** The x range every compared run is fetched with, so their buckets line up. */
  sharedRange() {
    if (this.zoom) return this.zoom;
    if (this.runs.length < 2 || this.settings.x !== "step") return {};
    let xmin = Infinity;
    let xmax = -Infinity;
    for (const info of this.info.values()) {
      const first = info.attempts && info.attempts.length ? info.attempts[0].first_step : 0;
      if (Number.isFinite(first)) xmin = Math.min(xmin, first);
      if (Number.isFinite(info.last_step)) xmax = Math.max(xmax, info.last_step);
    }
    return xmin < xmax ? { xmin, xmax } : {};
  }

  /** The keys of this.keys that run `path` has (asking a run for a key it lacks is a 400). */
  runKeys(path) {
    const info = this.info.get(path);
    if (!info) return [];
    const has =
      this.stream === "system"
        ? new Set(info.system_keys || [])
        : new Set(Object.keys(info.keys || {}).filter((k) => info.keys[k] === "number"));
    const x = this.settings.x;
    if (!["step", "time", "relative"].includes(x) && !has.has(x)) return []; // no such x axis
    return this.keys.filter((k) => has.has(k));
  }

  async fetchSeries(paths, width) {
    const range = this.sharedRange();
    const base = { x: this.settings.x, width, stream: this.stream, ...range };
    const answers = await Promise.allSettled(
      paths.map((p) => {
        const keys = this.runKeys(p);
        if (keys.length === 0) return Promise.resolve({ data: { series: [], attempts: [] } });
        return getJSON(`${runApi(p)}/series`, { key: keys, ...base });
      }),
    );
    answers.forEach((a, i) => {
      if (a.status === "fulfilled") this.series.set(paths[i], a.value.data);
      else {
        this.series.set(paths[i], { series: [], attempts: [] });
        this.report(a.reason);
      }
    });
  }

  /** Runs grouped by the chosen config key or by tag (a run with two tags is in both groups). */
  grouping() {
    const by = this.settings.group;
    const groups = new Map(); // label -> {value, runs}
    const add = (label, value, path) => {
      if (!groups.has(label)) groups.set(label, { value, runs: [] });
      groups.get(label).runs.push(path);
    };
    for (const path of this.runs) {
      const info = this.info.get(path);
      if (!info) continue;
      if (by === "tag") {
        const tags = info.tags && info.tags.length ? info.tags : [];
        for (const t of tags) add(`tag ${t}`, t, path);
        if (tags.length === 0) add("no tag", "\uffff", path);
      } else {
        const key = by.slice("config.".length);
        const value = flatten(info.config)[key];
        add(`${key}=${value === undefined ? "(unset)" : value}`, value ?? "\uffff", path);
      }
    }
    // numbers in numeric order (lr=0.001 before lr=0.01), then strings; unset last
    const order = ({ value: a }, { value: b }) =>
      typeof a === "number" && typeof b === "number"
        ? a - b
        : typeof a === "number"
          ? -1
          : typeof b === "number"
            ? 1
            : String(a).localeCompare(String(b));
    return [...groups.entries()]
      .sort(([, a], [, b]) => order(a, b))
      .map(([label, { runs }], i) => ({ label, runs, color: colorFor(i), data: new Map() }));
  }

  async fetchGroups(width) {
    const groups = this.grouping();
    const range = this.sharedRange(); // one bucket grid for every group
    const jobs = [];
    const keysOf = new Map(this.runs.map((p) => [p, new Set(this.runKeys(p))]));
    for (const g of groups) {
      for (const key of this.keys) {
        const runs = g.runs.filter((p) => keysOf.get(p).has(key));
        if (runs.length === 0) continue;
        const params = { run: runs, key, x: this.settings.x, width, ...range };
        jobs.push(
          getJSON("/api/v1/group-series", params).then(
            ({ data }) => g.data.set(key, data),
            (err) => this.report(err),
          ),
        );
      }
    }
    await Promise.all(jobs);
    this.groups = groups;
  }

  // ---- drawing ------------------------------------------------------------------------

  chartWidth() {
    const any = this.grid.querySelector(".chart");
    const w = any ? any.clientWidth : this.grid.clientWidth;
    return Math.max(100, Math.min(4000, Math.round(w || 600)));
  }

  /** One div.chart per visible key, in key order; charts of hidden keys are destroyed. */
  layout() {
    const wanted = new Set(this.keys);
    for (const [key, p] of this.plots) {
      if (!wanted.has(key)) {
        if (p.u) p.u.destroy();
        p.div.remove();
        this.plots.delete(key);
      }
    }
    for (const key of this.keys) {
      if (!this.plots.has(key)) {
        this.plots.set(key, { div: el("div", { class: "chart", "data-key": key }), u: null });
      }
    }
    // in key order; moved only when a new key came (a poll must not reflow the charts)
    const divs = this.keys.map((key) => this.plots.get(key).div);
    const shown = [...this.grid.children];
    if (divs.length !== shown.length || divs.some((d, i) => shown[i] !== d)) {
      this.grid.replaceChildren(...divs);
    }
    const none = this.info.size > 0 && this.keys.length === 0;
    this.empty.hidden = !none;
    if (none) {
      this.empty.textContent = this.settings.search
        ? `no metric matches “${this.settings.search}”`
        : this.stream === "system"
          ? "no system metrics recorded"
          : "no metrics logged yet";
    }
  }

  draw() {
    if (this.stopped) return;
    for (const key of this.keys) this.drawChart(key);
    this.finishFirstDraw();
  }

  finishFirstDraw() {
    if (this.drawnOnce) {
      this.drawnOnce();
      this.drawnOnce = null;
    }
  }

  runLabel(path) {
    const info = this.info.get(path) || {};
    return this.runs.length > 1 ? info.name || path : info.name || info.id || path;
  }

  /** [x, y1, y2, ...] (uPlot's aligned data) and the series options for `key`. */
  chartData(key) {
    const w = this.settings.smoothing;
    const log = this.settings.log;
    const clean = (ys) => (log ? ys.map((y) => (y > 0 ? y : null)) : ys);
    const tables = [];
    const series = [{}];
    const bands = [];
    const markers = [];
    if (this.settings.group !== "none") {
      for (const g of this.groups) {
        const d = g.data.get(key);
        if (!d || !d.x || d.x.length === 0) continue;
        const std = this.settings.band === "std";
        const lo = std ? d.mean.map((m, i) => m - d.std[i]) : d.min;
        const hi = std ? d.mean.map((m, i) => m + d.std[i]) : d.max;
        tables.push([d.x, clean(ema(d.mean, w)), clean(ema(hi, w)), clean(ema(lo, w))]);
        const n = series.length;
        const label = `${g.label} (${g.runs.length})`;
        series.push(
          { label: `${label} mean`, stroke: g.color, width: 1.5, spanGaps: true },
          { label: `${label} ${std ? "+std" : "max"}`, stroke: withAlpha(g.color, 0.35), width: 0.5, spanGaps: true, edge: true },
          { label: `${label} ${std ? "-std" : "min"}`, stroke: withAlpha(g.color, 0.35), width: 0.5, spanGaps: true, edge: true },
        );
        bands.push({ series: [n + 1, n + 2], fill: withAlpha(g.color, 0.15) });
        for (const m of d.attempts || []) markers.push({ ...m, color: g.color });
      }
    } else {
      // Smoothed, each run's raw curve stays drawn, faint, as TensorBoard's: first, so under
      // the smoothed ones, and out of the legend (an edge); `raw` marks it for the counts.
      const raws = [];
      this.runs.forEach((path, i) => {
        const answer = this.series.get(path);
        const s = answer && answer.series.find((one) => one.key === key);
        if (!s || s.x.length === 0) return;
        const label = this.runLabel(path);
        if (w > 0) {
          raws.push([[s.x, clean(s.y)], {
            label: `${label} raw`, stroke: withAlpha(this.colors[i], 0.25), width: 1,
            spanGaps: true, edge: true, raw: true, points: { show: false },
          }]);
        }
        tables.push([s.x, clean(ema(s.y, w))]);
        series.push({ label, stroke: this.colors[i], width: 1.25, spanGaps: true });
        for (const m of answer.attempts || []) markers.push({ ...m, color: this.colors[i] });
      });
      tables.unshift(...raws.map((r) => r[0]));
      series.splice(1, 0, ...raws.map((r) => r[1]));
    }
    let data;
    if (tables.length === 0) data = [[]];
    else if (tables.length === 1) data = tables[0];
    else data = uPlot.join(tables);
    return { data, series, bands, markers };
  }

  drawChart(key) {
    const p = this.plots.get(key);
    const { data, series, bands, markers } = this.chartData(key);
    p.markers = markers;
    let points = 0;
    for (let i = 1; i < data.length; i++) {
      if (series[i].raw) continue;
      for (const y of data[i]) if (y !== null && y !== undefined) points++;
    }
    p.points = points;
    p.raw = series.filter((s) => s.raw).length;
    const signature = JSON.stringify([
      series.map((s) => [s.label, s.stroke]), this.settings.x, this.settings.log, bands.length,
    ]);
    if (p.u && p.signature === signature) {
      p.u.setData(data);
      return;
    }
    if (p.u) p.u.destroy();
    p.signature = signature;
    p.u = new uPlot(this.plotOptions(key, p, series, bands), data, p.div);
    // a band's edges are drawn but not listed: the legend shows each group's mean
    const rows = p.u.root.querySelectorAll(".u-legend .u-series");
    series.forEach((s, i) => {
      if (s.edge && rows[i]) rows[i].style.display = "none"; // uPlot's CSS beats [hidden]
    });
  }

  plotOptions(key, p, series, bands) {
    const x = this.settings.x;
    const time = x === "time";
    const self = this;
    const yValue = (u, v) => fmtNumber(v);
    for (let i = 1; i < series.length; i++) series[i].value = yValue;
    series[0] = {
      label: X_LABELS[x] || x,
      value: time ? "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" : (u, v) => fmtNumber(v),
    };
    return {
      title: key,
      width: p.div.clientWidth || this.chartWidth(),
      height: CHART_HEIGHT,
      series,
      bands,
      scales: {
        x: {
          time,
          range: (u, dmin, dmax) => xRange(self.zoom, u.data[0], dmin, dmax, time),
        },
        y: this.settings.log ? { distr: 3, log: 10 } : {},
      },
      axes: [
        {
          label: time ? undefined : X_LABELS[x] || x,
          labelSize: time ? 0 : 20,
          grid: { stroke: "rgba(0,0,0,0.06)", width: 1 },
        },
        // thin grid lines: a log scale has nine per decade
        {
          size: yAxisSize,
          grid: { stroke: "rgba(0,0,0,0.06)", width: 1 },
          values: this.settings.log ? undefined : tickLabels,
        },
      ],
      legend: { live: true },
      cursor: {
        drag: { x: true, y: false, setScale: false },
        dataIdx: (u, sidx, idx) => nearestDefined(u.data[sidx], u.data[0], idx),
      },
      hooks: {
        draw: [(u) => this.afterDraw(u, p)],
        setSelect: [(u) => this.onSelect(u)],
        ready: [(u) => u.over.addEventListener("dblclick", () => this.resetZoom())],
      },
    };
  }

  /** Resume markers, then the data-* attributes the tests and the benchmark read. */
  afterDraw(u, p) {
    const drawn = drawMarkers(u, p.markers || []);
    const div = p.div;
    div.dataset.series = String(u.series.length - 1 - (p.raw || 0)); // curves, not raw shadows
    div.dataset.raw = String(p.raw || 0);
    div.dataset.points = String(p.points);
    div.dataset.xmin = String(u.scales.x.min);
    div.dataset.xmax = String(u.scales.x.max);
    div.dataset.markers = String(drawn);
    div.dataset.ready = "1";
  }

  /** A drag selected an x range: refetch it at full resolution (the server downsamples less). */
  onSelect(u) {
    const sel = u.select;
    if (sel.width < 4) return;
    const xmin = u.posToVal(sel.left, "x");
    const xmax = u.posToVal(sel.left + sel.width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    if (!(xmax > xmin)) return;
    this.zoom = { xmin, xmax };
    this.refresh(true);
  }

  resetZoom() {
    if (!this.zoom) return;
    this.zoom = null;
    this.refresh(true);
  }

  onResize() {
    clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => {
      for (const p of this.plots.values()) {
        if (p.u && p.div.clientWidth && p.div.clientWidth !== p.u.width) {
          p.u.setSize({ width: p.div.clientWidth, height: CHART_HEIGHT });
        }
      }
      // points for the new width (not on the first layout: the first fetch measured it)
      if (this.fetchedWidth && this.stopPoll && this.widthMoved(this.chartWidth())) {
        this.refresh(true);
      }
    }, 150);
  }
}

// The x scale: the zoomed range, else the data's; one point gets a little room on each side
// (uPlot would otherwise widen a single time point to years).
function xRange(zoom, xs, dmin, dmax, time) {
  if (zoom) return [zoom.xmin, zoom.xmax];
  if (xs && xs.length === 1) {
    // uPlot has already widened dmax by a day (in ms units) for a lone time point
    const pad = time ? 60 : Math.max(1, Math.abs(xs[0]) * 0.01);
    return [xs[0] - pad, xs[0] + pad];
  }
  if (dmin === null || dmin === undefined) return [0, 1];
  return [dmin, dmax];
}

// The decimals a tick increment needs (0.25 -> 2, 5 -> 0).
function decimals(incr) {
  let d = 0;
  while (d < 15 && Math.abs(Math.round(incr * 10 ** d) - incr * 10 ** d) > 1e-6) d++;
  return d;
}

// Linear y ticks with as many decimals as their spacing needs: uPlot's default rounds to three,
// which labels ticks 0.0002 apart "0", "0", "0.001".
function tickLabels(u, splits, axisIdx, space, incr) {
  const tiny = incr > 0 && incr < 1e-4;
  const d = tiny ? 0 : Math.min(decimals(incr), 12);
  return splits.map((v) => {
    if (v === null || v === undefined) return "";
    if (tiny || Math.abs(v) >= 1e9) return v === 0 ? "0" : v.toExponential(2);
    return v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  });
}

// Wide enough for the longest tick label (uPlot's default 50 px cuts "0.000123").
function yAxisSize(u, values, axisIdx, cycleNum) {
  const axis = u.axes[axisIdx];
  if (cycleNum > 1) return axis._size;
  let longest = 0;
  for (const v of values || []) longest = Math.max(longest, String(v).length);
  return Math.max(40, Math.ceil(longest * 7 + axis.ticks.size + axis.gap + 6));
}

/** Dashed vertical lines where each attempt after the first starts: "#2 host". */
function drawMarkers(u, markers) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const ratio = uPlot.pxRatio || 1;
  let drawn = 0;
  ctx.save();
  ctx.font = `${Math.round(11 * ratio)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  ctx.textAlign = "left"; // uPlot leaves the last axis's alignment on the context
  for (const m of markers) {
    if (m.x === null || m.x === undefined || m.x < u.scales.x.min || m.x > u.scales.x.max) continue;
    const px = Math.round(u.valToPos(m.x, "x", true));
    if (px < left - 1 || px > left + width + 1) continue;
    ctx.strokeStyle = m.color;
    ctx.lineWidth = 1.5 * ratio;
    ctx.setLineDash([5 * ratio, 4 * ratio]);
    ctx.beginPath();
    ctx.moveTo(px, top);
    ctx.lineTo(px, top + height);
    ctx.stroke();
    const label = `#${m.attempt}${m.host ? ` ${m.host}` : ""}`;
    ctx.fillStyle = m.color;
    const tw = ctx.measureText(label).width;
    const tx = px + 3 * ratio + tw > left + width ? px - 3 * ratio - tw : px + 3 * ratio;
    ctx.fillText(label, tx, top + 2 * ratio + (drawn % 3) * 13 * ratio);
    drawn++;
  }
  ctx.restore();
  return drawn;
}

