"""Fixtures: one pool per isolation mode available here (namespaces, bwrap when installed, and rlimits-only).

CI pins what must be available with GRPOROC_SANDBOX_EXPECT (comma list of namespaces,bwrap,none); a missing mode
then fails ``test_expected_isolation_modes`` instead of quietly dropping out of the matrix.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from sandbox_helpers import MODES, server_tree

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, close_default_pool
from grporoc_plugin.sandbox.pool import PIDS_CGROUP_ROOT, RESOURCE_PREFIX, _owner_pid, _pid_alive, sweep_stale


def _sandbox_resources() -> set[str]:
    found = set()
    for root in (PIDS_CGROUP_ROOT, tempfile.gettempdir()):
        try:
            found |= {os.path.join(root, n) for n in os.listdir(root) if n.startswith(RESOURCE_PREFIX)}
        except OSError:
            pass
    return found


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_leftovers():
    """At the end of the session (pools closed, default pool included): no pool cgroup or host temp dir is left.

    Entries of pools owned by other live processes (other test runs sharing this machine) are not ours to judge.
    Ours (this PID) must all be gone. Pools of dead owners (Ray actors killed at shutdown, here or in other test
    folders) cannot clean up after themselves and are reclaimed by ``sweep_stale`` by design; what it cannot remove
    (a cgroup that still holds processes: a leak) stays and fails the check.
    """
    before = _sandbox_resources()
    yield
    close_default_pool()
    sweep_stale()
    left = []
    for path in sorted(_sandbox_resources() - before):
        owner = _owner_pid(os.path.basename(path))
        if owner is None or owner == os.getpid() or not _pid_alive(owner):
            left.append(path)
    assert not left, f"sandbox tests left pool resources behind: {left}"


@pytest.fixture(scope="module", params=MODES)
def pool(request):
    p = SandboxPool(
        SandboxConfig(
            isolation=request.param, timeout_s=2.0, memory_mb=384, max_concurrency=8, max_output_bytes=1 << 20
        )
    )
    p.idle_tree = server_tree(p)
    yield p
    p.close()
