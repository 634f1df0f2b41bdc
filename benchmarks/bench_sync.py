"""One-shot sync to three kinds of remote against copying the same files with no logic, and a
no-op pass over many unchanged runs.

Run: .venv/bin/python benchmarks/bench_sync.py
Scale and place it with:

- ``BENCH_SYNC_RUNS``: runs of 10,000 steps x 10 floats (default 200; the issue's size is 1000);
- ``BENCH_SYNC_IDLE``: unchanged runs for the no-op pass (default 10,000);
- ``BENCH_SYNC_REMOTES``: which remotes, of ``file,server,s3`` (default all three; ``server``
  needs the ``[server]`` extra, ``s3`` Debian's Swift from ``.ci/install-servers``, and each is
  left out with a note when it is missing);
- ``BENCH_DIR``: the folder everything goes in (``/dev/shm`` takes the disk out of the figures:
  the copies, the server's root and Swift's devices all live there);
- ``BENCH_SYNC_KEEP=DIR``: keep the generated runs in DIR and reuse them on the next run.

Every figure has its baseline measured in the same run, on the same files (each run's
segments, its newest revision and its manifest: what a push of a finished run sends), alternated
with the sync, best of two each (three for ``file://``; whichever goes second otherwise pays for
the first one's writeback or the server's warm-up). Target for each remote: sync at least half the baseline's
throughput.

1. ``file://``: copying the files with the replica's own durability (write, fsync, link into
   place, one folder fsync per run) and no logic: no look-ups, no sha256, no cursors.
2. a ``localrun server`` on loopback, started here (``localrun server --port 0``): PUTting
   the files with the same client (httpx), endpoint and headers (size and sha256, which the
   server checks) and no logic: each file read once, hashed, sent; no look-ups, no cursors.
3. S3 on a real OpenStack Swift (``s3api``) on loopback, started here by the tests' own
   fixture code (``tests/servers/swift.py``): uploading the files with the same client
   (``pyarrow.fs.S3FileSystem``) and no logic.
4. A no-op pass over many unchanged runs (all pushed before): under 2 s, opening no Parquet
   file (counted with an audit hook on ``open``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _table import print_table  # noqa: E402

from localrun._store import manifest as mf  # noqa: E402
from localrun._store import revisions, segments  # noqa: E402
from localrun._sync import engine, urls  # noqa: E402

STEPS = 10_000
KEYS = 10
PROJECT = "bench"
MB = 1e6
Row = tuple[str, str, str]


def make_run(root: Path, project: str, run_id: str, steps: int, seed: int = 0) -> None:
    """A finished run of ``steps`` x ``KEYS`` floats in one segment. The values are random
    walks (what a loss curve looks like to a compressor), so the segment is about as large
    as the floats themselves: a column of ``i * 0.5`` would compress to almost nothing."""
    run_dir = root / project / run_id
    run_dir.mkdir(parents=True)
    m = mf.new(project, run_id)
    m["schema"] = {f"k{i}": "number" for i in range(KEYS)}
    rng = np.random.default_rng(seed)
    walks = rng.standard_normal((KEYS, steps)).cumsum(axis=1)
    times = 1.7e9 + np.arange(steps) * 0.01 + rng.random(steps) * 1e-3
    cols = {
        "_step": pa.array(np.arange(steps, dtype=np.int64)),
        "_timestamp": pa.array(times),
        "_runtime": pa.array(times - 1.7e9),
    }
    cols.update({f"k{i}": pa.array(walks[i]) for i in range(KEYS)})
    m["segments"] = [segments.write(run_dir, 1, 0, pa.table(cols), {"config": {}})]
    m["last_step"] = steps - 1
    m["state"] = "finished"
    revisions.publish(run_dir, 0, m)
    revisions.write_copy(run_dir, m)


def make_runs(root: Path, runs: int) -> None:
    """``runs`` runs under ``root`` (kept from an earlier call if they are all there)."""
    marker = root / f".bench-{runs}-runs"
    if marker.exists():
        return
    if root.exists() and any(root.iterdir()):
        if not any(root.glob(".bench-*-runs")):  # never remove a folder this script did not make
            raise SystemExit(f"BENCH_SYNC_KEEP={root} is not empty and not this benchmark's")
        shutil.rmtree(root)
    mf.ensure_root(root)
    for i in range(runs):
        make_run(root, PROJECT, f"r{i:05d}", STEPS, seed=i)
    marker.touch()


def run_files(rdir: Path) -> list[Path]:
    """What a push of a finished run sends: its segments, newest revision and manifest copy."""
    newest = max((rdir / "log").iterdir())
    return [*sorted((rdir / "history").iterdir()), newest, rdir / "manifest.json"]


def all_run_files(root: Path) -> list[list[Path]]:
    return [run_files(rdir) for rdir in sorted((root / PROJECT).iterdir())]


# -- the three remotes: a plain copy and a sync each ----------------------------------------


def file_copy(root: Path, dest: Path) -> int:
    """Copy what a push copies, as durably and with nothing else: each object and revision
    fsynced and linked into place, their folders fsynced once per run, the manifest copy
    replaced without fsync (as the replica does); returns the bytes copied."""
    total = 0
    for files in all_run_files(root):
        for src in files:
            final = dest / src.relative_to(root)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(final.name + ".tmp-bench")
            hint = src.name == "manifest.json"
            with open(src, "rb") as f, open(tmp, "wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
                out.flush()
                if not hint:
                    os.fsync(out.fileno())
            os.link(tmp, final)
            tmp.unlink()
            total += src.stat().st_size
        for folder in {(dest / f.relative_to(root)).parent for f in files[:-1]}:
            fd = os.open(folder, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    return total


def http_copy(root: Path, url: str, project: str) -> int:
    """PUT every file to the server under ``project`` with the client and headers of
    ``HttpStore`` and nothing else: each file read once, hashed, sent."""
    import httpx

    from localrun._sync.httpstore import API, TIMEOUT

    total = 0
    with httpx.Client(base_url=url + API, timeout=TIMEOUT) as client:
        for files in all_run_files(root):
            for src in files:
                data = src.read_bytes()
                key = f"{project}/{src.relative_to(root / PROJECT).as_posix()}"
                headers = {
                    "content-length": str(len(data)),
                    "content-type": "application/octet-stream",
                    "x-localrun-size": str(len(data)),
                    "x-localrun-sha256": hashlib.sha256(data).hexdigest(),
                }
                response = client.put(
                    "/objects/" + quote(key, safe="/"), content=data, headers=headers
                )
                response.raise_for_status()
                total += len(data)
    return total


def s3_copy(root: Path, fs: object, base: str) -> int:
    """Upload every file under ``base`` with pyarrow.fs and nothing else."""
    total = 0
    for files in all_run_files(root):
        for src in files:
            data = src.read_bytes()
            with fs.open_output_stream(f"{base}/{src.relative_to(root).as_posix()}") as out:  # type: ignore[attr-defined]
                out.write(data)
            total += len(data)
    return total


def sync(root: Path, url: str, runs: int) -> engine.Summary:
    """One pass of ``localrun sync --all`` to ``url``, as from a root that never pushed there."""
    shutil.rmtree(root / ".sync", ignore_errors=True)
    remote = urls.open_remote(url)
    try:
        summary = engine.sync_pass(root, remote, engine.select(root, None))
    finally:
        remote.close()
    assert not summary.failed and summary.pushed == runs, (summary, summary.failed[:3])
    return summary


def _cpu() -> float:
    """CPU seconds of this process so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compare(
    name: str,
    baseline: str,
    runs: int,
    copy: Callable[[int], int],
    push: Callable[[int], object],
    cleanup: Callable[[int], None] = lambda attempt: None,
    repeat: int = 2,
    cpu: bool = False,
) -> list[Row]:
    """Plain copy and sync alternated, best of ``repeat`` each; the rows of the table.

    ``cpu``: also the CPU time of this process, when it does all the work (a folder remote):
    on a loaded machine the wall time mostly says how much of a core the process got.
    """
    copy_s = sync_s = copy_cpu = sync_cpu = float("inf")
    copied = 0
    for attempt in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        copied = copy(attempt)
        copy_s, copy_cpu = min(copy_s, time.perf_counter() - t0), min(copy_cpu, _cpu() - c0)
        os.sync()
        t0, c0 = time.perf_counter(), _cpu()
        push(attempt)
        sync_s, sync_cpu = min(sync_s, time.perf_counter() - t0), min(sync_cpu, _cpu() - c0)
        os.sync()
        cleanup(attempt)

    def speed(seconds: float) -> str:
        return f"{copied / MB / seconds:.0f} MB/s"

    def note(seconds: float, cpu_s: float) -> str:
        text = f"{runs / seconds:.0f} runs/s, {seconds:.2f} s"
        return text + (f" (CPU {cpu_s:.2f} s)" if cpu else "")

    # The same files both ways, so the ratio of times is the ratio of throughputs.
    ratio = f"target >= 0.5x; CPU time {copy_cpu / sync_cpu:.2f}x" if cpu else "target >= 0.5x"
    return [
        (f"{name}: {baseline}", speed(copy_s), note(copy_s, copy_cpu)),
        (f"{name}: sync", speed(sync_s), note(sync_s, sync_cpu)),
        (f"{name}: sync / plain copy", f"{copy_s / sync_s:.2f}x", ratio),
    ]


