"""Debian's Chromium as the browser tests and benchmarks/bench_ui.py start it (never a
downloaded browser). The flags keep it off the network: without the background-networking ones
it tries Google's hosts at every start, which a closed machine refuses, many at a time."""

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
