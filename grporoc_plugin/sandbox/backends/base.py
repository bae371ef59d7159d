"""The backend protocol, the backend registry and the helpers every backend shares."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig
from grporoc_plugin.sandbox.server import _status


@dataclass(frozen=True)
class PoolContext:
    """What a pool gives its backend: its marker (in every process's environment) and its host temp dir."""

    marker: str
    base_dir: str


class Backend(Protocol):
    """Executes snippets for one ``SandboxPool``."""

    isolation: str
    """Human-readable isolation in force, e.g. "userns+netns+mntns+pidns+..." or "remote"."""
    features: frozenset[str]
    """Isolation layers in force (see docs/sandbox.md); checked against ``SandboxConfig.require_isolation``."""
    notes: list[str]
    """Why a layer is missing, in words."""

    def submit(self, code: str, stdin: str, timeout_s: float, memory_mb: int) -> concurrent.futures.Future:
        """Starts a run; the future's result is an ``ExecutionResult`` (never an exception for a snippet's doing)."""

    def stats(self) -> dict:
        """{"active", "queued", "workdirs", ...}: runs in flight, runs waiting, run directories present."""

    def close(self) -> None:
        """Stops everything the backend started (killing runs in flight)."""


BackendFactory = Callable[[SandboxConfig, PoolContext], Backend]
BACKENDS: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def wrap(factory: BackendFactory) -> BackendFactory:
        if name in BACKENDS and BACKENDS[name] is not factory:
            raise ValueError(f"sandbox backend {name!r} is already registered")
        BACKENDS[name] = factory
        return factory

    return wrap


def get_backend(name: str) -> BackendFactory:
    # Importing the modules registers the built-in backends.
    from grporoc_plugin.sandbox.backends import forkserver, fusion, subproc  # noqa: F401

    if name not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {name!r}; known: {sorted(BACKENDS)}")
    return BACKENDS[name]


def to_result(reply: dict) -> ExecutionResult:
    """An ``ExecutionResult`` from a reply dict (``_status.result``), decoding output as UTF-8 with replacement."""
    out, err = reply["stdout"], reply["stderr"]
    return ExecutionResult(
        status=reply["status"],
        stdout=out.decode("utf-8", "replace") if isinstance(out, bytes) else out,
        stderr=err.decode("utf-8", "replace") if isinstance(err, bytes) else err,
        exit_code=reply["exit_code"],
        duration_s=reply["duration_s"],
        detail=reply.get("detail", ""),
    )


def sandbox_error(detail: str) -> ExecutionResult:
    """The host side's ``sandbox_error`` (the machinery failed; counted as infra, never the model's fault)."""
    return to_result(_status.error_reply(-1, detail))


def done(result: ExecutionResult) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(result)
    return fut
