"""GRPO-RoC reward worker: answer verification, truncation rule, RoC penalty counters.

Modules: ``manager`` (the ``grporoc`` reward-loop manager), ``verify`` (answer extraction, math_verify in worker
processes), ``fastpath`` (verdicts without math_verify, identical to its own, and the verdict cache), ``text``
(which part of a response is the model's own text), ``overlong`` (DAPO's soft overlong ramp).

Import-light on purpose: the verifier subprocesses import :mod:`grporoc_plugin.reward.verify` and must not pull in
verl. The ``grporoc`` reward manager registers when :mod:`grporoc_plugin.reward.manager` is imported (done by
:mod:`grporoc_plugin.register` through verl's plugin entry point).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GrpoRocRewardManager", "GrpoRocRewardSettings", "VerifierPool", "dapo_overlong_reward", "extract_answer"]

_EXPORTS = {
    "GrpoRocRewardManager": "grporoc_plugin.reward.manager",
    "GrpoRocRewardSettings": "grporoc_plugin.reward.manager",
    "VerifierPool": "grporoc_plugin.reward.verify",
    "extract_answer": "grporoc_plugin.reward.verify",
    "dapo_overlong_reward": "grporoc_plugin.reward.overlong",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
