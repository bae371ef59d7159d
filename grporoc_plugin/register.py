"""Target of the ``verl.plugins`` entry point: registers every plugin component with verl's registries, lazily.

``import verl`` imports this module in every verl process (driver, TaskRunner, every Ray worker), whether or not
the run uses GRPO-RoC, so it must cost next to nothing. Each component is therefore registered the moment verl itself
imports the registry it belongs to (a post-import hook on that verl module): a process that never builds an agent
loop never imports the agent loop, and the registry is complete whenever anyone looks into it. The CPU backend is the
exception: with ``VERL_PLATFORM=cpu`` it must be registered before anything asks for the platform, so it loads here.

verl swallows entry-point exceptions at DEBUG level, so a broken plugin would silently vanish: every failure is
logged at WARNING and recorded in :data:`REGISTRATION_ERRORS`; ``python -m grporoc_plugin doctor`` imports each
registry, then turns any failure into a non-zero exit. Nothing here imports torch, TransferQueue or Ray.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: verl module -> (plugin module whose import registers into it, what it registers). The plugin module is imported
#: right after verl's module has executed (or at once when verl already imported it).
LAZY_REGISTRATIONS: dict[str, tuple[str, str]] = {
    "verl.trainer.ppo.core_algos": ("grporoc_plugin.algos", "advantage estimator 'grpo_roc'"),
    "verl.experimental.reward_loop": (
        "grporoc_plugin.reward.manager",
        "reward manager 'grporoc' (reward-loop registry)",
    ),
    "verl.experimental.agent_loop": ("grporoc_plugin.tools.agent_loop", "tool parser 'grporoc_hermes' + agent loop"),
    "verl.trainer.ppo.v1": ("grporoc_plugin.v1.trainer", "V1 trainer mode 'grporoc_sync'"),
}
#: Registered at import time, and only on the CPU backend (VERL_PLATFORM=cpu).
CPU_BACKEND = ("grporoc_plugin.cpu.backend", "CPU platform + 'hf' rollout (active only with VERL_PLATFORM=cpu)")

#: Every component module with what it registers (for ``doctor``).
COMPONENT_MODULES: dict[str, str] = {
    CPU_BACKEND[0]: CPU_BACKEND[1],
    **{module: what for module, what in LAZY_REGISTRATIONS.values()},
}

#: module name -> "ExcType: message" for every component that failed to register in this process.
REGISTRATION_ERRORS: dict[str, str] = {}


def _register(module_name: str) -> None:
    if module_name in REGISTRATION_ERRORS:
        return
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - verl would swallow it; we record and report it instead
        REGISTRATION_ERRORS[module_name] = f"{type(exc).__name__}: {exc}"
        logger.warning("grporoc_plugin: failed to register %s: %s", module_name, REGISTRATION_ERRORS[module_name])


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of each verl registry module to register our component after it."""

    def find_spec(self, fullname, path, target=None):
        entry = LAZY_REGISTRATIONS.get(fullname)
        if entry is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register(entry[0])

        spec.loader.exec_module = exec_then_register
        return spec


def register_all(*, eager: bool = False) -> dict[str, str]:
    """Register every component: now where verl already imported the registry (or ``eager``), else on its import.

    Returns the failures so far (empty when everything registered).
    """
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu" or eager:
        _register(CPU_BACKEND[0])
    pending = False
    for verl_module, (module_name, _) in LAZY_REGISTRATIONS.items():
        if eager:
            importlib.import_module(verl_module)  # runs the hook below, or registers now if already imported
            _register(module_name)
        elif verl_module in sys.modules:
            _register(module_name)
        else:
            pending = True
    if pending and not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
    return dict(REGISTRATION_ERRORS)


register_all()
