// The run page's media panels: per media key a step slider and what was logged at that step
// (images, histograms drawn on a canvas, tables), read from /api/v1/runs/p/id/media.
import { getJSON, runApi } from "./api.js";
import { debounce, el, fill, fmtValue } from "./fmt.js";

export const MEDIA_KINDS = new Set(["media", "list<media>"]);

// One panel: div.media[data-key] with input.step-slider over the key's steps. A slider at the
// newest step follows new steps as the run logs them; one moved back stays where it is.
class MediaPanel {
  constructor(path, key, kind, onError) {
    this.path = path;
    this.key = key;
    this.steps = [];
    this.listing = null; // the /media answer the slider was built from
    this.seq = 0;
    this.onError = onError;
    this.slider = el("input", {
      type: "range",
      class: "step-slider",
      min: "0",
      max: "0",
      step: "1",
      value: "0",
      disabled: true,
      "aria-label": `Step of ${key}`,
    });
    this.label = el("output", { class: "step-label" }, "");
    this.items = el("div", { class: "items", "aria-live": "polite" });
    this.root = el(
      "div",
      { class: "media", dataset: { key } },
      el("h3", {}, el("span", {}, key), el("span", { class: "muted" }, kind === "list<media>" ? "list" : "")),
      el("div", { class: "slider-row" }, el("span", {}, "step"), this.slider, this.label),
      this.items,
    );
    const load = debounce(() => this.show().catch(onError), 60);
    this.slider.addEventListener("input", () => {
      this.updateLabel();
      load();
    });
  }

  get index() {
    return Number(this.slider.value);
  }

  updateLabel() {
    const n = this.steps.length;
    this.label.textContent = n ? `${this.steps[this.index]}  (${this.index + 1}/${n})` : "no steps";
  }

  // Fetch the key's steps (an ETag makes an unchanged list a 304) and show the chosen one.
  async refresh() {
    const { data } = await getJSON(`${runApi(this.path)}/media`, { key: this.key });
    if (data === this.listing) return; // a 304: the steps drawn are still the steps
    this.listing = data;
    const steps = data.steps || [];
    const atEnd = !this.steps.length || this.index >= this.steps.length - 1;
    const before = this.steps[this.index];
    this.steps = steps;
    this.slider.max = String(Math.max(0, steps.length - 1));
    this.slider.disabled = steps.length <= 1;
    const keep = steps.indexOf(before);
    this.slider.value = String(atEnd || keep < 0 ? Math.max(0, steps.length - 1) : keep);
    this.updateLabel();
    if (steps[this.index] !== before || !this.items.childElementCount) await this.show();
  }

  async show() {
    const step = this.steps[this.index];
    if (step === undefined) {
      fill(this.items, el("div", { class: "muted" }, "nothing logged yet"));
      return;
    }
    const mine = ++this.seq;
    const { data } = await getJSON(`${runApi(this.path)}/media`, { key: this.key, step });
    if (mine !== this.seq) return; // the slider moved on meanwhile
    this.root.dataset.step = String(step);
    fill(this.items, ...(data.items || []).map((item) => drawItem(item, this.key, step)));
    if (!(data.items || []).length) this.items.append(el("div", { class: "muted" }, "no items at this step"));
  }
}

function drawItem(item, key, step) {
  const caption = item.caption || "";
  if (item.type === "image") {
    const img = el("img", { src: item.url, alt: caption || `${key} at step ${step}`, decoding: "async" });
    // small images (e.g. 28x28 digits) are scaled up crisp rather than shown as a speck
    if (item.width && item.width < 96) {
      img.style.width = `${Math.min(4, Math.floor(192 / item.width)) * item.width}px`;
      img.style.imageRendering = "pixelated";
    }
    const size = item.width && item.height ? `${item.width}×${item.height}` : "";
    return el("figure", {}, img, el("figcaption", {}, [caption, size].filter(Boolean).join(" · ")));
  }
  if (item.type === "histogram") {
    const canvas = el("canvas", { class: "hist", role: "img", "aria-label": `histogram of ${key} at step ${step}` });
    const fig = el("figure", { style: "width:100%" }, canvas, caption ? el("figcaption", {}, caption) : null);
    requestAnimationFrame(() => drawHistogram(canvas, item.counts || [], item.edges || []));
    return fig;
  }
  if (item.type === "table") {
    const cols = item.columns || [];
    const rows = item.rows || [];
    const table = el(
      "table",
      { class: "grid" },
      el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v) => el("td", { class: typeof v === "number" ? "num" : null }, fmtValue(v)))))),
    );
    const more = item.total_rows > rows.length ? `showing ${rows.length} of ${item.total_rows} rows` : `${rows.length} rows`;
    return el("figure", { style: "width:100%" }, el("div", { class: "tablewrap" }, table),
      el("figcaption", {}, [caption, more].filter(Boolean).join(" · ")));
  }
  return el("div", { class: "muted" }, `${item.type || "unknown"} item (not drawn here)`);
}

