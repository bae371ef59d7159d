"""``SandboxPool``, the front end over the backends (fork server, fresh subprocess, SandboxFusion), and the
process-wide default pool behind ``execute`` / ``aexecute``."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import tempfile
import threading
import uuid
import weakref

from grporoc_plugin.sandbox.backends.base import Backend, PoolContext, done, get_backend
from grporoc_plugin.sandbox.backends.forkserver import MARKER_ENV, bwrap_path, layout_of, run_marker
from grporoc_plugin.sandbox.cgroups import RESOURCE_PREFIX, owner_pid, pid_alive, pool_resources, sweep_stale
from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig, SandboxUnavailableError
from grporoc_plugin.sandbox.server._linux import remove_tree

logger = logging.getLogger(__name__)

__all__ = [
    "MARKER_ENV",
    "RESOURCE_PREFIX",
    "SandboxPool",
    "aexecute",
    "bwrap_path",
    "close_all_pools",
    "close_default_pool",
    "default_pool",
    "execute",
    "layout_of",
    "owner_pid",
    "pid_alive",
    "pool_resources",
    "run_marker",
    "sweep_stale",
]

#: Features each ``SandboxConfig.require_isolation`` level needs, and how to get each one when it is missing.
REQUIRED_FEATURES: dict[str, set[str]] = {
    "none": set(),
    "network": {"net"},
    "pid": {"pid"},
    "filesystem": {"mount"},
    "full": {"net", "pid", "mount", "runnet", "ipc", "seccomp"},
}
HOW_TO_GET = {
    "net": "network namespaces (root, or user namespaces)",
    "pid": "PID namespaces (root, or user namespaces)",
    "mount": "mount namespaces (root, or user namespaces) or bubblewrap (apt-get install bubblewrap)",
    "runnet": "per-run network namespaces (root, or user namespaces)",
    "ipc": "per-run IPC namespaces (root, or user namespaces)",
    "seccomp": "libseccomp (apt-get install libseccomp2; pip install pyseccomp)",
}


def _bad_input(code: object, stdin: object) -> ExecutionResult | None:
    """Malformed tool arguments are the snippet's error (exec_error), never an exception in the caller."""
    for name, value in (("code", code), ("input", stdin)):
        if not isinstance(value, str):
            return ExecutionResult(
                status="exec_error",
                stderr=f"TypeError: {name} must be a string, got {type(value).__name__}",
                exit_code=1,
            )
    return None


