"""Sync to MLflow: points per second of localrun's push against the server's own limit.

The baseline, measured in the same run against the same server, is the fastest a client can
feed MLflow over REST: ``runs/log-batch`` with 1,000 metrics per request, the payload built
beforehand, nothing read from disk. localrun's push reads the run's segments, sends 999 metrics
per request (the 1,000th entity is the position tag that makes the push resumable) and sets the
run's params, tags and status. Run with ``make bench-mlflow`` (it builds the server's venv).

Also measured: a push with nothing new (the engine's cursor is at the run's revision: no
request at all) and one whose cursor was lost (found again by tag: a search, no point sent).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _table import print_table  # noqa: E402

import localrun  # noqa: E402
from localrun._store import revisions  # noqa: E402
from localrun._sync.mlflow import MlflowRemote  # noqa: E402
from localrun._sync.remote import LocalRun  # noqa: E402
from tests.mlflow_server import MlflowServer, mlflow_bin  # noqa: E402

STEPS = 3000
KEYS = 10
REPEAT = 2


class _NoProgress:
    def advance(self, nbytes: int) -> None:
        pass


def _local(root: Path, project: str, rid: str) -> LocalRun:
    d = root / project / rid
    snap = revisions.newest(d)
    raw = revisions.rev_path(d, snap.rev).read_bytes()
    return LocalRun(project, rid, d, snap.rev, snap.manifest, raw)


def _write(root: Path, rid: str) -> None:
    run = localrun.init(project="bench", id=rid, dir=root, config={"lr": 0.1})
    for i in range(STEPS):
        run.log({f"m{j}": i * 0.5 + j for j in range(KEYS)}, step=i)
    run.finish()


def raw_log_batch(http: str, n_points: int) -> float:
    """Seconds to send ``n_points`` through log-batch, 1,000 per request, to a new run."""
    c = httpx.Client(base_url=f"{http}/api/2.0/mlflow", timeout=300)
    exp = c.get("/experiments/get-by-name", params={"experiment_name": "bench"}).json()
    rid = c.post(
        "/runs/create", json={"experiment_id": exp["experiment"]["experiment_id"], "start_time": 0}
    ).json()["run"]["info"]["run_id"]
    metrics = [
        {"key": f"m{j}", "value": i * 0.5 + j, "timestamp": 1_700_000_000_000 + i, "step": i}
        for i in range(n_points // KEYS)
        for j in range(KEYS)
    ]
    bodies = [
        {"run_id": rid, "metrics": metrics[k : k + 1000]} for k in range(0, len(metrics), 1000)
    ]
    t0 = time.perf_counter()
    for body in bodies:
        c.post("/runs/log-batch", json=body).raise_for_status()
    took = time.perf_counter() - t0
    c.close()
    return took


def main() -> None:
    exe, _ = mlflow_bin()
    if exe is None or not exe.exists():
        sys.exit("no mlflow server venv: run `make bench-mlflow` (it builds .venv-mlflow)")
    work = Path(tempfile.mkdtemp(prefix="bench-mlflow-"))
    t0 = time.perf_counter()
    server = MlflowServer(exe, work / "server")
    startup = time.perf_counter() - t0
    try:
        root = work / "runs"
        n = STEPS * KEYS
        remote = MlflowRemote(server.url, None)
        ours, raw = [], []
        for k in range(REPEAT):
            _write(root, f"r{k}")
            run = _local(root, "bench", f"r{k}")
            t = time.perf_counter()
            cursor = remote.push(run, None, _NoProgress())
            ours.append(time.perf_counter() - t)
            raw.append(raw_log_batch(server.http, n))
        t = time.perf_counter()
        remote.push(run, cursor, _NoProgress())
        noop = time.perf_counter() - t
        t = time.perf_counter()
        remote.push(run, None, _NoProgress())
        lost = time.perf_counter() - t
        remote.close()
        best_ours, best_raw = min(ours), min(raw)
        version = httpx.get(f"{server.http}/version", timeout=30).text.strip()
        print_table(
            f"sync to MLflow {version} ({n:,} points: {STEPS:,} steps x {KEYS} keys, "
            f"best of {REPEAT})",
            [
                ("server start (fresh sqlite)", f"{startup:.1f} s", "once per test module"),
                ("raw log-batch, 1,000/request", f"{n / best_raw:,.0f} pt/s", "the server's limit"),
                (
                    "localrun push (one-shot)",
                    f"{n / best_ours:,.0f} pt/s",
                    "params, tags, status too",
                ),
                ("push / raw", f"{best_raw / best_ours:.2f}", "1.00 = as fast as the server takes"),
                ("push, nothing new (cursor)", f"{noop * 1000:.2f} ms", "no request"),
                ("push, cursor lost", f"{lost * 1000:.0f} ms", "search by tag, no point resent"),
            ],
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
