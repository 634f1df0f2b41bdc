// The runs page (/): every run of the root in one dense table, filtered and sorted by the server
// (GET /api/v1/runs pages through 10,000 runs without sending them all), with the query
// mirrored in the address bar so that a copied link shows the same view.
import { getJSON, poll, runPage, showError, withParams } from "./api.js";
import { navigate } from "./app.js";
import {
  STATES,
  fill,
  badge,
  debounce,
  el,
  fmtAgo,
  fmtTime,
  fmtValue,
  markReady,
  setCrumbs,
  setLive,
} from "./fmt.js";

const LIMIT = 100;
// Columns every run has: [key, header, sortable, numeric].
const BASE = [
  ["state", "State", true, false],
  ["name", "Name", true, false],
  ["project", "Project", true, false],
  ["attempts", "Attempts", true, true],
  ["host", "Host", true, false],
  ["created", "Created", true, false],
  ["updated", "Updated", true, false],
  ["last_step", "Step", true, true],
  ["tags", "Tags", false, false],
  ["group", "Group", true, false],
  ["notes", "Notes", false, false],
];
// Text columns start ascending (a..z), numbers and times descending (newest, largest first).
// Columns left out when no run of the page has a value for them (most roots use few of them).
const OPTIONAL = new Set(["tags", "group", "notes"]);
const ASC_FIRST = new Set(["name", "id", "project", "group", "state", "host"]);
const DEFAULT_EXTRA = { config: 3, summary: 4 }; // columns shown until the user picks some

// The view as the URL says it: the one source of truth of what is shown.
function readState(params) {
  const all = (k) => params.getAll(k).filter((v) => v !== "");
  const cols = params.getAll("col");
  return {
    project: params.get("project") || "",
    q: params.get("q") || "",
    states: all("state").filter((v) => STATES.includes(v)),
    sort: params.get("sort") || "created",
    order: params.get("order") === "asc" ? "asc" : "desc",
    page: Math.max(1, Number.parseInt(params.get("page"), 10) || 1),
    limit: Math.min(1000, Math.max(1, Number.parseInt(params.get("limit"), 10) || LIMIT)),
    tag: all("tag"),
    group: params.get("group") || "",
    host: params.get("host") || "",
    where: all("where"),
    // null: the default columns; [] (written as col=-): the user removed them all
    cols: cols.length ? cols.filter((c) => c !== "-" && c !== "") : null,
  };
}

function urlOf(st) {
  const p = {
    project: st.project,
    q: st.q,
    state: st.states,
    sort: st.sort === "created" ? "" : st.sort,
    order: st.order === "desc" ? "" : st.order,
    page: st.page > 1 ? st.page : "",
    limit: st.limit !== LIMIT ? st.limit : "",
    tag: st.tag,
    group: st.group,
    host: st.host,
    where: st.where,
    col: st.cols === null ? [] : st.cols.length ? st.cols : ["-"],
    poll: new URLSearchParams(location.search).get("poll"),
  };
  return withParams("/", p);
}

const READING_MS = 250; // how soon a partial list is asked for again

function apiParams(st) {
  return {
    project: st.project,
    q: st.q,
    state: st.states,
    tag: st.tag,
    group: st.group,
    host: st.host,
    where: st.where,
    sort: st.sort,
    order: st.order,
    offset: (st.page - 1) * st.limit,
    limit: st.limit,
  };
}

