"""Target of the ``verl.plugins`` entry point: registers every plugin component with verl's registries.

verl imports this module inside ``import verl`` and swallows any exception at DEBUG level, so a broken plugin would
silently vanish. We therefore import each component separately, keep going past a failure, log it at WARNING and
record it in :data:`REGISTRATION_ERRORS`; ``python -m grporoc_plugin doctor`` turns that into a non-zero exit.

Nothing here may import TransferQueue, start Ray or build a model: this runs in every verl process.
"""

from __future__ import annotations

import importlib
import logging

logger = logging.getLogger(__name__)

#: Modules whose import performs a registration, with what they register (for ``doctor``).
COMPONENT_MODULES: dict[str, str] = {
    # First: once VERL_PLATFORM=cpu is set, verl must know the "cpu" platform before anything asks for the platform.
    "grporoc_plugin.cpu.backend": "CPU platform + 'hf' rollout (active only with VERL_PLATFORM=cpu)",
    "grporoc_plugin.algos": "advantage estimator 'grpo_roc'",
    "grporoc_plugin.reward.manager": "reward manager 'grporoc' (reward-loop registry)",
    "grporoc_plugin.tools.parser": "tool parser 'grporoc_hermes'",
    "grporoc_plugin.tools.agent_loop": "agent loop 'grporoc_tool_agent'",
}

#: module name -> "ExcType: message" for every component that failed to register in this process.
REGISTRATION_ERRORS: dict[str, str] = {}


def register_all() -> dict[str, str]:
    """Import every component module once; return the failures (empty when all registered)."""
    for module_name in COMPONENT_MODULES:
        if module_name in REGISTRATION_ERRORS:
            continue
        try:
            importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - verl would swallow it; we record and report it instead
            REGISTRATION_ERRORS[module_name] = f"{type(exc).__name__}: {exc}"
            logger.warning("grporoc_plugin: failed to register %s: %s", module_name, REGISTRATION_ERRORS[module_name])
    return dict(REGISTRATION_ERRORS)


register_all()

# trainer.v1.trainer_mode=grporoc_sync (colocated reward model): registered lazily, the moment verl imports
# verl.trainer.ppo.v1, so this module never pulls TransferQueue into every verl process.
try:
    from grporoc_plugin.v1 import install_trainer_hook

    install_trainer_hook()
except Exception as exc:  # noqa: BLE001 - recorded and reported by doctor, like the components above
    REGISTRATION_ERRORS["grporoc_plugin.v1 (trainer hook)"] = f"{type(exc).__name__}: {exc}"
    logger.warning("grporoc_plugin: failed to install the grporoc_sync trainer hook: %s", exc)
