"""Sandbox for untrusted, model-written Python (docs/sandbox.md): a fork server whose runs are forked from a template
that never held another request, each run in its own PID, mount, network and IPC namespaces with its own scratch
tmpfs, memory and pids cgroups (root), rlimits, no capabilities and a seccomp filter; a status the snippet cannot
forge; a fresh-subprocess and a SandboxFusion backend; a Ray actor pool for scale.

Importing this package starts nothing and imports neither Ray nor verl.
"""

from grporoc_plugin.sandbox.config import (
    STATUSES,
    ExecutionResult,
    SandboxConfig,
    SandboxConfigError,
    SandboxStartInterruptedError,
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
    "SandboxStartInterruptedError",
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
