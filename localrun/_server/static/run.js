// Placeholder until this page is built (issue 12): shows which page was asked for.
export function renderRun(main) {
  main.textContent = "run page";
  return () => {};
}
