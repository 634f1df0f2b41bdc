// The dashboard's router: every page is index.html, drawn here by path (so links to runs and
// comparisons can be bookmarked), and each page's renderer returns a function that stops it
// (its polling) when the user goes elsewhere.
import { showError } from "./api.js";
import { renderCompare } from "./compare.js";
import { renderRun } from "./run.js";
import { renderRuns } from "./runs.js";

const main = document.getElementById("main");
let stopPage = null;

export function navigate(url) {
  history.pushState(null, "", url);
  route();
}

function route() {
  if (stopPage) stopPage();
  stopPage = null;
  showError(null);
  delete document.body.dataset.ready; // set again when the new page's first data is drawn
  main.replaceChildren();
  const params = new URLSearchParams(location.search);
  const path = location.pathname;
  const run = path.match(/^\/runs\/([^/]+)\/([^/]+)\/?$/);
  if (path === "/") stopPage = renderRuns(main, params);
  else if (path === "/compare") stopPage = renderCompare(main, params);
  else if (run) {
    const id = `${decodeURIComponent(run[1])}/${decodeURIComponent(run[2])}`;
    stopPage = renderRun(main, id, params);
  } else showError(new Error(`no page ${path}`));
}

// Links marked data-nav change page without a reload (a plain click only: a middle click or
// ctrl-click opens a tab as usual).
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-nav]");
  if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);
route();
