"""Sandbox configuration and result types (no heavy imports)."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "exec_error", "timeout", "memory_error", "output_limit", "sandbox_error"]
STATUSES: tuple[str, ...] = ("ok", "exec_error", "timeout", "memory_error", "output_limit", "sandbox_error")
#: Per-run isolation layers that ``SandboxConfig.disable_layers`` may switch off (to measure what each one costs).
LAYERS = ("pidns", "netns", "ipcns", "scratch", "seccomp", "memcg", "pidcg", "uid")
ISOLATION_MODES = ("auto", "namespaces", "bwrap", "none")
REQUIREMENTS = ("none", "network", "pid", "filesystem", "full")
BACKENDS = ("forkserver", "subprocess", "sandbox_fusion")
#: Fresh per-sandbox tmpfs (per-run with a PID namespace): host paths there can never be exposed to snippets.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", os.path.realpath(tempfile.gettempdir()))

#: Environment the snippet sees; HOME, TMPDIR and PWD are set to its private working directory.
DEFAULT_ENV: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class SandboxConfigError(ValueError):
    """A sandbox config value is invalid (the message names the key)."""


class SandboxUnavailableError(RuntimeError):
    """The isolation a config requires is not available on this machine."""


class SandboxStartInterruptedError(SandboxUnavailableError):
    """The sandbox server was killed (SIGKILL: an operator, the OOM killer) or ran out of time while it started. That
    says nothing about what the machine supports: ``isolation="auto"`` retries the same isolation and never falls
    back to a weaker one on it."""


@dataclass(frozen=True)
class SandboxConfig:
    """How snippets are executed. Defaults follow the release's code-judge set-up (4 s, 256+128 MB, stdout capped)."""

    backend: str = "forkserver"
    """forkserver (pre-warmed, forks per run) | subprocess (fresh `python` per run, the release's design) |
    sandbox_fusion (remote SandboxFusion /run_code service)."""
    isolation: str = "auto"
    """auto (best available: namespaces, else bwrap, else none) | namespaces | bwrap | none (rlimits + process tree
    only: NO filesystem isolation, snippets can read whatever uid 0 without capabilities can)."""
    require_isolation: str = "none"
    """Refuse to start with less: none | network | pid | filesystem | full (network + pid + filesystem, and every
    run in its own network and IPC namespaces under the seccomp filter)."""
    timeout_s: float = 4.0
    """Default wall-clock limit per execution (RLIMIT_CPU is set to ceil(timeout)+1 as a backstop)."""
    memory_mb: int = 384
    """Default memory limit of a run in MiB: RLIMIT_AS of each of its processes (it includes the interpreter), and
    where cgroups are available (root) the limit of the run's memory cgroup, which counts all of the run's memory:
    every process, its scratch files, shared memory and memfds."""
    max_output_bytes: int = 1 << 20
    """Cap per stream (stdout, stderr); more than this ends the run with status output_limit."""
    max_file_bytes: int = 64 << 20
    """RLIMIT_FSIZE: largest file the snippet may write."""
    max_open_files: int = 256
    """RLIMIT_NOFILE of the snippet."""
    max_processes: int = 256
    """Processes (and threads) a run may have at once: its pids cgroup where available, else RLIMIT_NPROC counted in
    the run slot's own user namespace (unprivileged hosts) or per uid (rlimits-only mode)."""
    tmpfs_mb: int = 512
    """Size of each run's own scratch tmpfs (its /tmp, /var/tmp and /dev/shm; namespaces/bwrap isolation)."""
    max_concurrency: int = 0
    """Executions running at once per pool (more are queued in the fork server); 0 = 2 x CPU count."""
    python: str = sys.executable
    """Interpreter that runs snippets (its stdlib, and its site-packages with expose_site_packages, are visible)."""
    expose_site_packages: bool = True
    """Namespaces/bwrap: show the interpreter's site-packages (read-only) so snippets can ``import numpy, sympy``."""
    extra_ro_paths: tuple[str, ...] = ()
    """Namespaces/bwrap: more host paths snippets may read (read-only, same path). Nothing else of the host is
    visible: not /root, /home, /work, the repo, /var, /run or the host's /tmp (see layout.py)."""
    run_uid: int = 65534
    """Namespaces/bwrap as root: the uid/gid snippets run as (65534 = nobody); -1 keeps uid 0 without capabilities."""
    preload: tuple[str, ...] = ()
    """Modules the fork server imports once so snippets get them for free (e.g. ("numpy", "sympy"))."""
    env: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV))
    """Complete environment of the snippet (nothing of the host's is inherited)."""
    workdir_base: str = ""
    """Host directory for run directories when no private tmpfs is used; "" = the system temp dir."""
    start_timeout_s: float = 30.0
    """How long the fork server may take to start (preloads included)."""
    sandbox_fusion_url: str = ""
    """URL of a SandboxFusion /run_code endpoint (backend sandbox_fusion)."""
    sandbox_fusion_max_concurrency: int = 32
    """Concurrent HTTP calls to SandboxFusion per pool."""
    disable_layers: tuple[str, ...] = ()
    """For measurement only (benchmarks/bench_sandbox.py): per-run layers to switch off, from ``LAYERS``. Each one
    switched off weakens isolation; never set this for untrusted code."""

    def __post_init__(self) -> None:
        def bad(key: str, msg: str) -> SandboxConfigError:
            return SandboxConfigError(f"SandboxConfig.{key}: {msg}")

        if self.backend not in BACKENDS:
            raise bad("backend", f"{self.backend!r} is not one of {BACKENDS}")
        if self.isolation not in ISOLATION_MODES:
            raise bad("isolation", f"{self.isolation!r} is not one of {ISOLATION_MODES}")
        if self.require_isolation not in REQUIREMENTS:
            raise bad("require_isolation", f"{self.require_isolation!r} is not one of {REQUIREMENTS}")
        if not self.timeout_s > 0:
            raise bad("timeout_s", f"must be > 0, got {self.timeout_s!r}")
        for key in ("memory_mb", "max_output_bytes", "max_file_bytes", "max_open_files", "max_processes", "tmpfs_mb"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) <= 0:
                raise bad(key, f"must be a positive int, got {getattr(self, key)!r}")
        if isinstance(self.disable_layers, (list, str)):
            value = (self.disable_layers,) if isinstance(self.disable_layers, str) else tuple(self.disable_layers)
            object.__setattr__(self, "disable_layers", value)
        for name in self.disable_layers:
            if name not in LAYERS:
                raise bad("disable_layers", f"{name!r} is not one of {LAYERS}")
        if isinstance(self.extra_ro_paths, (list, str)):
            object.__setattr__(
                self,
                "extra_ro_paths",
                (self.extra_ro_paths,) if isinstance(self.extra_ro_paths, str) else tuple(self.extra_ro_paths),
            )
        for path in self.extra_ro_paths:
            if not isinstance(path, str) or not os.path.isabs(path) or not os.path.exists(path):
                raise bad("extra_ro_paths", f"{path!r} is not an existing absolute path")
            if any(os.path.commonpath([path, s]) == s for s in SCRATCH_DIRS):
                raise bad("extra_ro_paths", f"{path!r} lies in {SCRATCH_DIRS}, which are the sandbox's own scratch")
        if not isinstance(self.run_uid, int) or self.run_uid < -1:
            raise bad("run_uid", f"must be -1 or a uid >= 0, got {self.run_uid!r}")
        if self.max_concurrency < 0:
            raise bad("max_concurrency", f"must be >= 0, got {self.max_concurrency!r}")
        if self.backend == "sandbox_fusion" and not self.sandbox_fusion_url:
            raise bad("sandbox_fusion_url", "is required with backend='sandbox_fusion'")
        if self.backend != "sandbox_fusion" and not os.path.exists(self.python):
            raise bad("python", f"{self.python!r} does not exist")

    @property
    def concurrency(self) -> int:
        """Effective max_concurrency."""
        return self.max_concurrency or 2 * (os.cpu_count() or 1)


@dataclass
class ExecutionResult:
    """Outcome of one execution. ``exit_code`` is negative (-signal) when the snippet was killed, None if never run."""

    status: str
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    duration_s: float = 0.0
    detail: str = ""
    """Why, for sandbox_error / output_limit / timeout / memory_error (machinery message, never the snippet's
    output)."""
