"""System metrics: a sampler thread that records the process's and the host's load (docs/system.md).

Every ``interval`` seconds (10 by default) one sample: CPU and memory of this process and of the
host, disk and network rates, and for each NVIDIA GPU its utilisation, memory, temperature and
power. Samples go to a stream of their own keyed by time (``system/`` segments, read with
``history(stream="system")``), never to the user's steps.

Read from ``/proc`` and ``/sys`` rather than with psutil: the core packages are fixed (pyarrow,
filelock, watchdog), the clusters localrun is for run Linux, and what is sampled here is a few
text files (measured in benchmarks/bench_system.py). On another OS the host part is left out.
GPUs through ``nvidia-ml-py`` (``pynvml``) when it is installed and a driver answers; no GPU is
not an error. A sample never raises: what cannot be read is left out of it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024.0 * 1024.0


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _process_cpu_seconds() -> float | None:
    stat = _read("/proc/self/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _host_cpu() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs."""
    stat = _read("/proc/stat")
    if stat is None:
        return None
    values = [int(v) for v in stat.split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def _meminfo() -> dict[str, float]:
    text = _read("/proc/meminfo") or ""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            out[key] = float(rest.split()[0]) * 1024.0
    return out


def _disk_bytes() -> tuple[float, float] | None:
    """(read, written) bytes of whole block devices (not partitions, loop or RAM disks)."""
    text = _read("/proc/diskstats")
    if text is None:
        return None
    try:
        whole = {n for n in os.listdir("/sys/block") if not n.startswith(("loop", "ram", "zram"))}
    except OSError:
        return None
    read = written = 0.0
    for line in text.splitlines():
        f = line.split()
        if len(f) > 9 and f[2] in whole:
            read += int(f[5]) * 512.0
            written += int(f[9]) * 512.0
    return read, written


def _net_bytes() -> tuple[float, float] | None:
    """(received, sent) bytes of every interface but loopback."""
    text = _read("/proc/net/dev")
    if text is None:
        return None
    recv = sent = 0.0
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            continue
        f = rest.split()
        if len(f) >= 9:
            recv += int(f[0])
            sent += int(f[8])
    return recv, sent


class _Gpus:
    """NVIDIA GPUs through pynvml, when it imports and a driver answers; else nothing."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml  # type: ignore[import-not-found,unused-ignore]

            pynvml.nvmlInit()
            self.nvml: Any = pynvml
            self.handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception:  # no package, no driver, no GPU: all are "no GPU metrics"
            self.handles = []

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, h in enumerate(self.handles):
            for name, read in (
                ("util_percent", self._util),
                ("memory_used_mb", self._mem_used),
                ("memory_total_mb", self._mem_total),
                ("temperature_c", self._temperature),
                ("power_w", self._power),
            ):
                try:
                    out[f"gpu/{i}/{name}"] = float(read(h))
                except Exception:  # a metric this GPU does not report
                    continue
        return out

    def _util(self, h: Any) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(h).gpu)

    def _mem_used(self, h: Any) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(h).used) / _MB

    def _mem_total(self, h: Any) -> float:
        return float(self.nvml.nvmlDeviceGetMemoryInfo(h).total) / _MB

    def _temperature(self, h: Any) -> float:
        return float(self.nvml.nvmlDeviceGetTemperature(h, 0))  # 0: the GPU die sensor

    def _power(self, h: Any) -> float:
        return float(self.nvml.nvmlDeviceGetPowerUsage(h)) / 1000.0  # milliwatts


class Sampler:
    """One sample per :meth:`sample` call; rates and percentages are since the previous call."""

    def __init__(self) -> None:
        self._gpus = _Gpus()
        self._ncpu = os.cpu_count() or 1
        self._last = self._counters()

    def _counters(self) -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "proc_cpu": _process_cpu_seconds(),
            "host_cpu": _host_cpu(),
            "disk": _disk_bytes(),
            "net": _net_bytes(),
        }

    def sample(self) -> dict[str, float]:
        now = self._counters()
        last, self._last = self._last, now
        dt = max(now["t"] - last["t"], 1e-6)
        out: dict[str, float] = {}
        if now["proc_cpu"] is not None and last["proc_cpu"] is not None:
            out["cpu/process_percent"] = 100.0 * (now["proc_cpu"] - last["proc_cpu"]) / dt
        if now["host_cpu"] is not None and last["host_cpu"] is not None:
            busy = now["host_cpu"][0] - last["host_cpu"][0]
            total = now["host_cpu"][1] - last["host_cpu"][1]
            if total > 0:
                out["cpu/host_percent"] = 100.0 * busy / total
        statm = _read("/proc/self/statm")
        if statm:
            out["memory/process_rss_mb"] = int(statm.split()[1]) * _PAGE / _MB
        mem = _meminfo()
        if "MemTotal" in mem and "MemAvailable" in mem:
            out["memory/host_available_mb"] = mem["MemAvailable"] / _MB
            out["memory/host_percent"] = 100.0 * (1 - mem["MemAvailable"] / mem["MemTotal"])
        for key, names in (("disk", ("read", "write")), ("net", ("recv", "sent"))):
            if now[key] is not None and last[key] is not None:
                for j, name in enumerate(names):
                    rate = (now[key][j] - last[key][j]) / dt / _MB
                    out[f"{key}/{name}_mb_s"] = max(rate, 0.0)
        out["process/threads"] = float(_threads())
        out.update(self._gpus.sample())
        return out


def _threads() -> int:
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def available() -> bool:
    """Whether this OS has what the sampler reads (Linux's /proc)."""
    return Path("/proc/self/stat").exists()
