"""``python -m grporoc_plugin doctor``: a loud self-check of the plugin's registration.

verl loads ``verl.plugins`` entry points and swallows their errors, so a missing dependency or a typo silently
disables the whole plugin. ``doctor`` imports verl the way a trainer process does, then inspects verl's own
registries and exits non-zero if any component is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _check(name: str, probe: Callable[[], bool]) -> tuple[str, bool, str]:
    try:
        return name, bool(probe()), ""
    except Exception as exc:  # noqa: BLE001 - report, do not crash the doctor
        return name, False, f"{type(exc).__name__}: {exc}"


def _entry_point_declared() -> bool:
    from importlib.metadata import entry_points

    return any(ep.value == "grporoc_plugin.register" for ep in entry_points(group="verl.plugins"))


def _adv_estimator() -> bool:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    return "grpo_roc" in ADV_ESTIMATOR_REGISTRY


def _reward_manager() -> bool:
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

    return "grporoc" in REWARD_MANAGER


def _tool_parser() -> bool:
    from grporoc_plugin import compat

    return "grporoc_hermes" in compat.registered_tool_parsers()


def _agent_loop() -> bool:
    from grporoc_plugin import compat

    return "grporoc_tool_agent" in compat.registered_agent_loops()


def _code_tool() -> bool:
    from verl.tools.base_tool import BaseTool

    from grporoc_plugin.tools.code_tool import CodeExecTool

    return issubclass(CodeExecTool, BaseTool)


def _samplers() -> bool:
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from grporoc_plugin.v1.sampler import RoCReplayBuffer

    return issubclass(RoCReplayBuffer, ReplayBuffer)


def _trainer_mode() -> bool:
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls

    from grporoc_plugin.v1.trainer import RoCTrainerSync

    return get_trainer_cls("grporoc_sync") is RoCTrainerSync


def _cpu_backend() -> bool:
    from grporoc_plugin.cpu import backend

    if not backend.is_active():  # inert by design unless VERL_PLATFORM=cpu: nothing to check
        return True
    from grporoc_plugin import compat

    return "hf" in compat.registered_rollouts()


def _verl_version() -> bool:
    from grporoc_plugin import compat

    message = compat.unsupported_verl_message()
    if message is not None:
        raise RuntimeError(message)
    return True


CHECKS: list[tuple[str, Callable[[], bool]]] = [
    ("verl version within grporoc_plugin.compat.SUPPORTED_VERL", _verl_version),
    ("entry point verl.plugins -> grporoc_plugin.register", _entry_point_declared),
    ("advantage estimator 'grpo_roc'", _adv_estimator),
    ("reward manager 'grporoc' (reward-loop registry)", _reward_manager),
    ("tool parser 'grporoc_hermes'", _tool_parser),
    ("agent loop 'grporoc_tool_agent'", _agent_loop),
    ("code tool grporoc_plugin.tools.code_tool.CodeExecTool", _code_tool),
    ("V1 sampler grporoc_plugin.v1.sampler.RoCReplayBuffer", _samplers),
    ("V1 trainer mode 'grporoc_sync' (colocated reward model)", _trainer_mode),
    ("CPU backend (rollout 'hf' when VERL_PLATFORM=cpu)", _cpu_backend),
]


def doctor() -> int:
    import verl  # noqa: F401 - runs the entry points exactly as every verl process does

    from grporoc_plugin.register import REGISTRATION_ERRORS

    failed = 0
    for name, ok, err in (_check(n, p) for n, p in CHECKS):
        failed += not ok
        print(f"[{'ok' if ok else 'MISSING'}] {name}{'  (' + err + ')' if err else ''}")
    for module, err in REGISTRATION_ERRORS.items():
        print(f"[ERROR] import of {module} failed: {err}")
    failed += len(REGISTRATION_ERRORS)
    from grporoc_plugin.rules import registered_components

    for kind, names in registered_components().items():
        print(f"[rules] {kind}s: {', '.join(names)}")
    print("grporoc_plugin doctor:", "all components registered" if not failed else f"{failed} problem(s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin")
    parser.add_argument("command", choices=["doctor"], help="doctor: check that every component is registered")
    parser.parse_args(argv)
    return doctor()


if __name__ == "__main__":
    sys.exit(main())