def file_rows(root: Path, work: Path, runs: int) -> list[Row]:
    def cleanup(attempt: int) -> None:
        shutil.rmtree(work / f"copy{attempt}")
        shutil.rmtree(work / f"remote{attempt}")

    return compare(
        "file://",
        "plain copy (same fsyncs)",
        runs,
        lambda a: file_copy(root, work / f"copy{a}"),
        lambda a: sync(root, f"file://{work}/remote{a}", runs),
        cleanup,
        repeat=3,
        cpu=True,
    )


@contextlib.contextmanager
def localrun_server(server_root: Path) -> Iterator[str]:
    """``localrun server --port 0`` on 127.0.0.1 (no token: loopback only); yields its URL."""
    import httpx

    cmd = [sys.executable, "-m", "localrun._cli", "server", "--root", str(server_root)]
    env = dict(os.environ)
    env.pop("LOCALRUN_TOKEN", None)
    env.pop("LOCALRUN_TOKEN_FILE", None)
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"localrun server did not start (exit {proc.wait()})")
        url = line.split(" at ")[1].split()[0]
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("localrun server never answered its health check")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_rows(root: Path, work: Path, runs: int) -> list[Row]:
    server_root = work / "server-root"

    def cleanup(attempt: int) -> None:
        for name in (PROJECT, f"copy{attempt}"):
            shutil.rmtree(server_root / name, ignore_errors=True)

    with localrun_server(server_root) as url:
        return compare(
            "localrun server",
            "plain PUTs (httpx)",
            runs,
            lambda a: http_copy(root, url, f"copy{a}"),
            lambda a: sync(root, url, runs),
            cleanup,
        )