class SandboxPool:
    """Reusable executor of untrusted snippets. Thread-safe, usable from any thread for its whole life (whichever
    thread created it); ``aexecute`` for asyncio callers.

    The isolation actually in force is detected at start-up (``isolation``, e.g.
    "netns+runnetns+ipcns+mntns+pidns+tmpfs+memcg+pidcg+seccomp+uid"; ``features``; ``notes`` say why a layer is
    missing) and never silently below ``config.require_isolation``.
    """

    def __init__(self, config: SandboxConfig | None = None):
        self.config = cfg = config or SandboxConfig()
        # The host PID in the name lets a later pool remove what a killed host left behind (sweep_stale).
        self.marker = f"pool-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._owner = os.getpid()
        self._closed = False
        self._base = ""
        self._backend: Backend | None = None
        factory = get_backend(cfg.backend)
        if cfg.backend != "sandbox_fusion":
            sweep_stale(cfg.workdir_base or None)
            self._base = tempfile.mkdtemp(prefix=f"{RESOURCE_PREFIX}{self.marker}-", dir=cfg.workdir_base or None)
        _live_pools.add(self)
        try:
            self._backend = factory(cfg, PoolContext(self.marker, self._base))
        except BaseException:
            self.close()  # a failed start leaves no server, cgroup or directory behind
            raise
        self.isolation: str = self._backend.isolation
        self.features: frozenset[str] = frozenset(self._backend.features)
        self.notes: list[str] = list(self._backend.notes)
        self._check_required()

    def _check_required(self) -> None:
        level = self.config.require_isolation
        if self.config.backend == "sandbox_fusion":
            if level != "none":
                logger.info("sandbox isolation is the remote SandboxFusion service's; require_isolation not checked")
            return
        missing = REQUIRED_FEATURES[level] - set(self.features)
        if missing:
            self.close()
            how = "; ".join(f"{m}: {HOW_TO_GET[m]}" for m in sorted(missing))
            raise SandboxUnavailableError(
                f"SandboxConfig.require_isolation={level!r} needs {sorted(REQUIRED_FEATURES[level])} but only "
                f"{self.isolation!r} is available here (missing {sorted(missing)}). To get them: {how}. "
                f"Details: {'; '.join(self.notes) or 'none'}"
            )

    # -- execution

    def _limits(self, timeout_s: float | None, memory_mb: int | None) -> tuple[float, int]:
        t = self.config.timeout_s if timeout_s is None else float(timeout_s)
        m = self.config.memory_mb if memory_mb is None else int(memory_mb)
        if not t > 0 or m <= 0:
            raise ValueError(f"timeout_s and memory_mb must be positive, got {timeout_s!r}, {memory_mb!r}")
        return t, m

    def _submit(self, code: object, stdin: object, timeout_s: float | None, memory_mb: int | None):
        bad = _bad_input(code, stdin)
        if bad is not None:
            return done(bad)
        t, m = self._limits(timeout_s, memory_mb)
        if self._closed or self._backend is None:
            raise RuntimeError("SandboxPool is closed")
        if os.getpid() != self._owner:
            raise RuntimeError("SandboxPool used in a forked child process: create a new pool there")
        return self._backend.submit(code, stdin, t, m)  # type: ignore[arg-type]

    def execute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        """Runs ``code`` with ``stdin``; blocks until the result (never raises for the snippet's behaviour)."""
        return self._submit(code, stdin, timeout_s, memory_mb).result()

    async def aexecute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        """Async ``execute``: the event loop is never blocked."""
        return await asyncio.wrap_future(self._submit(code, stdin, timeout_s, memory_mb))

    # -- introspection / lifecycle

    @property
    def server_pid(self) -> int | None:
        """PID of the fork server (host PID namespace), None for other backends."""
        return getattr(self._backend, "server_pid", None)

    def stats(self) -> dict:
        """Live numbers: runs in flight ("active"), waiting ("queued"), run directories present ("workdirs")."""
        if self._backend is None:
            raise RuntimeError("SandboxPool is closed")
        return self._backend.stats()

    def close(self) -> None:
        """Stops the backend (killing any run in flight) and removes the pool's cgroups and directories."""
        if self._closed:
            return
        self._closed = True
        _live_pools.discard(self)
        if os.getpid() != self._owner:
            return  # a forked child's copy: the server, cgroups and directories are the parent's
        if self._backend is not None:
            self._backend.close()
        if self._base:
            try:
                remove_tree(self._base)
            except OSError as e:
                logger.error("sandbox pool directory %s could not be removed: %r", self._base, e)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# ----------------------------------------------------------------------------------------------------------------------
# Process-wide default pool
# ----------------------------------------------------------------------------------------------------------------------

_default_pool: SandboxPool | None = None
_default_lock = threading.Lock()
#: Every open pool of this process, closed at exit: a pool a caller forgot would otherwise leave its cgroup and
#: directory behind (``__del__`` cannot be relied on during interpreter shutdown).
_live_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()


def default_pool() -> SandboxPool:
    """The lazily created process-wide pool used by ``execute`` / ``aexecute`` (default ``SandboxConfig``)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = SandboxPool(SandboxConfig())
        return _default_pool


def close_default_pool() -> None:
    """Closes the default pool (a later ``execute`` creates a new one)."""
    global _default_pool
    with _default_lock:
        pool, _default_pool = _default_pool, None
    if pool is not None:
        pool.close()


def close_all_pools() -> None:
    """Closes the default pool and every other pool still open in this process (registered with atexit)."""
    close_default_pool()
    for pool in list(_live_pools):
        try:
            pool.close()
        except Exception:  # noqa: BLE001 - keep closing the others
            logger.exception("closing a sandbox pool at exit failed")


def _forget_inherited_pools() -> None:
    """In a forked child: the parent's pools are not ours to close (their servers belong to the parent)."""
    global _default_pool, _default_lock
    _default_pool, _default_lock = None, threading.Lock()
    _live_pools.clear()


atexit.register(close_all_pools)
os.register_at_fork(after_in_child=_forget_inherited_pools)


def execute(
    code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
) -> ExecutionResult:
    """Runs ``code`` in the default pool (see ``SandboxPool.execute``)."""
    return default_pool().execute(code, stdin, timeout_s=timeout_s, memory_mb=memory_mb)


async def aexecute(
    code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
) -> ExecutionResult:
    """Async ``execute`` in the default pool."""
    return await default_pool().aexecute(code, stdin, timeout_s=timeout_s, memory_mb=memory_mb)
