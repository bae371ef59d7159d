"""Sandbox benchmark: fork-server pool vs the release's fresh-subprocess design, measured in the same run.

Reports executions/s and p50/p99 latency at concurrency 1, 2, 4 for a trivial snippet and a ~50 ms CPU-bound one,
the throughput ratios with PASS/FAIL against the targets (>= 4x baseline on the trivial snippet, p99 <= 50 ms at
concurrency 2), kill latency after a timeout (deadline -> every process gone) and memory of the fork server.

    flock /tmp/grporoc_heavy.lock python benchmarks/bench_sandbox.py [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import time

import psutil

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool
from grporoc_plugin.sandbox.pool import MARKER_ENV, run_marker

TRIVIAL = "x = 21\nx * 2"
TARGET_RATIO, TARGET_P99_S = 4.0, 0.050


def calibrate_cpu_snippet(target_s: float = 0.05) -> str:
    """A pure-Python loop that takes ``target_s`` in this interpreter (measured here, in-process)."""
    n = 100_000
    while True:
        t0 = time.perf_counter()
        sum(i * i for i in range(n))
        dt = time.perf_counter() - t0
        if dt > 0.01:
            break
        n *= 2
    n = int(n * target_s / dt)
    return f"sum(i * i for i in range({n}))"


def run_load(pool: SandboxPool, code: str, concurrency: int, calls: int) -> dict:
    lat: list[float] = []

    def one(_: int) -> None:
        t0 = time.perf_counter()
        r = pool.execute(code, timeout_s=10)
        lat.append(time.perf_counter() - t0)
        if r.status != "ok":
            raise RuntimeError(f"benchmark snippet failed: {r}")

    for _ in range(concurrency):  # warm-up
        one(0)
    lat.clear()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, range(calls)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"eps": calls / wall, "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}


def kill_latency(pool: SandboxPool, trials: int = 5) -> list[float]:
    """Seconds from the deadline until the result is back, which the pool only sends once every process is gone."""
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    while True:\n        pass\n"
        "if os.fork() == 0:\n    time.sleep(600)\nwhile True:\n    pass\n"
    )
    want = f"{MARKER_ENV}={run_marker(pool.marker)}".encode()
    out = []
    for _ in range(trials):
        timeout = 0.5
        t0 = time.perf_counter()
        r = pool.execute(code, timeout_s=timeout)
        out.append(time.perf_counter() - (t0 + timeout))
        assert r.status == "timeout", r
        survivors = []
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and want in open(f"/proc/{p.pid}/environ", "rb").read():
                    survivors.append(p.pid)
            except (OSError, psutil.Error):
                pass
        assert not survivors, f"processes survived the timeout: {survivors}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer calls (smoke run)")
    args = ap.parse_args()
    scale = 0.25 if args.quick else 1.0
    cpu_snippet = calibrate_cpu_snippet()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"cpu snippet: {cpu_snippet}")
    results: dict[tuple[str, str, int], dict] = {}
    configs = {
        "pool": SandboxConfig(max_concurrency=8),
        "baseline": SandboxConfig(backend="subprocess", max_concurrency=8),
    }
    for name, cfg in configs.items():
        with SandboxPool(cfg) as pool:
            print(f"{name}: backend={cfg.backend} isolation={pool.isolation}")
            for snippet_name, code in (("trivial", TRIVIAL), ("cpu50ms", cpu_snippet)):
                for c in (1, 2, 4):
                    base_calls = 300 if name == "pool" else 40
                    if snippet_name == "cpu50ms":
                        base_calls = 60 if name == "pool" else 30
                    calls = max(8, int(base_calls * scale))
                    res = run_load(pool, code, c, calls)
                    results[(name, snippet_name, c)] = res
                    print(
                        f"  {snippet_name:8s} c={c}: {res['eps']:7.1f} exec/s  p50 {res['p50'] * 1e3:7.1f} ms  "
                        f"p99 {res['p99'] * 1e3:7.1f} ms  ({calls} calls)"
                    )
    print("ratios (pool / baseline throughput):")
    ok = True
    for snippet_name in ("trivial", "cpu50ms"):
        for c in (1, 2, 4):
            ratio = results[("pool", snippet_name, c)]["eps"] / results[("baseline", snippet_name, c)]["eps"]
            verdict = ""
            if snippet_name == "trivial":
                passed = ratio >= TARGET_RATIO
                ok &= passed
                verdict = f"  target >= {TARGET_RATIO:.0f}x: {'PASS' if passed else 'FAIL'}"
            print(f"  {snippet_name:8s} c={c}: {ratio:5.1f}x{verdict}")
    p99 = results[("pool", "trivial", 2)]["p99"]
    passed = p99 <= TARGET_P99_S
    ok &= passed
    print(f"pool p99 at concurrency 2 (trivial): {p99 * 1e3:.1f} ms  target <= 50 ms: {'PASS' if passed else 'FAIL'}")
    with SandboxPool(SandboxConfig()) as pool:
        kl = kill_latency(pool)
        print(
            f"kill latency after timeout (deadline -> all processes gone, busy + setsid + sleeping children): "
            f"median {statistics.median(kl) * 1e3:.1f} ms, max {max(kl) * 1e3:.1f} ms"
        )
        server = psutil.Process(pool.server_pid)
        procs = [server, *server.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in procs)
        uss = sum(p.memory_full_info().uss for p in procs)
        r = pool.execute("int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")
        print(
            f"memory: fork server RSS {rss / 2**20:.1f} MiB (USS {uss / 2**20:.1f} MiB, {len(procs)} process(es)); "
            f"a running snippet's RSS {int(r.stdout) / 1024:.1f} MiB (mostly shared copy-on-write)"
        )
    print(f"OVERALL: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