def s3_rows(root: Path, work: Path, runs: int) -> list[Row]:
    from localrun._sync.fsstore import ArrowStore
    from tests.servers import swift

    # pyarrow's S3 client sends a checksum trailer Swift's s3api refuses (see swift.py).
    os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
    base = work / "swift"
    base.mkdir()
    with swift.running_swift(base) as server:
        os.environ["AWS_ACCESS_KEY_ID"] = server.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = server.secret_key
        query = f"endpoint_override={server.host_port}&scheme=http&region={server.region}"
        if extra := os.environ.get("BENCH_SYNC_S3_OPTIONS"):  # e.g. allow_delayed_open=false
            query += f"&{extra}"
        # The plain upload uses the very client the sync makes (the same pyarrow options).
        store = ArrowStore(f"s3://{server.bucket}/copy?{query}")
        return compare(
            "S3 (Swift)",
            "plain uploads (pyarrow.fs)",
            runs,
            lambda a: s3_copy(root, store.fs, f"{store.base}{a}"),
            lambda a: sync(root, f"s3://{server.bucket}/replica{a}?{query}", runs),
        )


# -- the no-op pass ---------------------------------------------------------------------------


def _count_parquet_opens() -> list[int]:
    count = [0]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and str(args[0]).endswith(".parquet"):
            count[0] += 1

    sys.addaudithook(hook)
    return count


