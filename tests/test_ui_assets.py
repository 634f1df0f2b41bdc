"""The dashboard's assets ship inside the package and load nothing from elsewhere.

Air-gapped clusters are who ``localrun ui`` is for: a page that pulled a script or a font from a
CDN would show nothing there. uPlot is vendored by ``make ui`` from the version
``ui/package-lock.json`` pins (``make ui-check`` rebuilds it and compares the bytes); these checks
are the fast part that runs with every test run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import localrun

STATIC = Path(localrun.__file__).parent / "_server" / "static"
VENDOR = STATIC / "vendor"
UI = Path(__file__).resolve().parent.parent / "ui"
# An absolute address, or a protocol-relative one in a string or url(...): "//cdn.example/x.js".
URL = re.compile(r"https?://|[\"'(]//[A-Za-z0-9-]+\.", re.IGNORECASE)
# A (minified) script's comments: what may hold the vendored project's address.
COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def test_uplot_and_its_license_are_vendored() -> None:
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE"):
        assert (VENDOR / name).stat().st_size > 0, name
    license_text = (VENDOR / "LICENSE").read_text()
    assert "MIT License" in license_text and "Leon Sorokin" in license_text


def test_vendored_uplot_is_the_version_the_lock_pins() -> None:
    pinned = json.loads((UI / "package.json").read_text())["dependencies"]["uplot"]
    lock = json.loads((UI / "package-lock.json").read_text())
    locked = lock["packages"]["node_modules/uplot"]
    assert locked["version"] == pinned, "package.json pins one version, the lock another"
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin uplot exactly (no ^ or ~)"
    assert locked["integrity"].startswith("sha512-")
    header = (VENDOR / "uPlot.iife.min.js").read_text()[:200]
    found = re.search(r"\(v(\d+\.\d+\.\d+)\)", header)
    assert found is not None, f"no version in the vendored file's header: {header[:80]!r}"
    assert found.group(1) == pinned, "run `make ui`: the vendored uPlot is not the locked one"


def test_index_loads_only_static_paths() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert "/static/vendor/uPlot.iife.min.js" in refs
    assert "/static/vendor/uPlot.min.css" in refs
    for ref in refs:
        # page links (/, data-nav) and the empty data: icon are not fetched from elsewhere
        assert ref.startswith(("/static/", "data:")) or ref == "/", ref


def test_scripts_import_only_local_modules() -> None:
    for script in STATIC.glob("*.js"):
        for spec in re.findall(r"""\bimport\b[^"';]*?["']([^"']+)["']""", script.read_text()):
            assert spec.startswith(("./", "/static/")), f"{script.name} imports {spec}"


def test_index_preloads_every_module_the_pages_import() -> None:
    """A module the pages import but index.html does not preload is fetched only once the
    module importing it has arrived: one more round trip before the first chart."""
    html = (STATIC / "index.html").read_text()
    preloaded = set(re.findall(r"""<link rel="modulepreload" href="/static/([^"]+)">""", html))
    imported, todo = {"app.js"}, ["app.js"]
    while todo:
        text = (STATIC / todo.pop()).read_text()
        for spec in re.findall(r"""\bimport\b[^"';]*?["']\./([^"']+)["']""", text):
            if spec not in imported:
                imported.add(spec)
                todo.append(spec)
    assert len(imported) > 5
    assert preloaded == imported


def test_no_url_anywhere_in_static_but_the_vendored_comments() -> None:
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        text = path.read_text(errors="replace")
        if path.parent == VENDOR:
            # the license and the project's address in the header comment are fine
            if path.name == "LICENSE":
                continue
            text = COMMENT.sub("", text)
        assert not URL.search(text), f"{path.relative_to(STATIC)}: {URL.search(text)}"
