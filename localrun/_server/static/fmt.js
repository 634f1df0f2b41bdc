// Small DOM and formatting helpers shared by the pages: one way to show a time, a number, a
// state, so the runs table and the run page read the same.

// el("td", {class: "num", dataset: {col: "x"}}, child, "text", ...): children may be nodes,
// strings, numbers, arrays or null (skipped). on* attributes that are functions become listeners.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

// replaceChildren that takes what el() takes (arrays flattened, null skipped).
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

const pad = (n) => String(n).padStart(2, "0");

// Epoch seconds (what the store records) as local "YYYY-MM-DD HH:MM:SS".
export function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "";
  const d = new Date(typeof t === "number" ? t * 1000 : t);
  if (Number.isNaN(d.getTime())) return String(t);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

// "3 min ago": what people scan a runs table for; the exact time goes in the title.
export function fmtAgo(t, now = Date.now() / 1000) {
  if (typeof t !== "number") return fmtTime(t);
  const s = Math.max(0, now - t);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  if (s < 86400 * 30) return `${Math.floor(s / 86400)} d ago`;
  return fmtTime(t).slice(0, 10);
}

// Seconds as "1h 02m", "3m 05s", "12.3s".
export function fmtDuration(s) {
  if (typeof s !== "number" || !Number.isFinite(s)) return "";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${pad(m % 60)}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

// A config/summary value for a table cell: numbers to 6 significant digits (integers whole),
// objects as compact JSON.
export function fmtValue(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(4);
    return String(Number(v.toPrecision(6)));
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "object") return JSON.stringify(v);
  const media = mediaRef(v);
  return media ? describeMedia(media) : String(v);
}

// A logged media value is stored as a JSON reference string ({"_type": "image", ...}); a
// summary holding the last one shows what it is, not its JSON.
export function mediaRef(v) {
  if (typeof v !== "string" || !v.startsWith('{"_type":')) return null;
  try {
    const ref = JSON.parse(v);
    return ref && typeof ref._type === "string" ? ref : null;
  } catch (_) {
    return null;
  }
}

function describeMedia(ref) {
  const caption = ref.caption ? ` "${ref.caption}"` : "";
  if (ref._type === "image") return `image ${ref.width}×${ref.height}${caption}`;
  if (ref._type === "histogram") return `histogram, ${ref.bins} bins${caption}`;
  if (ref._type === "table") return `table, ${ref.rows} rows${caption}`;
  return `${ref._type}${caption}`;
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i ? n.toFixed(n < 10 ? 1 : 0) : n} ${units[i]}`;
}

const STATES = ["running", "finished", "failed", "crashed", "preempted", "damaged"];
export { STATES };

// A state badge; the class names colour it (crashed and preempted stand out).
export function badge(state) {
  const s = state || "unknown";
  return el("span", { class: `badge state-${STATES.includes(s) ? s : "unknown"}` }, s);
}

// Nested objects as [dotted key, value] rows (lists stay values): what people search config by.
export function flatten(obj, prefix = "", out = []) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    if (prefix) out.push([prefix, obj]);
    return out;
  }
  const keys = Object.keys(obj);
  if (!keys.length && prefix) out.push([prefix, obj]);
  for (const k of keys) flatten(obj[k], prefix ? `${prefix}.${k}` : k, out);
  return out;
}

// The header's breadcrumb trail: [[text, href|null], ...].
export function setCrumbs(parts) {
  const nav = document.getElementById("crumbs");
  if (!nav) return;
  nav.replaceChildren();
  for (const [text, href] of parts) {
    nav.append("/");
    nav.append(href ? el("a", { href, "data-nav": "" }, text) : el("span", {}, text));
  }
}

// The header's live indicator: when the page last heard from the server.
export function setLive(on, text = "") {
  const live = document.getElementById("live");
  if (!live) return;
  live.classList.toggle("on", !!on);
  live.textContent = text;
}

export function debounce(fn, ms) {
  let t = null;
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
  d.cancel = () => clearTimeout(t);
  return d;
}

// The page's first data is drawn: the benchmark and the tests wait for this.
export function markReady() {
  if (document.body.dataset.ready === "1") return;
  document.body.dataset.ready = "1";
  performance.mark("localrun:drawn");
}