// Bars from counts over edges (len(edges) == len(counts) + 1), with the range and the peak.
export function drawHistogram(canvas, counts, edges) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 300;
  const h = canvas.clientHeight || 160;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 34, r: 6, t: 6, b: 16 };
  const peak = Math.max(1, ...counts);
  const lo = edges.length ? edges[0] : 0;
  const hi = edges.length ? edges[edges.length - 1] : counts.length;
  const span = hi - lo || 1;
  const pw = w - pad.l - pad.r;
  const ph = h - pad.t - pad.b;
  const xOf = (v) => pad.l + ((v - lo) / span) * pw;
  ctx.fillStyle = "#2f6fde";
  counts.forEach((c, i) => {
    const a = edges.length > i + 1 ? xOf(edges[i]) : pad.l + (i / counts.length) * pw;
    const b = edges.length > i + 1 ? xOf(edges[i + 1]) : pad.l + ((i + 1) / counts.length) * pw;
    const bh = (c / peak) * ph;
    ctx.fillRect(a, pad.t + ph - bh, Math.max(1, b - a - (b - a > 3 ? 1 : 0)), bh);
  });
  ctx.strokeStyle = "#b6bcc8";
  ctx.beginPath();
  ctx.moveTo(pad.l, pad.t + ph + 0.5);
  ctx.lineTo(w - pad.r, pad.t + ph + 0.5);
  ctx.stroke();
  ctx.fillStyle = "#6b7385";
  ctx.font = "10px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(fmtValue(lo), pad.l, pad.t + ph + 3);
  ctx.textAlign = "right";
  ctx.fillText(fmtValue(hi), w - pad.r, pad.t + ph + 3);
  ctx.textBaseline = "top";
  ctx.fillText(String(peak), pad.l - 4, pad.t);
  ctx.textBaseline = "bottom";
  ctx.fillText("0", pad.l - 4, pad.t + ph);
  canvas.dataset.bars = String(counts.length);
  // hovering a bar tells its bin and count (the canvas's title, so no extra DOM per bar)
  canvas.onmousemove = (e) => {
    const x = e.offsetX;
    if (x < pad.l || x > w - pad.r || !counts.length) {
      canvas.title = "";
      return;
    }
    const i = Math.min(counts.length - 1, Math.floor(((x - pad.l) / pw) * counts.length));
    const range = edges.length > i + 1 ? `[${fmtValue(edges[i])}, ${fmtValue(edges[i + 1])})` : `bin ${i}`;
    canvas.title = `${range}: ${counts[i]}`;
  };
}

// Every media key of the run as a panel in `container`; refresh() after the run's revision
// changed picks up new keys and new steps.
export class MediaPanels {
  constructor(container, path, onError) {
    this.container = container;
    this.path = path;
    this.onError = onError;
    this.panels = new Map();
    this.grid = el("div", { class: "media-grid" });
    this.empty = el("p", { class: "muted" }, "No media logged (localrun.Image, Histogram, Table).");
    container.append(this.empty, this.grid);
  }

  async refresh(keys) {
    const media = Object.entries(keys || {}).filter(([, kind]) => MEDIA_KINDS.has(kind)).sort();
    for (const [key, kind] of media) {
      if (!this.panels.has(key)) {
        const panel = new MediaPanel(this.path, key, kind, this.onError);
        this.panels.set(key, panel);
        this.grid.append(panel.root);
      }
    }
    this.empty.hidden = this.panels.size > 0;
    await Promise.all([...this.panels.values()].map((p) => p.refresh().catch(this.onError)));
  }
}
