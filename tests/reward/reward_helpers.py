"""Helpers shared by the reward tests (importable from the test modules, like tests/rc/rc_helpers.py)."""

from __future__ import annotations

import psutil


def verifier_workers() -> set[int]:
    """Live verifier subprocesses of this test process (a module's ``pool`` fixture may hold some)."""
    out = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if any("_worker_main" in part for part in child.cmdline()):
                out.add(child.pid)
        except psutil.Error:
            pass
    return out
