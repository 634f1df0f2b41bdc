"""The cost of one system sample (localrun/_run/system.py), against reading one /proc file.

Run: .venv/bin/python benchmarks/bench_system.py
A sample every 10 s (the default) costs the sampler thread this much CPU once per 10 s.
"""

from __future__ import annotations

import statistics
import time

from _table import print_table

from localrun._run.system import Sampler

N = 2000


def per_call(fn: object) -> tuple[float, float]:
    times = []
    for _ in range(N):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    cpu0 = time.process_time()
    for _ in range(N):
        fn()  # type: ignore[operator]
    return statistics.median(times), (time.process_time() - cpu0) / N


def read_stat() -> None:
    with open("/proc/self/stat") as f:
        f.read()


def main() -> None:
    base, base_cpu = per_call(read_stat)
    sampler = Sampler()
    sample, sample_cpu = per_call(sampler.sample)
    rows = [
        (
            "baseline: read /proc/self/stat once",
            f"{base * 1e6:,.1f} us",
            f"CPU {base_cpu * 1e6:,.1f} us",
        ),
        (
            "one system sample (CPU, memory, disk, net, GPUs)",
            f"{sample * 1e6:,.1f} us",
            f"{sample / base:.1f}x baseline; CPU {sample_cpu * 1e6:,.1f} us; "
            f"{len(sampler.sample())} values; every 10 s = {sample_cpu / 10 * 100:.4f}% of a core",
        ),
    ]
    print_table(f"System metrics: median of {N} samples", rows)


if __name__ == "__main__":
    main()