export function renderRuns(main, params) {
  const st = readState(params);
  // run paths, kept across pages and queries, and in this history entry: Back from the
  // compare page finds the runs still ticked
  const selected = new Set((history.state && history.state.selected) || []);
  let last = null; // the last answer drawn
  let lastKey = null; // its query
  let anchor = null; // the last checkbox clicked (shift-click selects a range)

  setCrumbs([["runs", null]]);

  // --- toolbar -----------------------------------------------------------------------------
  const search = el("input", {
    id: "search",
    type: "search",
    placeholder: "Search id, name, tags, notes, host…  (/)",
    value: st.q,
    "aria-label": "Search runs",
    autocomplete: "off",
    spellcheck: "false",
  });
  const project = el(
    "select",
    { id: "project", "aria-label": "Project" },
    el("option", { value: "" }, "all projects"),
  );
  // States: any several at once (crashed and preempted: the runs to look at after a night).
  const stateLabel = el("span", { class: "label" });
  const stateBoxes = STATES.map((s) => el("input", { type: "checkbox", name: "state", value: s }));
  const state = el(
    "details",
    { id: "state", class: "multi" },
    el("summary", { "aria-label": "State" }, stateLabel),
    el(
      "div",
      { class: "menu", role: "group", "aria-label": "States to show" },
      STATES.map((s, i) => el("label", {}, stateBoxes[i], badge(s))),
      el("button", { type: "button", class: "link", id: "all-states" }, "all states"),
    ),
  );
  const showStates = () => {
    for (const box of stateBoxes) box.checked = st.states.includes(box.value);
    stateLabel.textContent = st.states.length ? st.states.join(", ") : "all states";
  };
  showStates();
  const where = el("input", {
    id: "where",
    type: "text",
    placeholder: "config.lr>=0.01, summary.loss<0.5",
    value: st.where.join(", "),
    "aria-label": "Filter by config or summary values (comma separated; = != < <= > >= ~)",
    title: "config.X or summary.X, then = != < <= > >= or ~ (contains), then a value; comma separated; Enter applies",
    spellcheck: "false",
  });
  const addColumn = el("select", { id: "add-column", "aria-label": "Add a column" });
  const compare = el("button", { id: "compare", class: "primary", disabled: true, type: "button" }, "Compare");
  const clearSel = el("button", { id: "clear-selection", type: "button", hidden: true }, "Clear selection");
  const chips = el("div", { class: "chips", "aria-label": "Active filters" });

  const toolbar = el(
    "div",
    { class: "toolbar", role: "search" },
    search,
    el("label", {}, "Project", project),
    el("span", { class: "field" }, "State", state), // not a label: it would tick a box
    el("label", {}, "Where", where),
    addColumn,
    chips,
    el("span", { style: "flex:1" }),
    clearSel,
    compare,
  );

  // --- table and pager ---------------------------------------------------------------------
  const table = el("table", { id: "runs", class: "grid", "aria-describedby": "count" });
  const wrap = el("div", { class: "tablewrap" }, table);
  const prev = el("button", { id: "prev", type: "button", "aria-label": "Previous page" }, "‹ Prev");
  const next = el("button", { id: "next", type: "button", "aria-label": "Next page" }, "Next ›");
  const count = el("span", { id: "count", "aria-live": "polite" });
  // While the server's first read of a large root is under way, its answers hold the runs
  // read so far ("reading"): they are shown at once, said to be partial, and asked for again
  // soon rather than at the next poll.
  const reading = el("span", { id: "reading", class: "muted", hidden: true });
  const pager = el("div", { id: "pager" }, prev, count, reading, next);
  let again = null; // the timer of that sooner request
  main.append(toolbar, wrap, pager);
  fill(table, el("tbody", {}, el("tr", {}, el("td", { class: "empty" }, "Loading runs…"))));
  // "3 min ago" stays true while the page is open, without asking the server
  const ages = setInterval(() => {
    const now = Date.now() / 1000;
    for (const cell of table.querySelectorAll("td[data-t]")) cell.textContent = fmtAgo(Number(cell.dataset.t), now);
  }, 30000);

  // --- state changes -----------------------------------------------------------------------
  const keyOf = () => withParams("/api/v1/runs", apiParams(st));

  function changed({ resetPage = true } = {}) {
    if (resetPage) st.page = 1;
    history.replaceState(history.state, "", urlOf(st));
    lastKey = null; // redraw even when the answer is the same (a column was added)
    wrap.classList.add("loading");
    load().catch((err) => {
      wrap.classList.remove("loading");
      showError(err);
    });
  }

  async function load() {
    const key = keyOf();
    const { data } = await getJSON("/api/v1/runs", { ...apiParams(st), partial: 1 });
    if (key !== keyOf()) return; // the query changed meanwhile: its own load draws it
    clearTimeout(again);
    showReading(data.reading);
    showError(null);
    setLive(true, `live · ${fmtTime(Date.now() / 1000).slice(11)}`);
    // the very answer drawn last (a 304 returns the cached object): nothing to redraw
    if (key === lastKey && data === last) return;
    last = data;
    lastKey = key;
    draw(data);
    markReady();
    if (!data.reading && !document.body.dataset.complete) {
      document.body.dataset.complete = "1";
      performance.mark("localrun:complete");
    }
  }

  function showReading(r) {
    reading.hidden = !r;
    if (!r) return;
    reading.textContent = `· reading runs: ${r.read.toLocaleString("en-US")} of ${r.of.toLocaleString("en-US")}…`;
    again = setTimeout(() => load().catch(showError), READING_MS);
  }

  const onSearch = debounce(() => {
    st.q = search.value.trim();
    changed();
  }, 250);
  search.addEventListener("input", onSearch);
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      onSearch.cancel();
      st.q = search.value.trim();
      changed();
    } else if (e.key === "Escape" && search.value) {
      search.value = "";
      onSearch.cancel();
      st.q = "";
      changed();
    }
  });
  project.addEventListener("change", () => {
    st.project = project.value;
    changed();
  });
  state.addEventListener("change", () => {
    st.states = stateBoxes.filter((b) => b.checked).map((b) => b.value);
    showStates();
    changed();
  });
  state.querySelector("#all-states").addEventListener("click", () => {
    st.states = [];
    showStates();
    state.open = false;
    changed();
  });
  // a click anywhere else closes the menu, as a select's would (removed when the page is left)
  const onClickOutside = (e) => {
    if (state.open && !state.contains(e.target)) state.open = false;
  };
  document.addEventListener("click", onClickOutside);
  const applyWhere = () => {
    const parts = where.value
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    if (parts.join("\n") === st.where.join("\n")) return;
    st.where = parts;
    changed();
  };
  where.addEventListener("change", applyWhere);
  where.addEventListener("keydown", (e) => e.key === "Enter" && applyWhere());
  addColumn.addEventListener("change", () => {
    const col = addColumn.value;
    addColumn.value = "";
    if (!col) return;
    const cols = effectiveCols(last);
    if (!cols.includes(col)) st.cols = [...cols, col];
    changed({ resetPage: false });
  });
  prev.addEventListener("click", () => {
    if (st.page > 1) {
      st.page -= 1;
      changed({ resetPage: false });
    }
  });
  next.addEventListener("click", () => {
    st.page += 1;
    changed({ resetPage: false });
  });
  compare.addEventListener("click", () => {
    if (selected.size) navigate(withParams("/compare", { run: [...selected] }));
  });
  clearSel.addEventListener("click", () => {
    selected.clear();
    for (const box of table.querySelectorAll("input.select")) box.checked = false;
    syncSelection();
  });
  // "/" jumps to the search box, as in most tools people use daily
  const onKey = (e) => {
    const t = e.target;
    if (e.key === "/" && !(t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement)) {
      e.preventDefault();
      search.focus();
      search.select();
    }
  };
  document.addEventListener("keydown", onKey);

  function syncSelection() {
    history.replaceState({ ...(history.state || {}), selected: [...selected] }, "");
    compare.disabled = selected.size === 0;
    compare.textContent = selected.size ? `Compare ${selected.size}` : "Compare";
    compare.title = selected.size ? "" : "Select runs with the checkboxes to compare them";
    clearSel.hidden = selected.size === 0;
    for (const tr of table.querySelectorAll("tbody tr[data-run]")) {
      tr.classList.toggle("selected", selected.has(tr.dataset.run));
    }
    const boxes = [...table.querySelectorAll("tbody input.select")];
    const all = table.querySelector("thead input.select-all");
    if (all) {
      const n = boxes.filter((b) => b.checked).length;
      all.checked = boxes.length > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
  }

  // --- drawing ------------------------------------------------------------------------------
  function effectiveCols(data) {
    if (st.cols !== null) return st.cols;
    const cols = (data && data.columns) || {};
    const out = [];
    for (const kind of ["summary", "config"]) {
      for (const k of (cols[kind] || []).slice(0, DEFAULT_EXTRA[kind])) out.push(`${kind}.${k}`);
    }
    return out;
  }

  function drawControls(data) {
    const projects = data.projects || [];
    const want = st.project;
    fill(project,
      el("option", { value: "" }, "all projects"),
      projects.map((p) => el("option", { value: p }, p)),
      want && !projects.includes(want) ? el("option", { value: want }, want) : null,
    );
    project.value = want;
    showStates();
    const shown = new Set(effectiveCols(data));
    const cols = data.columns || {};
    fill(addColumn,
      el("option", { value: "" }, "+ column…"),
      ["config", "summary"].map((kind) =>
        (cols[kind] || []).length
          ? el(
              "optgroup",
              { label: kind },
              cols[kind]
                .filter((k) => !shown.has(`${kind}.${k}`))
                .map((k) => el("option", { value: `${kind}.${k}` }, `${kind}.${k}`)),
            )
          : null,
      ),
    );
    addColumn.value = "";
    addColumn.disabled = !(cols.config || []).length && !(cols.summary || []).length;

    const active = [];
    const chip = (label, drop) =>
      el(
        "span",
        { class: "chip" },
        label,
        el("button", { type: "button", "aria-label": `Remove filter ${label}`, onclick: drop }, "×"),
      );
    for (const t of st.tag) {
      active.push(chip(`tag: ${t}`, () => {
        st.tag = st.tag.filter((x) => x !== t);
        changed();
      }));
    }
    if (st.group) active.push(chip(`group: ${st.group}`, () => ((st.group = ""), changed())));
    if (st.host) active.push(chip(`host: ${st.host}`, () => ((st.host = ""), changed())));
    for (const w of st.where) {
      active.push(chip(w, () => {
        st.where = st.where.filter((x) => x !== w);
        where.value = st.where.join(", ");
        changed();
      }));
    }
    fill(chips, ...active);
  }

  // The base columns shown for an answer: project only across projects, optional ones when used.
  function baseColumns(runs) {
    return BASE.filter(([key]) => {
      if (key === "project") return !st.project;
      if (!OPTIONAL.has(key)) return true;
      return runs.some((r) => (Array.isArray(r[key]) ? r[key].length : r[key]));
    });
  }

  function header(base, cols, hasProblem) {
    const all = el("input", { type: "checkbox", class: "select-all", "aria-label": "Select all runs on this page" });
    all.addEventListener("change", () => {
      for (const box of table.querySelectorAll("tbody input.select")) {
        box.checked = all.checked;
        if (all.checked) selected.add(box.dataset.run);
        else selected.delete(box.dataset.run);
      }
      syncSelection();
    });
    const ths = [el("th", { scope: "col" }, all)];
    const sortable = (key, label, numeric, extra = null) => {
      const aria = st.sort === key ? (st.order === "asc" ? "ascending" : "descending") : null;
      return el(
        "th",
        { scope: "col", class: numeric ? "num" : null, dataset: { sort: key }, "aria-sort": aria },
        el("button", { type: "button", title: `Sort by ${label}` }, label),
        extra,
      );
    };
    for (const [key, label, canSort, numeric] of base) {
      ths.push(canSort ? sortable(key, label, numeric) : el("th", { scope: "col" }, label));
    }
    for (const col of cols) {
      const rm = el("button", { type: "button", class: "rm-col", "aria-label": `Remove column ${col}`, title: "Remove column" }, "×");
      rm.addEventListener("click", (e) => {
        e.stopPropagation();
        st.cols = effectiveCols(last).filter((c) => c !== col);
        changed({ resetPage: false });
      });
      ths.push(sortable(col, col, true, rm));
    }
    if (hasProblem) ths.push(el("th", { scope: "col" }, "Problem"));
    return el("thead", {}, el("tr", {}, ths));
  }

  function filterLink(text, apply) {
    if (!text) return "";
    return el("span", { class: "filterable", title: `Show only ${text}`, onclick: apply }, text);
  }

  function row(r, base, cols, hasProblem) {
    const path = r.path || `${r.project}/${r.id}`;
    const box = el("input", {
      type: "checkbox",
      class: "select",
      dataset: { run: path },
      checked: selected.has(path),
      "aria-label": `Select ${r.name || path}`,
    });
    const cells = [el("td", {}, box)];
    const td = (col, attrs, ...kids) => el("td", { ...attrs, dataset: { col } }, ...kids);
    for (const [key, , , numeric] of base) {
      const num = numeric ? { class: "num" } : {};
      if (key === "state") cells.push(td("state", {}, badge(r.state)));
      else if (key === "name") {
        cells.push(
          td(
            "name",
            {},
            el("a", { href: runPage(path), "data-nav": "" }, r.name || r.id || path),
            r.name && r.name !== r.id ? el("span", { class: "rid" }, r.id) : null,
          ),
        );
      } else if (key === "attempts") {
        const n = r.attempts;
        cells.push(td("attempts", { ...num, title: n > 1 ? `resumed ${n - 1} time(s)` : null },
          n > 1 ? el("span", { class: "attempts-badge" }, String(n)) : n ?? ""));
      } else if (key === "created" || key === "updated") {
        const t = typeof r[key] === "number" ? String(r[key]) : null;
        cells.push(el("td", { title: fmtTime(r[key]), dataset: { col: key, ...(t ? { t } : {}) } }, fmtAgo(r[key])));
      } else if (key === "tags") {
        cells.push(td("tags", {}, (r.tags || []).map((t) =>
          el("span", { class: "tag", title: `Show only tag ${t}`, onclick: () => {
            if (!st.tag.includes(t)) st.tag = [...st.tag, t];
            changed();
          } }, t))));
      } else if (key === "group") {
        cells.push(td("group", {}, filterLink(r.group, () => ((st.group = r.group), changed()))));
      } else if (key === "host") {
        cells.push(td("host", {}, filterLink(r.host, () => ((st.host = r.host), changed()))));
      } else if (key === "notes") {
        cells.push(td("notes", { title: r.notes || "" }, r.notes || ""));
      } else if (key === "last_step") {
        cells.push(td(key, num, typeof r.last_step === "number" && r.last_step >= 0 ? String(r.last_step) : ""));
      } else cells.push(td(key, num, fmtValue(r[key])));
    }
    for (const col of cols) {
      const dot = col.indexOf(".");
      const kind = col.slice(0, dot);
      const k = col.slice(dot + 1);
      const v = r[kind] ? r[kind][k] : undefined;
      cells.push(td(col, { class: typeof v === "number" ? "num" : null, title: v === undefined ? null : String(v) }, fmtValue(v)));
    }
    if (hasProblem) cells.push(td("problem", {}, r.problem || ""));
    const tr = el("tr", { dataset: { run: path, state: r.state || "unknown" } }, cells);
    if (selected.has(path)) tr.classList.add("selected");
    return tr;
  }

  function draw(data) {
    drawControls(data);
    const cols = effectiveCols(data);
    const runs = data.runs || [];
    const hasProblem = runs.some((r) => r.state === "damaged" || r.problem);
    const base = baseColumns(runs);
    const body = el("tbody", {}, runs.map((r) => row(r, base, cols, hasProblem)));
    if (!runs.length) {
      const filtered = st.q || st.states.length || st.project || st.tag.length || st.group || st.host || st.where.length;
      const span = base.length + cols.length + 1;
      body.append(el("tr", {}, el("td", { colspan: span, class: "empty" },
        filtered ? "No runs match these filters." : "No runs in this root yet: start one with localrun.init().")));
    }
    fill(table, header(base, cols, hasProblem), body);
    wrap.classList.remove("loading");
    const total = data.total ?? runs.length;
    const offset = data.offset ?? (st.page - 1) * st.limit;
    count.textContent = total
      ? `${(offset + 1).toLocaleString("en-US")}–${(offset + runs.length).toLocaleString("en-US")} of ${total.toLocaleString("en-US")}`
      : "0 runs";
    prev.disabled = offset <= 0;
    next.disabled = offset + runs.length >= total;
    if (!runs.length && total > 0 && st.page > 1) {
      // the page ran past the end (runs deleted, or a stale link): go to the last page
      st.page = Math.max(1, Math.ceil(total / st.limit));
      changed({ resetPage: false });
    }
    syncSelection();
  }

  // the table's clicks: sort by a header, select by a checkbox
  table.addEventListener("click", (e) => {
    const th = e.target.closest("th[data-sort]");
    if (th) {
      const key = th.dataset.sort;
      if (st.sort === key) st.order = st.order === "asc" ? "desc" : "asc";
      else {
        st.sort = key;
        st.order = ASC_FIRST.has(key) ? "asc" : "desc";
      }
      changed();
      return;
    }
    const box = e.target.closest("tbody input.select");
    if (!box) return;
    const boxes = [...table.querySelectorAll("tbody input.select")];
    if (e.shiftKey && anchor && boxes.includes(anchor)) {
      const [a, b] = [boxes.indexOf(anchor), boxes.indexOf(box)].sort((x, y) => x - y);
      for (const other of boxes.slice(a, b + 1)) other.checked = box.checked;
    }
    for (const other of boxes) {
      if (other.checked) selected.add(other.dataset.run);
      else selected.delete(other.dataset.run);
    }
    anchor = box;
    syncSelection();
  });

  const stopPoll = poll(load);
  return () => {
    stopPoll();
    clearTimeout(again);
    clearInterval(ages);
    onSearch.cancel();
    document.removeEventListener("keydown", onKey);
    document.removeEventListener("click", onClickOutside);
    setLive(false, "");
  };
}
