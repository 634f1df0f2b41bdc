// Placeholder until this page is built (issue 12): shows which page was asked for.
export function renderCompare(main) {
  main.textContent = "compare page";
  return () => {};
}
