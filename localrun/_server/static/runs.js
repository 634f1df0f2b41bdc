// Placeholder until this page is built (issue 12): shows which page was asked for.
export function renderRuns(main) {
  main.textContent = "runs page";
  return () => {};
}
