// The run page (/runs/p/id): what one run is (config, summary, notes), how it ran (the attempts
// on a shared time axis: a preempted run and its resumes side by side), what it logged (metrics,
// system metrics, media), what it saved (files, each version downloadable) and what it printed
// (console per attempt). One poll of the run (its revision as ETag) drives every refresh.
import { getJSON, getTextResponse, poll, runApi, runPage, showError, withParams } from "./api.js";
import { MetricCharts, SETTING_NAMES, settingsFrom, settingsParams } from "./chart.js";
import {
  badge,
  el,
  fill,
  fmtBytes,
  fmtDuration,
  fmtTime,
  fmtValue,
  flatten,
  markReady,
  setCrumbs,
  setLive,
} from "./fmt.js";
import { MediaPanels } from "./media.js";

const SECTIONS = [
  ["overview", "Overview"],
  ["attempts", "Attempts"],
  ["metrics", "Metrics"],
  ["system", "System"],
  ["media", "Media"],
  ["files", "Files"],
  ["console", "Console"],
];
const CONSOLE_TAIL = 1 << 20;
const SYSTEM_OPEN = "localrun.system.open"; // localStorage: the system charts are shown

// A key/value table (config or summary) with a filter box that survives live refreshes.
class KeyValues {
  constructor(id, title) {
    this.rows = [];
    this.filter = el("input", {
      type: "search",
      placeholder: "filter keys",
      "aria-label": `Filter ${title} keys`,
    });
    this.count = el("span", { class: "muted" });
    this.body = el("tbody");
    this.table = el("table", { id, class: "grid kvt" }, el("caption", { class: "sr-only" }, title), this.body);
    this.root = el(
      "div",
      { class: "kv" },
      el("h3", {}, title, this.count, this.filter),
      el("div", { class: "tablewrap" }, this.table),
    );
    this.filter.addEventListener("input", () => this.draw());
  }

  update(obj) {
    this.rows = flatten(obj || {});
    this.count.textContent = String(this.rows.length);
    this.draw();
  }

  draw() {
    const f = this.filter.value.trim().toLowerCase();
    const rows = f ? this.rows.filter(([k]) => k.toLowerCase().includes(f)) : this.rows;
    fill(this.body,
      ...rows.map(([k, v]) => el("tr", { dataset: { key: k } }, el("td", {}, k), el("td", {}, fmtValue(v)))),
    );
    if (!rows.length) {
      this.body.append(el("tr", {}, el("td", { colspan: 2, class: "muted" }, this.rows.length ? "no key matches" : "empty")));
    }
  }
}

