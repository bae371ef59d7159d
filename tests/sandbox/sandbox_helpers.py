"""Helpers shared by the sandbox tests: which isolation modes exist here, and containment checks."""

from __future__ import annotations

import os
import time

import psutil

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, SandboxUnavailableError
from grporoc_plugin.sandbox.pool import MARKER_ENV, bwrap_path, run_marker


def available_modes() -> list[str]:
    """Isolation modes that give full isolation here (namespaces, bwrap), plus rlimits-only (always there)."""
    modes = []
    for mode in ("namespaces", "bwrap"):
        if mode == "bwrap" and bwrap_path() is None:
            continue
        try:
            with SandboxPool(SandboxConfig(isolation=mode, require_isolation="full", max_concurrency=1)):
                modes.append(mode)
        except SandboxUnavailableError:
            pass
    modes.append("none")
    return modes


MODES = available_modes()


def server_tree(pool: SandboxPool) -> set[int]:
    """PIDs of the fork server, its template and slot zygotes (bwrap adds its own process): what a pool always has.
    Prepared runs (an init and a snippet process per slot, forked ahead of their requests) are not counted."""
    try:
        root = psutil.Process(pool.server_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    zygotes = set(pool.stats()["zygotes"])
    return {p.pid for p in procs if not any(a.pid in zygotes for a in _ancestors(p))}


def _ancestors(p: psutil.Process) -> list[psutil.Process]:
    try:
        return p.parents()
    except psutil.NoSuchProcess:
        return []


def pool_processes(pool: SandboxPool) -> list[psutil.Process]:
    """Every live process of the pool: the environment of each carries the pool's marker (forked processes keep the
    server's, executed ones get the snippet environment's), whatever its parent or session."""
    wanted = {f"{MARKER_ENV}={m}".encode() for m in (pool.marker, run_marker(pool.marker))}
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
        except OSError:
            continue
        if wanted & env:
            try:
                p = psutil.Process(int(name))
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


def snippet_processes(pool: SandboxPool) -> list[psutil.Process]:
    """Live processes of finished runs: every process of the pool but its server, template, zygotes and each zygote's
    next run (one init, with at most one child, the snippet process waiting for its request, itself childless)."""
    allowed = server_tree(pool)
    for zygote in pool.stats()["zygotes"]:
        try:
            inits = [c for c in psutil.Process(zygote).children() if c.status() != psutil.STATUS_ZOMBIE]
            if len(inits) == 1:
                allowed.add(inits[0].pid)
                waiting = [c for c in inits[0].children() if c.status() != psutil.STATUS_ZOMBIE]
                if len(waiting) == 1 and not waiting[0].children():
                    allowed.add(waiting[0].pid)
        except psutil.NoSuchProcess:
            continue
    return [p for p in pool_processes(pool) if p.pid not in allowed]


def assert_contained(pool: SandboxPool) -> None:
    """No process of a finished run survives its result; no run directory is left (runs without scratch tmpfs).

    A zygote forks its next run right after the last one: a process seen in that instant is looked at again (for up
    to a second) before it counts as a survivor."""
    deadline = time.monotonic() + 1.0
    while (left := snippet_processes(pool)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert left == [], [(p.pid, p.ppid(), p.cmdline()) for p in left if p.is_running()]
    assert server_tree(pool) == pool.idle_tree
    assert pool.stats()["workdirs"] == 0


def cgroup_busy(path: str) -> bool:
    """Whether a cgroup still holds processes."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return bool(f.read().strip())
    except OSError:
        return False
