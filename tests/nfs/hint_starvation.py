"""Reproduce, without localrun, what stalls a commit on NFSv4: replacing a file (rename over it)
that a process on another client keeps replacing and reading (see hint_starvation.sh).

    hint_starvation.py DIR SECONDS GO OUT MODE    MODE: read (open and read the file after each
                                                  replace, as a commit path reading a hint does)
                                                  or noread (only replace it)

Each host replaces DIR/hint.json as fast as it can for SECONDS after GO exists, and prints its
replaces per second and its slowest single ``os.replace``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path


def main(folder: str, seconds: str, go: str, out: str, mode: str) -> None:
    host = socket.gethostname()
    hint = Path(folder) / "hint.json"
    Path(out, f"ready-{mode}-{host}").write_text("")
    while not os.path.exists(go):
        time.sleep(0.005)
    n, worst, t0 = 0, 0.0, time.monotonic()
    while time.monotonic() - t0 < float(seconds):
        tmp = hint.with_name(f"hint.json.tmp-{host}-{os.getpid()}-{n}")
        with open(tmp, "w") as f:
            json.dump({"host": host, "n": n}, f)
            f.flush()
            os.fsync(f.fileno())
        t1 = time.monotonic()
        os.replace(tmp, hint)
        worst = max(worst, time.monotonic() - t1)
        if mode == "read":
            hint.read_bytes()
        n += 1
    took = time.monotonic() - t0
    print(
        f"{host} [{mode}]: {n} replaces in {took:.1f}s, slowest os.replace {worst:.2f}s", flush=True
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