// Start a MetricCharts and resolve once its charts are drawn (each div.chart has data-ready),
// bounded: a chart that never draws must not keep the page from saying it is ready.
async function startCharts(charts, container, known) {
  try {
    await charts.start(known);
  } catch (err) {
    showError(err);
  }
  const until = performance.now() + 15000;
  while (performance.now() < until) {
    const all = [...container.querySelectorAll("div.chart")];
    if (all.every((c) => c.dataset.ready === "1")) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function attemptsTimeline(attempts, runState) {
  const now = Date.now() / 1000;
  const spans = attempts.map((a, i) => {
    const start = a.started;
    const live = a.ended == null && i === attempts.length - 1 && runState === "running";
    const end = a.ended ?? (live ? now : start);
    return { a, start, end, live };
  });
  const known = spans.filter((s) => typeof s.start === "number");
  if (!known.length) return el("p", { class: "muted" }, "no attempt times recorded");
  const t0 = Math.min(...known.map((s) => s.start));
  const t1 = Math.max(...known.map((s) => s.end), t0 + 1);
  const pct = (t) => `${(((t - t0) / (t1 - t0)) * 100).toFixed(3)}%`;
  const lanes = known.map(({ a, start, end, live }) => {
    const state = live ? "running" : a.state || "unknown";
    const dur = fmtDuration(end - start);
    return el(
      "div",
      { class: "lane" },
      el(
        "div",
        {
          class: `bar state-${state}`,
          style: `left:${pct(start)};width:calc(${pct(end)} - ${pct(start)})`,
          title: `attempt ${a.attempt} on ${a.host || "?"} (pid ${a.pid ?? "?"}): ${state}, ${fmtTime(start)} – ${live ? "now" : fmtTime(end)} (${dur})`,
          dataset: { attempt: String(a.attempt) },
        },
        `#${a.attempt} ${a.host || ""} · ${state} · ${dur}`,
      ),
    );
  });
  return el(
    "div",
    { class: "timeline", role: "img", "aria-label": "attempts on a time axis" },
    lanes,
    el("div", { class: "axis" }, el("span", {}, fmtTime(t0)), el("span", {}, fmtDuration(t1 - t0)), el("span", {}, fmtTime(t1))),
  );
}

// What code an attempt ran: the git commit (and branch, and whether the tree was dirty).
function codeOf(ctx) {
  const git = ctx && ctx.git;
  if (!git || !git.commit) return "";
  return `${git.commit.slice(0, 8)}${git.dirty ? "+dirty" : ""}${git.branch ? ` (${git.branch})` : ""}`;
}

function contextTitle(ctx) {
  if (!ctx) return null;
  const lines = [];
  if (ctx.argv) lines.push(`argv: ${ctx.argv.join(" ")}`);
  if (ctx.cwd) lines.push(`cwd: ${ctx.cwd}`);
  if (ctx.python) lines.push(`python ${ctx.python} (${ctx.executable || ""})`);
  if (ctx.git && ctx.git.commit) lines.push(`git ${ctx.git.commit}${ctx.git.dirty ? " (dirty)" : ""}`);
  if (ctx.job) lines.push(`job: ${JSON.stringify(ctx.job)}`);
  if (ctx.user) lines.push(`user: ${ctx.user}`);
  return lines.join("\n") || null;
}

function attemptsTable(attempts, runState) {
  const rows = attempts.map((a, i) => {
    const last = i === attempts.length - 1;
    const before = i > 0 ? attempts[i - 1].ended : null;
    const gap = typeof before === "number" && typeof a.started === "number" ? a.started - before : null;
    const live = last && a.ended == null && runState === "running";
    const state = live ? "running" : a.state || "";
    const end = a.ended ?? (live ? Date.now() / 1000 : null);
    return el(
      "tr",
      { dataset: { attempt: String(a.attempt) } },
      el("td", { class: "num", dataset: { col: "attempt" } }, String(a.attempt)),
      el("td", { dataset: { col: "state" } }, state ? badge(state) : ""),
      el("td", { dataset: { col: "host" } }, a.host || ""),
      el("td", { class: "num", dataset: { col: "pid" } }, a.pid ?? ""),
      el("td", { dataset: { col: "started" }, title: gap !== null ? `resumed ${fmtDuration(Math.max(0, gap))} after attempt ${attempts[i - 1].attempt} ended` : null }, fmtTime(a.started)),
      el("td", { dataset: { col: "ended" } }, a.ended != null ? fmtTime(a.ended) : live ? "running" : "—"),
      el("td", { class: "num", dataset: { col: "duration" } }, end != null && a.started != null ? fmtDuration(end - a.started) : ""),
      el("td", { class: "num", dataset: { col: "exit_code" }, title: a.exit_code == null && !live ? "no exit code: the process was killed" : null }, a.exit_code ?? (live ? "" : "—")),
      el("td", { class: "num", dataset: { col: "first_step" } }, a.first_step ?? ""),
      el("td", { class: "mono", dataset: { col: "code" }, title: contextTitle(a.context) }, codeOf(a.context)),
    );
  });
  const head = ["#", "State", "Host", "PID", "Started", "Ended", "Duration", "Exit code", "First step", "Code"];
  return el(
    "div",
    { class: "tablewrap" },
    el(
      "table",
      { class: "grid", id: "attempts-table" },
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    ),
  );
}

// A file's download address: each path segment encoded (names may hold folders).
const fileUrl = (path, name, version) =>
  `${runApi(path)}/files/${name.split("/").map(encodeURIComponent).join("/")}?version=${encodeURIComponent(version)}`;

function filesTable(path, files) {
  if (!files.length) return el("p", { class: "muted" }, "No files saved (run.save).");
  const rows = [];
  for (const f of files) {
    // newest first: versions are named so that their order is their names' order
    const versions = [...(f.versions || [])].sort((a, b) => String(b.version).localeCompare(String(a.version)));
    versions.forEach((v, i) => {
      rows.push(
        el(
          "tr",
          { dataset: { file: f.name, version: String(v.version) } },
          i === 0 ? el("td", { rowspan: versions.length, class: "mono" }, f.name) : null,
          el("td", { class: "mono" }, String(v.version), i === 0 && versions.length > 1 ? el("span", { class: "muted" }, " (latest)") : null),
          el("td", { class: "num", title: v.size != null ? `${v.size} bytes` : null }, fmtBytes(v.size)),
          el("td", {}, fmtTime(v.saved)),
          el("td", { class: "num" }, v.attempt ?? ""),
          el("td", { class: "mono", title: v.sha256 || "" }, (v.sha256 || "").slice(0, 12)),
          el("td", {}, el("a", { class: "download", href: fileUrl(path, f.name, v.version), download: f.name.split("/").pop() }, "download")),
        ),
      );
    });
  }
  const head = ["File", "Version", "Size", "Saved", "Attempt", "sha256", ""];
  return el(
    "div",
    { class: "tablewrap" },
    el("table", { class: "grid files" }, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, rows)),
  );
}

/** The run page's URL with the chart settings ``settings`` (other parameters kept). */
function runUrl(path, settings) {
  const kept = {};
  for (const [k, v] of new URLSearchParams(location.search)) {
    if (!SETTING_NAMES.has(k)) (kept[k] = kept[k] || []).push(v);
  }
  return withParams(runPage(path), { ...kept, ...settingsParams(settings) });
}

export function renderRun(main, path, params) {
  const [project, id] = [path.slice(0, path.indexOf("/")), path.slice(path.indexOf("/") + 1)];
  setCrumbs([["runs", "/"], [project, `/?project=${encodeURIComponent(project)}`], [id, null]]);
  document.title = `${path} · localrun`;

  const title = el("h1", {}, el("span", { class: "name" }, id));
  const stateBadge = el("span", { class: "state" });
  title.append(stateBadge);
  const sub = el("span", { class: "muted mono" }, path);
  const damaged = el("div", { id: "damaged", hidden: true, role: "alert" });
  const meta = el("div", { class: "run-meta" });
  const nav = el("nav", { class: "sections", "aria-label": "Sections" }, SECTIONS.map(([sid, label]) =>
    el("a", { href: `#${sid}`, onclick: (e) => {
      e.preventDefault();
      document.getElementById(sid)?.scrollIntoView({ block: "start" });
    } }, label)));
  const section = (sid, label, ...kids) =>
    el("section", { id: sid, "aria-labelledby": `${sid}-h` }, el("h2", { id: `${sid}-h` }, label), ...kids);

  // overview
  const notes = el("div", { class: "notes", hidden: true });
  const config = new KeyValues("config", "Config");
  const summary = new KeyValues("summary", "Summary");
  const overview = section("overview", "Overview", notes, el("div", { class: "kv-pair" }, config.root, summary.root));
  // attempts
  const attemptsBody = el("div");
  const attemptsCount = el("span", { class: "muted" });
  const attempts = section("attempts", "Attempts", attemptsBody);
  attempts.firstChild.append(attemptsCount);
  // charts
  const metricsBox = el("div", { class: "charts" });
  const metrics = section("metrics", "Metrics", metricsBox);
  const systemBox = el("div", { class: "charts" });
  const systemNote = el("p", { class: "muted" }, "No system metrics recorded.");
  const systemToggle = el("button", { type: "button", id: "system-toggle", hidden: true, "aria-expanded": "false", "aria-controls": "system" });
  const system = section("system", "System", systemNote, systemBox);
  system.firstChild.append(systemToggle);
  // media
  const mediaBox = el("div");
  const media = section("media", "Media", mediaBox);
  // files
  const filesBody = el("div");
  const files = section("files", "Files", filesBody);
  // console
  const consoleSelect = el("select", { id: "console-attempt", "aria-label": "Console of attempt" });
  const consoleNote = el("span", { class: "muted" });
  const consoleFollow = el("label", { class: "muted" });
  const consoleText = el("pre", { id: "console-text", tabindex: "0", "aria-label": "Console output" });
  const consoleSection = section(
    "console",
    "Console",
    el("div", { class: "console-bar" }, el("label", { for: "console-attempt" }, "attempt"), consoleSelect, consoleNote, consoleFollow),
    consoleText,
  );

  main.append(
    el("div", { class: "run-head" }, title, sub),
    damaged,
    meta,
    nav,
    overview,
    attempts,
    metrics,
    system,
    media,
    files,
    consoleSection,
  );

  // the sections say nothing about a run that cannot be read at all (an unknown run)
  const body = [nav, overview, attempts, metrics, system, media, files, consoleSection];
  const showBody = (on) => body.forEach((node) => (node.hidden = !on));

  const mediaPanels = new MediaPanels(mediaBox, path, showError);
  let run = null;
  let charts = null;
  let systemCharts = null;
  let firstDrawn = false;
  let consoleKey = null; // what the console shows: attempt + revision
  let stopped = false;

  function drawHead(r) {
    title.querySelector(".name").textContent = r.name || r.id || id;
    fill(stateBadge, badge(r.state));
    if (r.problem) {
      damaged.hidden = false;
      damaged.textContent = `This run is damaged: ${r.problem}`;
    } else damaged.hidden = true;
    const item = (label, value, attrs = {}) =>
      value === null || value === undefined || value === "" ? null : el("span", attrs, `${label} `, el("b", {}, value));
    const att = r.attempts || [];
    const hosts = [...new Set(att.map((a) => a.host).filter(Boolean))];
    const runtime = typeof r.created === "number" && typeof r.updated === "number" ? fmtDuration(r.updated - r.created) : "";
    fill(meta,
      ...[
        item("project", r.project || project),
        item("id", r.id || id, { class: "mono" }),
        item(hosts.length > 1 ? "hosts" : "host", hosts.join(", ")),
        item("created", fmtTime(r.created)),
        item("updated", fmtTime(r.updated)),
        item("runtime", runtime),
        item("step", r.last_step != null ? String(r.last_step) : null),
        item("attempts", att.length > 1 ? String(att.length) : null),
        item("group", r.group),
        item("job type", r.job_type),
        (r.tags || []).length ? el("span", { class: "tags" }, "tags ", (r.tags || []).map((t) => el("a", { class: "tag", href: `/?tag=${encodeURIComponent(t)}`, "data-nav": "" }, t))) : null,
      ].filter(Boolean),
    );
    document.title = `${r.name || id} (${r.state}) · localrun`;
  }

  function drawOverview(r) {
    notes.hidden = !r.notes;
    notes.textContent = r.notes || "";
    config.update(r.config);
    summary.update(r.summary);
  }

  function drawAttempts(r) {
    const att = r.attempts || [];
    attemptsCount.textContent = att.length > 1 ? `${att.length} attempts (resumed ${att.length - 1}×)` : att.length ? "1 attempt" : "";
    fill(attemptsBody,
      att.length ? attemptsTimeline(att, r.state) : el("p", { class: "muted" }, "No attempts recorded."),
      att.length ? attemptsTable(att, r.state) : null,
    );
  }

  async function drawConsole(r, force = false) {
    const list = (r.console && r.console.attempts) || [];
    const want = consoleSelect.value;
    const opts = [el("option", { value: "" }, list.length > 1 ? "all attempts" : "all")];
    for (const n of list) opts.push(el("option", { value: String(n) }, `attempt ${n}`));
    if ([...consoleSelect.options].map((o) => o.value).join() !== opts.map((o) => o.value).join()) {
      fill(consoleSelect, ...opts);
      consoleSelect.value = list.map(String).includes(want) ? want : "";
    }
    consoleText.hidden = !list.length;
    if (!list.length) {
      consoleText.textContent = "";
      consoleNote.textContent = "no console output captured";
      return;
    }
    const key = `${consoleSelect.value}@${r.rev}`;
    if (!force && key === consoleKey) return;
    const atEnd = consoleText.scrollTop + consoleText.clientHeight >= consoleText.scrollHeight - 8;
    const { text, headers } = await getTextResponse(`${runApi(path)}/console`, {
      attempt: consoleSelect.value,
      tail: CONSOLE_TAIL,
    });
    if (stopped) return;
    consoleKey = key;
    consoleText.textContent = text;
    const whole = Number(headers.get("X-Localrun-Console-Bytes"));
    const shown = new TextEncoder().encode(text).length;
    consoleNote.textContent = whole > shown ? `last ${fmtBytes(shown)} of ${fmtBytes(whole)}` : fmtBytes(whole || shown);
    consoleFollow.textContent = r.state === "running" ? "following the end" : "";
    // follow the end while the run runs (unless the reader scrolled up to read)
    if (atEnd || force || !consoleText.dataset.drawn) consoleText.scrollTop = consoleText.scrollHeight;
    consoleText.dataset.drawn = "1";
  }
  consoleSelect.addEventListener("change", () => run && drawConsole(run, true).catch(showError));

  // System charts (CPU, memory, disk, network: often ten of them) are drawn once the reader
  // opens the section; the choice is remembered across runs.
  let systemOpen = localStorage.getItem(SYSTEM_OPEN) === "1";
  async function startSystem(r) {
    const keys = r.system_keys || [];
    systemNote.hidden = keys.length > 0;
    systemToggle.hidden = !keys.length;
    systemToggle.textContent = systemOpen ? "hide" : `show ${keys.length} charts`;
    systemToggle.setAttribute("aria-expanded", String(systemOpen));
    if (!keys.length || !systemOpen || systemCharts) return;
    systemCharts = new MetricCharts(systemBox, { runs: [path], stream: "system" });
    await startCharts(systemCharts, systemBox, { [path]: r });
  }
  systemToggle.addEventListener("click", () => {
    systemOpen = !systemOpen;
    localStorage.setItem(SYSTEM_OPEN, systemOpen ? "1" : "0");
    if (!systemOpen && systemCharts) {
      systemCharts.stop();
      systemCharts = null;
      fill(systemBox);
    }
    if (run) startSystem(run).catch(showError);
  });

  async function tick() {
    const { data } = await getJSON(runApi(path));
    if (stopped) return;
    showError(null);
    setLive(true, data.state === "running" ? "live" : "");
    // the same answer object as the one drawn: nothing changed. (Not `changed`: the charts poll
    // this URL too, and a 304 after their 200 means "what the cache holds", not "what I drew".)
    if (data === run) return;
    const prev = run;
    run = data;
    showBody(true);
    drawHead(data);
    drawOverview(data);
    drawAttempts(data);
    fill(files, files.firstChild, filesTable(path, data.files || []));
    const waits = [];
    if (!charts) {
      charts = new MetricCharts(metricsBox, {
        runs: [path],
        stream: "history",
        settings: settingsFrom(params),
        onSettings: (s) => history.replaceState(null, "", runUrl(path, s)),
      });
      waits.push(startCharts(charts, metricsBox, { [path]: data }));
    }
    waits.push(startSystem(data));
    waits.push(mediaPanels.refresh(data.keys).catch(showError));
    waits.push(drawConsole(data, !prev).catch(showError));
    await Promise.all(waits);
    if (!firstDrawn && !stopped) {
      firstDrawn = true;
      markReady();
    }
  }

  const stopPoll = poll(async () => {
    try {
      await tick();
    } catch (err) {
      if (!run) {
        // nothing readable at all (unknown run): say so in the page, not only in #error
        title.querySelector(".name").textContent = id;
        fill(stateBadge);
        fill(meta, el("span", {}, "back to ", el("a", { href: "/", "data-nav": "" }, "all runs")));
        showBody(false);
        markReady();
      }
      throw err;
    }
  });
  return () => {
    stopped = true;
    stopPoll();
    if (charts) charts.stop();
    if (systemCharts) systemCharts.stop();
    setLive(false, "");
  };
}


