"""Fixtures: one pool per isolation mode available here (namespaces, bwrap when installed, and rlimits-only).

CI pins what must be available with GRPOROC_SANDBOX_EXPECT (comma list of namespaces,bwrap,none); a missing mode
then fails ``test_expected_isolation_modes`` instead of quietly dropping out of the matrix.
GRPOROC_SANDBOX_EXPECT_LAYERS (comma list of features, e.g. memcg,pidcg,seccomp) likewise pins the layers the strongest
mode must have.
"""

from __future__ import annotations

import gc
import os

import pytest
from sandbox_helpers import MODES, server_tree

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool, close_default_pool
from grporoc_plugin.sandbox.cgroups import owner_pid, pid_alive, pool_resources, sweep_stale


@pytest.fixture(scope="session", autouse=True)
def no_sandbox_leftovers():
    """At the end of the session (pools closed, default pool included): no pool cgroup or host temp dir is left.

    Entries of pools owned by other live processes (other test runs sharing this machine) are not ours to judge.
    Ours (this PID) must all be gone once nothing refers to their pools any more (``gc.collect``: a code tool's pool
    is closed with the last tool using it). Pools of dead owners (Ray actors killed at shutdown, here or in other test
    folders) cannot clean up after themselves and are reclaimed by ``sweep_stale`` by design; what it cannot remove
    (a cgroup that still holds processes: a leak) stays and fails the check.
    """
    before = pool_resources()
    yield
    close_default_pool()
    gc.collect()
    sweep_stale()
    left = []
    for path in sorted(pool_resources() - before):
        owner = owner_pid(os.path.basename(path))
        if owner is None or owner == os.getpid() or not pid_alive(owner):
            left.append(path)
    assert not left, f"sandbox tests left pool resources behind: {left}"


@pytest.fixture(scope="module", params=MODES)
def pool(request):
    p = SandboxPool(
        SandboxConfig(
            isolation=request.param, timeout_s=2.0, memory_mb=384, max_concurrency=4, max_output_bytes=1 << 20
        )
    )
    p.idle_tree = server_tree(p)
    yield p
    p.close()
