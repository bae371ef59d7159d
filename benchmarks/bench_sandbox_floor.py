"""What any sandbox giving each run a fresh process can reach on this machine: the ceiling of issue 9's speed target.

Issue 9 asks for a fresh process per run (class 1: no run may inherit another request's memory) with the run's own
namespaces, scratch space, seccomp filter and unprivileged uid, at 10x the throughput of ``python3 file.py`` per call.
When the machine's cores are all busy (concurrency >= its core count) throughput is CPU time per call and nothing
else: the ratio cannot exceed ``baseline CPU per call / sandbox CPU per call``. This script measures, side by side with
the baseline in alternating rounds, the CPU per call of bare-minimum runs that no real sandbox can undercut, each step
adding one mandated primitive (a warm interpreter forks one child per call; the child compiles and evaluates the
snippet, writes its value to a pipe and exits; the parent reaps it):

* ``fork``: nothing else (no isolation at all);
* ``+ confinement``: the child loads the pool's seccomp filter, becomes uid 65534 without capabilities, sets rlimits
  (what a design that kept each slot's namespaces from run to run would pay per run, at best);
* ``+ namespaces``: and is PID 1 of a fresh PID namespace with fresh mount, network, IPC and UTS namespaces;
* ``+ scratch``: and mounts its own tmpfs (all of issue 9's per-run layers but cgroups).

Left out, so the real cost is higher: the host <-> server messages, the request and output plumbing, cgroups, an init
for the PID namespace (here the snippet itself is PID 1, which a real run cannot be: signals it sends itself would be
ignored), kill on timeout, cleanup. It prints CPU per call, the ceiling ratio at concurrency >= cores, and measured
throughput at concurrency 1 and 2 (one worker process per concurrent caller). Needs root (namespaces, uid change).

    flock /tmp/grporoc_heavy.lock python benchmarks/bench_sandbox_floor.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_DIR = os.path.join(os.path.dirname(HERE), "grporoc_plugin", "sandbox", "server")
NOBODY = 65534
STEPS = ("fork", "+ confinement", "+ namespaces", "+ scratch")


def _child(step: int, bpf: bytes, scratch: str, out: int) -> None:
    """One run's process, up to ``step`` of STEPS. Never returns."""
    rc = 1
    try:
        if step >= 2:
            _linux.unshare(_linux.CLONE_NEWNS | _linux.CLONE_NEWNET | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS)
            _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
        if step >= 3:
            _linux.mount("tmpfs", scratch, "tmpfs", _linux.MS_NOSUID | _linux.MS_NODEV, "size=64m,mode=1777")
            os.chdir(scratch)
        if step >= 1:
            resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
            if bpf:
                _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
                _linux.load_seccomp(bpf)
            _linux.drop_capabilities(NOBODY)
        namespace: dict = {"__name__": "__main__"}
        exec(compile("x = 21", "<string>", "exec"), namespace)
        os.write(out, repr(eval(compile("x * 2", "<string>", "eval"), namespace)).encode())
        rc = 0
    finally:
        os._exit(rc)


def one_run(step: int, bpf: bytes, scratch: str) -> None:
    r, w = os.pipe()
    if step >= 2:
        own = os.open("/proc/self/ns/pid", os.O_RDONLY)
        _linux.unshare(_linux.CLONE_NEWPID)  # the next child is PID 1 of a fresh PID namespace
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(step, bpf, scratch, w)
    if step >= 2:
        _linux.setns(own, _linux.CLONE_NEWPID)
        os.close(own)
    os.close(w)
    value = os.read(r, 64)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status != 0 or value != b"42":
        raise RuntimeError(f"floor run failed at step {STEPS[step]!r}: status {status}, output {value!r}")


def worker(step: int, calls: int, bpf_path: str) -> None:
    """Script mode, in a fresh ``python -I`` holding what the fork server's template holds (its modules, the AST
    types built, the heap frozen): ``calls`` runs, then prints wall and CPU seconds."""
    global _linux
    sys.path.insert(0, SERVER_DIR)
    import _broker  # noqa: F401 - the server's modules, imported as the server imports them
    import _linux
    import _runner

    with open(bpf_path, "rb") as f:
        bpf = f.read()
    _runner.warm_up()
    gc.collect()
    gc.freeze()
    scratch = "/tmp"  # mounted over only inside each run's own mount namespace
    for _ in range(5):
        one_run(step, bpf, scratch)
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(calls):
        one_run(step, bpf, scratch)
    print(time.perf_counter() - t0, _cpu() - c0)


def _cpu() -> float:
    return sum(
        ru.ru_utime + ru.ru_stime
        for ru in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def measure_floor(step: int, concurrency: int, calls: int, bpf_path: str) -> tuple[float, float]:
    """(calls per second over all workers, CPU seconds per call)."""
    cmd = [sys.executable, "-I", os.path.abspath(__file__), "--worker", str(step), str(calls), bpf_path]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(concurrency)]
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"floor worker failed (exit {p.returncode})")
        results.append(tuple(map(float, out.split())))
    wall = max(r[0] for r in results)
    return concurrency * calls / wall, sum(r[1] for r in results) / (concurrency * calls)


def main() -> int:
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds of fewer calls")
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    from bench_sandbox import TRIVIAL, Baseline, run_load

    from grporoc_plugin.sandbox.seccomp import filter_bpf

    if os.geteuid() != 0:
        print("needs root (fresh namespaces, a uid change): skipped", file=sys.stderr)
        return 2
    rounds, calls, base_calls = (2, 300, 15) if args.quick else (3, 800, 40)
    cores = os.cpu_count() or 1
    bpf = filter_bpf() or b""
    print(f"machine: {cores} CPUs, load average {os.getloadavg()[0]:.2f}; seccomp filter: "
          f"{'yes' if bpf else 'unavailable'}")  # fmt: skip
    res: dict[tuple[str, int], list[tuple[float, float]]] = {}
    base = Baseline()
    try:
        with tempfile.NamedTemporaryFile(prefix="grporoc-floor-bpf-") as f:
            f.write(bpf)
            f.flush()
            for rnd in range(rounds):
                for c in (1, 2):
                    load = run_load(base, TRIVIAL, c, base_calls * c)
                    res.setdefault(("baseline", c), []).append((load["eps"], load["cpu"]))
                    for step, name in enumerate(STEPS):
                        res.setdefault((name, c), []).append(measure_floor(step, c, calls, f.name))
                print(f"  round {rnd + 1}/{rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        base.close()
    base_cpu = statistics.median(cpu for c in (1, 2) for _, cpu in res[("baseline", c)])
    print(f"\nbaseline ({Baseline.name}): {base_cpu * 1e3:.2f} ms CPU per call")
    print("floor runs (each row adds one mandated primitive; no messaging, plumbing, cgroups, init or kill):")
    for name in STEPS:
        cpu = statistics.median(cpu for c in (1, 2) for _, cpu in res[(name, c)])
        ratios = []
        for c in (1, 2):
            floor_eps = [eps for eps, _ in res[(name, c)]]
            base_eps = [eps for eps, _ in res[("baseline", c)]]
            ratios.append(statistics.median(f / b for f, b in zip(floor_eps, base_eps, strict=True)))
        print(f"  {name:14s}: {cpu * 1e3:5.2f} ms CPU per call; ceiling at c >= {cores}: {base_cpu / cpu:5.1f}x; "
              f"measured vs baseline: c=1 {ratios[0]:4.1f}x, c=2 {ratios[1]:4.1f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
