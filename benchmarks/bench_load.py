"""Load benchmark (issue 11.5): 10,000 calls at concurrency 64 through the code tool's async path, as verl's agent
loop makes them (``CodeExecTool.execute`` of a tool loaded from the shipped tool_config yaml).

A mix of snippets whose outcome is known in advance (correct output, a raised exception, stdin echoed back, a few
timeouts): every call must end with exactly its snippet's own status and output, never a sandbox failure. After the
load (tools dropped, pools closed): no process of the pool is left, no file descriptor, cgroup or temp dir of this
process; the host's resident memory after warm-up and at the end is printed with its growth. Prints throughput and
latency percentiles; exits non-zero on any violation.

    flock /tmp/grporoc_heavy.lock python benchmarks/bench_load.py [--calls 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
from omegaconf import OmegaConf
from verl.tools.tool_registry import initialize_tools_from_config

from grporoc_plugin.sandbox.cgroups import pool_resources
from grporoc_plugin.sandbox.pool import MARKER_ENV
from grporoc_plugin.tools.code_tool import CodeExecTool

REPO = Path(__file__).resolve().parents[1]
RSS_GROWTH_LIMIT_MIB = 64.0


def load_tool(tmp: Path, timeout_s: float) -> CodeExecTool:
    cfg = OmegaConf.load(REPO / "example_configs" / "tool_config.yaml")
    cfg.tools[0].config.timeout_s = timeout_s
    path = tmp / f"tool_config_{timeout_s}.yaml"
    OmegaConf.save(cfg, path)
    (tool,) = initialize_tools_from_config(str(path))
    return tool


def make_call(i: int, rng: random.Random) -> tuple[str, dict, str, str | None]:
    """(kind, parameters, expected status, expected stdout fragment)."""
    r = rng.random()
    if r < 0.005:
        return "timeout", {"code": "while True:\n    pass"}, "timeout", None
    if r < 0.25:
        return "exec", {"code": f"x = {i}\nraise ValueError(x)"}, "exec_error", None
    if r < 0.5:
        word = f"w{i}-{rng.randrange(10**6)}"
        return "stdin", {"code": "print(input()[::-1])", "input": word}, "ok", word[::-1]
    n = rng.randrange(1, 10**4)
    return "ok", {"code": f"sum(range({n}))"}, "ok", str(n * (n - 1) // 2)


def marker_processes() -> list[int]:
    """Live processes carrying a sandbox marker of a pool this process created."""
    mine = f"{MARKER_ENV}=pool-{os.getpid()}-".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if mine in f.read() and psutil.Process(int(name)).status() != psutil.STATUS_ZOMBIE:
                    found.append(int(name))
        except (OSError, psutil.Error):
            pass
    return found


async def run_load(tools: dict[str, CodeExecTool], calls: int, concurrency: int, seed: int) -> dict:
    rng = random.Random(seed)
    plan = [make_call(i, rng) for i in range(calls)]
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    counts: collections.Counter[str] = collections.Counter()
    violations: list[str] = []
    rss: dict[int, float] = {}
    proc = psutil.Process()

    async def one(i: int) -> None:
        kind, params, status, want = plan[i]
        tool = tools["short" if kind == "timeout" else "normal"]
        async with sem:
            t0 = time.perf_counter()
            response, _, metrics = await tool.execute(f"call-{i}", params, agent_data=SimpleNamespace(extra_fields={}))
            lat.append(time.perf_counter() - t0)
        counts[metrics["status"]] += 1
        if metrics["status"] != status or (want is not None and f"stdout: {want}\n" not in response.text):
            if len(violations) < 20:
                violations.append(f"call {i} ({kind}): status {metrics['status']!r}, text {response.text[:200]!r}")
            counts["violations"] += 1
        if i % 1000 == 0:
            rss[i] = proc.memory_info().rss / 2**20

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"wall": wall, "lat": lat, "counts": counts, "violations": violations, "rss": rss}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import tempfile

    fds_before = len(os.listdir("/proc/self/fd"))
    resources_before = {p for p in pool_resources() if f"pool-{os.getpid()}-" in p}
    with tempfile.TemporaryDirectory() as tmp:
        tools = {"normal": load_tool(Path(tmp), 5.0), "short": load_tool(Path(tmp), 0.5)}
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.calls} calls at "
              f"concurrency {args.concurrency} through CodeExecTool.execute")  # fmt: skip
        asyncio.run(run_load(tools, 50, 8, args.seed + 1))  # warm-up: pools started
        pool = tools["normal"].executor()
        print(f"pool: isolation={pool.isolation}, {pool.config.concurrency} slots")
        rss_warm = psutil.Process().memory_info().rss / 2**20
        res = asyncio.run(run_load(tools, args.calls, args.concurrency, args.seed))
        peak_processes = len(marker_processes())
        rss_end = psutil.Process().memory_info().rss / 2**20
        del tools, pool
        gc.collect()
        CodeExecTool.close_executors()
    time.sleep(0.5)
    lat, counts = res["lat"], res["counts"]
    pct = {q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 for q in (0.5, 0.9, 0.99)}
    print(f"throughput: {args.calls / res['wall']:.1f} calls/s ({res['wall']:.1f} s)")
    print(f"latency (queueing included): p50 {pct[0.5]:.1f} ms  p90 {pct[0.9]:.1f} ms  p99 {pct[0.99]:.1f} ms  "
          f"max {lat[-1] * 1e3:.1f} ms")  # fmt: skip
    print(f"statuses: {dict(sorted((k, v) for k, v in counts.items() if k != 'violations'))}")
    rss_line = ", ".join(f"{i}: {v:.0f}" for i, v in sorted(res["rss"].items()))
    growth = rss_end - rss_warm
    print(
        f"host RSS (MiB): after warm-up {rss_warm:.1f}, end {rss_end:.1f}, growth {growth:+.1f} (by call: {rss_line})"
    )
    print(f"pool processes at the end of the load (server, template, zygotes, prepared runs): {peak_processes}")
    leaked_processes = marker_processes()
    fds_after = len(os.listdir("/proc/self/fd"))
    leaked_resources = {p for p in pool_resources() if f"pool-{os.getpid()}-" in p} - resources_before
    print(f"after close: processes left {leaked_processes}, fds {fds_before} -> {fds_after}, "
          f"cgroups/temp dirs left {sorted(leaked_resources)}")  # fmt: skip
    failures = list(res["violations"])
    if counts["violations"]:
        failures.insert(0, f"{counts['violations']} calls ended otherwise than their snippet's own outcome")
    if counts["sandbox_error"]:
        failures.append(f"{counts['sandbox_error']} sandbox_error")
    if leaked_processes:
        failures.append(f"leaked processes {leaked_processes}")
    if fds_after > fds_before:
        failures.append(f"leaked file descriptors: {fds_before} -> {fds_after}")
    if leaked_resources:
        failures.append(f"leaked cgroups/temp dirs {sorted(leaked_resources)}")
    if growth > RSS_GROWTH_LIMIT_MIB:
        failures.append(f"host RSS grew by {growth:.1f} MiB (limit {RSS_GROWTH_LIMIT_MIB:.0f})")
    for f in failures:
        print("VIOLATION:", f)
    print(f"OVERALL: {'PASS' if not failures else 'FAIL'}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
