"""Sandbox for untrusted, model-written Python: a pre-warmed fork server with per-run PID namespaces, no network,
rlimits and a scrubbed environment; a fresh-subprocess and a SandboxFusion backend; a Ray actor pool for scale.

Importing this package starts nothing and imports neither Ray nor verl.
"""

from grporoc_plugin.sandbox.config import (
    STATUSES,
    ExecutionResult,
    SandboxConfig,
    SandboxConfigError,
    SandboxUnavailableError,
)
from grporoc_plugin.sandbox.pool import SandboxPool, aexecute, close_default_pool, default_pool, execute

__all__ = [
    "STATUSES",
    "ExecutionResult",
    "RaySandboxPool",
    "SandboxConfig",
    "SandboxConfigError",
    "SandboxPool",
    "SandboxUnavailableError",
    "aexecute",
    "close_default_pool",
    "default_pool",
    "execute",
]


def __getattr__(name: str):
    if name == "RaySandboxPool":  # lazy: Ray is imported only when the cluster pool is asked for
        from grporoc_plugin.sandbox.ray_pool import RaySandboxPool

        return RaySandboxPool
    raise AttributeError(name)
