"""A real ``mlflow server`` on 127.0.0.1 for tests and benchmarks, and a small REST reader.

The server runs from its own venv (``make mlflow-venv`` builds ``.venv-mlflow``): MLflow pins
many packages, and localrun's client never imports it. ``TEST_MLFLOW_BIN`` names the ``mlflow``
executable (``make test-mlflow`` sets it); else ``.venv-mlflow/bin/mlflow`` in the checkout is
used when it exists.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
STARTUP_S = 300  # a fresh sqlite store runs every migration first: ~35 s on a loaded 2-core box


def mlflow_bin() -> tuple[Path | None, bool]:
    """(the mlflow executable or None, whether the caller asked for it explicitly)."""
    named = os.environ.get("TEST_MLFLOW_BIN")
    if named:
        return Path(named), True
    default = REPO / ".venv-mlflow" / "bin" / "mlflow"
    return (default if default.exists() else None), False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` with a sqlite store and a local artifacts folder under ``workdir``."""

    def __init__(self, exe: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.http = f"http://127.0.0.1:{self.port}"
        self.url = f"mlflow+{self.http}"
        self.log = workdir / "server.log"
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self.proc: subprocess.Popen[bytes] | None
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{workdir / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(workdir / "artifacts"),
                ],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its gunicorn/uvicorn workers are ended with it
            )
        self._wait_up()

    @classmethod
    def at(cls, http: str) -> MlflowServer:
        """A server that is already running at ``http://host:port`` (not stopped by us)."""
        srv = cls.__new__(cls)
        srv.http, srv.url, srv.proc = http, f"mlflow+{http}", None
        return srv

    def _wait_up(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.http}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"mlflow server not up after {STARTUP_S} s: {self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Rest:
    """What a test reads back, through MLflow's REST API only."""

    def __init__(self, http: str) -> None:
        self.http = http
        self.c = httpx.Client(base_url=f"{http}/api/2.0/mlflow", timeout=120)

    def get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        r = self.c.get(endpoint, params=params)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.c.post(endpoint, json=body)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get("/runs/get", run_id=run_id)["run"]
        return run

    def tags(self, run_id: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.run(run_id)["data"].get("tags", [])}

    def params(self, run_id: str) -> dict[str, str]:
        return {p["key"]: p["value"] for p in self.run(run_id)["data"].get("params", [])}

    def history(self, run_id: str, key: str) -> list[tuple[int, float, int]]:
        """Every stored point of ``key`` as (step, value, timestamp ms), in storage order."""
        out: list[tuple[int, float, int]] = []
        token = None
        while True:
            params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                params["page_token"] = token
            page = self.get("/metrics/get-history", **params)
            for p in page.get("metrics", []):
                value = p["value"]
                out.append((int(p["step"]), float(value), int(p["timestamp"])))
            token = page.get("next_page_token")
            if not token:
                return out

    def runs(self, project: str) -> list[dict[str, Any]]:
        """Every active run in the experiment named ``project`` ([] when there is none)."""
        r = self.c.get("/experiments/get-by-name", params={"experiment_name": project})
        if r.status_code == 404:
            return []
        r.raise_for_status()
        exp = r.json()["experiment"]["experiment_id"]
        runs: list[dict[str, Any]] = self.post(
            "/runs/search", {"experiment_ids": [exp], "max_results": 1000}
        ).get("runs", [])
        return runs

    def artifacts(self, run_id: str, path: str = "") -> dict[str, int]:
        """Artifact path -> size, walking folders."""
        listing = self.get("/artifacts/list", run_id=run_id, path=path)
        out: dict[str, int] = {}
        for f in listing.get("files", []):
            if f["is_dir"]:
                out.update(self.artifacts(run_id, f["path"]))
            else:
                out[f["path"]] = int(f["file_size"])
        return out

    def download(self, run: dict[str, Any], path: str) -> bytes:
        uri = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:")
        r = httpx.get(f"{self.http}/api/2.0/mlflow-artifacts/artifacts{uri}/{path}", timeout=120)
        r.raise_for_status()
        return r.content
