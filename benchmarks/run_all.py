"""Every benchmark, then one table of all their figures with the machine and versions.

Run: make bench. Each script still prints its own table as it goes (with its baseline measured
in the same run); this collects their rows (``LOCALRUN_BENCH_OUT``) and prints them together.
Scripts whose tools are missing (valgrind, the peers' venv) say so in their row. Every
``bench_*.py`` runs, bench_ui.py too (the dashboard in Debian's headless chromium; install it
once with .ci/install-browser, or that script fails saying so).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).parent
SKIP = {"bench_log_callgrind.py"}  # run on its own: minutes under valgrind (make bench-callgrind)


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()}, {cpus} cores, {mem:.0f} GiB, load {load}; Python "
        f"{platform.python_version()}, pyarrow {version('pyarrow')}, "
        f"localrun {version('localrun-tracker')}"
    )


def main() -> None:
    scripts = sorted(p for p in HERE.glob("bench_*.py") if p.name not in SKIP)
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        env = dict(os.environ, LOCALRUN_BENCH_OUT=out.name)
        failed = []
        for script in scripts:
            print(f"=== {script.name}", flush=True)
            rc = subprocess.run([sys.executable, str(script)], env=env, check=False).returncode
            if rc:
                failed.append(script.name)
        tables = [json.loads(line) for line in out.read().splitlines()]
    rows = [(t["title"], *r) for t in tables for r in t["rows"]]
    print(f"\n\nAll benchmarks: {machine()}")
    w0 = max((len(r[1]) for r in rows), default=0)
    title = None
    for section, name, value, note in rows:
        if section != title:
            print(f"\n{section}")
            title = section
        print(f"  {name.ljust(w0)}  {value:>14}  {note}")
    if failed:
        raise SystemExit(f"\nfailed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
