"""The one status classifier and the one error reply (stdlib only; used by every backend).

A status is decided from evidence the snippet cannot forge, gathered by the supervisor outside the snippet's processes:

* ``killed_for``: the supervisor killed the run itself, on its own clock (``"timeout"``) or its own byte count of
  stdout/stderr (``"output_limit"``);
* the wait status of the run's first process, and its CPU time from ``wait4`` (a ``SIGXCPU`` death is a timeout only
  when the CPU limit was really used up: a snippet sending itself SIGXCPU is an ordinary signal death);
* ``oom_kills``: the run's memory cgroup's own OOM-kill counter (all of the run's memory, every process);
* ``setup_error``: the run's set-up failed before the snippet's code started (reported on a pipe that is closed
  before the snippet runs, so the snippet cannot write to it). Only this, or a failure of the machinery itself, is
  ``sandbox_error``.

One input comes from inside the snippet's process: ``report``, the exception name the runner writes when the snippet
dies of an unhandled exception (Python's own ``MemoryError`` under RLIMIT_AS is only visible there). It is trusted for
one thing only, telling ``memory_error`` from ``exec_error`` for a process that exited with code 1: both are the
snippet's own error (the code tool counts both as "exec"), so a forged report cannot turn an error into anything else.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

STATUSES: tuple[str, ...] = ("ok", "exec_error", "timeout", "memory_error", "output_limit", "sandbox_error")


@dataclass
class Evidence:
    """What the supervisor saw of one run (see the module docstring)."""

    wait_status: int | None = None
    """Raw wait status of the run's first process (None: it was never started or never reaped)."""
    killed_for: str | None = None
    """"timeout" / "output_limit" when the supervisor killed the run for that reason."""
    cpu_s: float = 0.0
    """CPU seconds of the run's first process and the children it reaped (wait4's rusage)."""
    cpu_limit_s: float = float("inf")
    """RLIMIT_CPU soft limit of the run."""
    oom_kills: int = 0
    """OOM kills in the run's memory cgroup during the run."""
    setup_error: str | None = None
    """Why the run's set-up failed before the snippet started (None: it did not fail)."""
    report: str = ""
    """Exception name written by the runner inside the snippet's process (see the module docstring)."""


def exit_code(wait_status: int | None) -> int | None:
    """Process exit code from a raw wait status; -N when killed by signal N."""
    return None if wait_status is None else os.waitstatus_to_exitcode(wait_status)


def classify(ev: Evidence) -> tuple[str, str]:
    """(status, detail) of a run; ``detail`` says why for anything but ok/exec_error (never the snippet's text)."""
    if ev.setup_error is not None:
        return "sandbox_error", f"run set-up failed: {ev.setup_error}"
    if ev.killed_for == "timeout":
        return "timeout", "wall-clock limit reached"
    if ev.killed_for == "output_limit":
        return "output_limit", "output limit reached"
    if ev.oom_kills > 0:
        return "memory_error", "memory limit of the run reached (cgroup OOM kill)"
    code = exit_code(ev.wait_status)
    if code is None:
        return "sandbox_error", "the run was never reaped"
    if code == -signal.SIGXCPU and ev.cpu_s >= ev.cpu_limit_s - 0.05:
        return "timeout", "CPU-time limit reached"
    if code == 0:
        return "ok", ""
    if code == 1 and ev.report == "MemoryError":
        return "memory_error", "MemoryError (address-space limit)"
    return "exec_error", ""


def result(run_id: int, status: str, detail: str = "", exit_code: int | None = None, stdout: bytes = b"",
           stderr: bytes = b"", duration_s: float = 0.0) -> dict:  # fmt: skip
    """A run's reply as the broker sends it to the host (and as the other backends build it)."""
    return {
        "id": run_id,
        "status": status,
        "exit_code": exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "detail": detail,
        "duration_s": duration_s,
    }


def error_reply(run_id: int, detail: str) -> dict:
    """The one ``sandbox_error`` reply: the machinery failed, the snippet is not to blame (counted as infra)."""
    return result(run_id, "sandbox_error", detail)