def noop(work: Path, idle: int) -> list[Row]:
    root = work / "idle"
    mf.ensure_root(root)
    make_run(root, "idle", "template", 10)
    template = root / "idle" / "template"
    for i in range(idle - 1):  # copies: the pass reads names, not contents
        shutil.copytree(template, root / "idle" / f"r{i:05d}")
    remote = urls.open_remote("file://" + str(work / "idle-remote"))
    t0 = time.perf_counter()
    first = engine.sync_pass(root, remote, engine.select(root, None))
    first_s = time.perf_counter() - t0
    assert not first.failed, first.failed[:3]
    best = cpu = float("inf")
    for _ in range(3):
        remote = urls.open_remote("file://" + str(work / "idle-remote"))
        t0, c0 = time.perf_counter(), time.process_time()
        again = engine.sync_pass(root, remote, engine.select(root, None))
        best = min(best, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
        assert again.pushed == 0 and again.current == idle, again
    opens = _count_parquet_opens()  # one more pass, watched (the hook slows every open)
    remote = urls.open_remote("file://" + str(work / "idle-remote"))
    again = engine.sync_pass(root, remote, engine.select(root, None))
    assert again.pushed == 0 and opens[0] == 0, f"the no-op pass opened {opens[0]} Parquet files"
    return [
        (f"first sync of {idle} small runs", f"{first_s:.1f} s", "file://"),
        (f"no-op pass over {idle} unchanged runs", f"{best:.2f} s", "wall; target < 2 s"),
        ("  the same, CPU time of the process", f"{cpu:.2f} s", "independent of other load"),
        ("Parquet files opened by the no-op pass", "0", "counted by an audit hook"),
    ]


# -- main -------------------------------------------------------------------------------------


def _missing(remote: str) -> str | None:
    """Why ``remote`` cannot be measured here, or None."""
    if remote == "server":
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            return "the [server] extra is not installed"
    if remote == "s3" and not (shutil.which("swift-proxy-server") and shutil.which("memcached")):
        return "Swift is not installed (.ci/install-servers)"
    return None


def main() -> None:
    runs = int(os.environ.get("BENCH_SYNC_RUNS", "200"))
    idle = int(os.environ.get("BENCH_SYNC_IDLE", "10000"))
    remotes = os.environ.get("BENCH_SYNC_REMOTES", "file,server,s3").split(",")
    measure = {"file": file_rows, "server": server_rows, "s3": s3_rows}
    keep = os.environ.get("BENCH_SYNC_KEEP")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        rows: list[Row] = []
        if runs:
            root = Path(keep) if keep else work / "root"
            t0 = time.perf_counter()
            make_runs(root, runs)
            made = time.perf_counter() - t0
            nbytes = sum(f.stat().st_size for files in all_run_files(root) for f in files)
            rows.append(
                (
                    f"data: {runs} runs x {STEPS} steps x {KEYS} floats",
                    f"{nbytes / MB:.0f} MB",
                    f"3 files a run; made in {made:.0f} s",
                )
            )
            for remote in remotes:
                why = _missing(remote)
                if why:
                    rows.append((f"{remote}: not measured", "-", why))
                    continue
                rows += measure[remote](root, work, runs)
                print_progress(rows)
        if idle:
            rows += noop(work, idle)
        print_table("sync: one-shot to three remotes, no-op pass (benchmarks/bench_sync.py)", rows)


def print_progress(rows: list[Row]) -> None:
    """The rows so far on stderr: a full-size run takes minutes."""
    for name, value, note in rows[-3:]:
        print(f"  {name}: {value} ({note})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
