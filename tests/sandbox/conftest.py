"""Fixtures: one pool per isolation mode available here (namespaces, bwrap when installed, and rlimits-only).

CI pins what must be available with GRPOROC_SANDBOX_EXPECT (comma list of namespaces,bwrap,none); a missing mode
then fails ``test_expected_isolation_modes`` instead of quietly dropping out of the matrix.
"""

from __future__ import annotations

import pytest
from sandbox_helpers import MODES, server_tree

from grporoc_plugin.sandbox import SandboxConfig, SandboxPool


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
