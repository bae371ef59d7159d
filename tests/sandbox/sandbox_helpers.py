"""Helpers shared by the sandbox tests: which isolation modes exist here, and containment checks."""

from __future__ import annotations

import os
import time

import psutil

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, SandboxUnavailableError
from grporoc_plugin.sandbox.pool import MARKER_ENV, bwrap_path, run_marker


def available_modes() -> list[str]:
    modes = []
    try:
        with SandboxPool(SandboxConfig(isolation="namespaces", require_isolation="full")):
            modes.append("namespaces")
    except SandboxUnavailableError:
        pass
    if bwrap_path() is not None:
        modes.append("bwrap")
    modes.append("none")
    return modes


MODES = available_modes()


def server_tree(pool: SandboxPool) -> set[int]:
    """PIDs of the fork server and its descendants (bwrap adds its own init)."""
    try:
        root = psutil.Process(pool.server_pid)
        return {root.pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def snippet_processes(pool: SandboxPool) -> list[psutil.Process]:
    """Every live process carrying this pool's snippet marker (whatever its parent or session)."""
    want = f"{MARKER_ENV}={run_marker(pool.marker)}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if want in env.split(b"\0"):
            try:
                p = psutil.Process(int(name))
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.NoSuchProcess:
                pass
    return found


def assert_contained(pool: SandboxPool) -> None:
    """No snippet process survives its result; the supervisor tree shrinks back to idle within a second."""
    assert snippet_processes(pool) == []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        extra = server_tree(pool) - pool.idle_tree
        if not extra:
            break
        time.sleep(0.01)
    assert server_tree(pool) - pool.idle_tree == set()
    assert pool.stats()["workdirs"] == 0


def cgroup_busy(path: str) -> bool:
    """Whether a cgroup still holds processes."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return bool(f.read().strip())
    except OSError:
        return False
