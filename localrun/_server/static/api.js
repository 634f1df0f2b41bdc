// The dashboard's one way to the JSON API (docs/ui.md): every answer's ETag (the run's revision)
// is remembered, so polling a run that has not changed costs a 304 and no parsing or redraw.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const MAX_CACHED = 256; // answers kept for If-None-Match; zooming makes new URLs, so bounded
const cache = new Map(); // url -> {etag, data}, oldest first

// How often pages poll, in ms: ?poll=MS on any page overrides it (the tests use a short one).
export const POLL_MS = Number(new URLSearchParams(location.search).get("poll")) || 2000;

// path + query from an object; arrays repeat the parameter, null/undefined/"" are left out.
export function withParams(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== undefined && one !== null && one !== "") q.append(k, String(one));
    }
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// GET JSON: {data, changed}. changed is false when the server answered 304 (same revision).
// The cache is shared by every caller of a URL (the run page and its charts both poll the run):
// a caller that must know whether *it* has seen an answer compares `data` with the object it
// drew last (a 304 returns the cached object itself).
export async function getJSON(path, params = {}) {
  const url = withParams(path, params);
  const hit = cache.get(url);
  const res = await fetch(url, {
    headers: hit ? { "If-None-Match": hit.etag } : {},
    credentials: "same-origin",
  });
  if (res.status === 304 && hit) return { data: hit.data, changed: false };
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = (await res.json()).error || message;
    } catch (_) {
      /* not JSON: keep the status line */
    }
    throw new ApiError(res.status, message);
  }
  const data = await res.json();
  const etag = res.headers.get("ETag");
  if (etag) {
    cache.delete(url);
    cache.set(url, { etag, data });
    if (cache.size > MAX_CACHED) cache.delete(cache.keys().next().value);
  }
  return { data, changed: true };
}

// GET text (console output).
export async function getText(path, params = {}) {
  const res = await fetch(withParams(path, params), { credentials: "same-origin" });
  if (!res.ok) throw new ApiError(res.status, `${res.status} ${res.statusText}`);
  return res.text();
}

// GET text with the response's headers (the console's whole size is a header).
export async function getTextResponse(path, params = {}) {
  const res = await fetch(withParams(path, params), { credentials: "same-origin" });
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      message = JSON.parse(await res.text()).error || message;
    } catch (_) {
      /* not JSON: keep the status line */
    }
    throw new ApiError(res.status, message);
  }
  return { text: await res.text(), headers: res.headers };
}

// Failing polls wait twice as long each time, up to this many periods (a page of an unknown
// run, or a stopped server, asks every 32 s instead of every 2 s; the first success resets).
const BACKOFF = 16;

// Call fn now and then every POLL_MS until the returned stop() is called; a failing call is
// shown (showError) and retried later, backing off (BACKOFF), so a server restart or a run
// that appears heals the page. A tab in the background does not poll (a dashboard left open
// all day costs the server nothing); it catches up at once when it is shown again. One call at
// a time: a slow answer delays the next.
export function poll(fn, ms = POLL_MS) {
  let stopped = false;
  let timer = null;
  let running = false;
  let first = true;
  let wait = ms;
  const tick = async () => {
    timer = null;
    if (stopped || running) return;
    if (document.hidden && !first) {
      timer = setTimeout(tick, wait);
      return;
    }
    first = false;
    running = true;
    try {
      await fn();
      wait = ms;
    } catch (err) {
      showError(err);
      wait = Math.min(wait * 2, ms * BACKOFF);
    } finally {
      running = false;
    }
    if (!stopped && timer === null) timer = setTimeout(tick, wait);
  };
  const onVisible = () => {
    if (document.hidden || running || stopped) return;
    clearTimeout(timer);
    tick();
  };
  document.addEventListener("visibilitychange", onVisible);
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

// A run's "project/id" as the path of its page and of its API resource.
const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");
export const runPage = (path) => `/runs/${encodePath(path)}`;
export const runApi = (path) => `/api/v1/runs/${encodePath(path)}`;

export function showError(err) {
  const box = document.getElementById("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = err instanceof ApiError ? err.message : String(err);
  box.dataset.status = err instanceof ApiError ? String(err.status) : "";
}
