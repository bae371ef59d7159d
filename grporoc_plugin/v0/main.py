"""``python -m grporoc_plugin.v0.main ...``: verl's legacy V0 trainer with GRPO-RoC (``trainer.use_v1=False``).

verl's V0 ``TaskRunner.run`` hard-codes ``RayPPOTrainer``, so this entry point runs verl's own TaskRunner logic in a
dedicated Ray actor whose module global ``RayPPOTrainer`` points at :class:`RoCRayPPOTrainer`; everything else
(workers, datasets, reward loop) is verl's. Takes the same hydra overrides as ``verl.trainer.main_ppo`` and composes
the plugin's ``grporoc.yaml`` by default.
"""

from __future__ import annotations

import logging

import hydra
import ray
from omegaconf import open_dict

from grporoc_plugin.config import RoCConfigError, resolve_settings, roc_section, validate_run_config

logger = logging.getLogger(__name__)

__all__ = ["RoCTaskRunner", "main", "run"]


def _v0_task_runner_base():
    from verl.trainer import main_ppo_v0

    base = main_ppo_v0.TaskRunner.__ray_actor_class__
    if "RayPPOTrainer" not in base.run.__code__.co_names:  # fail loudly if verl stops resolving it there
        raise RuntimeError("verl.trainer.main_ppo_v0.TaskRunner.run no longer builds RayPPOTrainer; update grporoc")
    return base


class _RoCTaskRunnerMixin:
    def run(self, config):
        """verl's V0 ``TaskRunner.run`` with :class:`RoCRayPPOTrainer` as the trainer class."""
        from grporoc_plugin.v0.trainer import RoCRayPPOTrainer

        # Ray may ship this class by value (cloudpickle copies base classes and their globals), so call verl's
        # run() as imported in this actor process and rebind RayPPOTrainer in the globals it resolves at call
        # time; this actor exists only to run this task, so nothing else sees the rebinding.
        base_run = _v0_task_runner_base().run
        base_run.__globals__["RayPPOTrainer"] = RoCRayPPOTrainer
        return base_run(self, config)


def _make_task_runner():
    return ray.remote(type("RoCTaskRunner", (_RoCTaskRunnerMixin, _v0_task_runner_base()), {}))


RoCTaskRunner = None  # built lazily (importing verl's V0 module pulls the trainer stack)


def check_config(config) -> None:
    """Driver-side fail-fast: RoC settings and V0 batch geometry, before Ray starts."""
    roc = roc_section(config)
    if roc is None:
        raise RoCConfigError("grporoc_plugin.v0.main needs algorithm.roc (use --config-name grporoc)")
    settings = resolve_settings(roc, rollout_n=config.actor_rollout_ref.rollout.n, trainer="v0")
    for warning in validate_run_config(config, settings, trainer="v0"):
        logger.warning("grporoc: %s", warning)


def run(config) -> None:
    """Validate, force ``trainer.use_v1=False`` and run verl's ``run_ppo`` with the RoC task runner."""
    global RoCTaskRunner
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    with open_dict(config):
        config.trainer.use_v1 = False
        agent = config.actor_rollout_ref.rollout.get("agent", None)
        if agent is not None and "RoCAgentLoopManagerTQ" in str(agent.get("agent_loop_manager_class", "")):
            # V0 oversamples through rollout.n itself and uses verl's own DataProto AgentLoopManager
            agent.agent_loop_manager_class = None
    auto_set_device(config)
    check_config(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if RoCTaskRunner is None:
        RoCTaskRunner = _make_task_runner()
    run_ppo(config, task_runner_class=RoCTaskRunner)


@hydra.main(config_path="../config", config_name="grporoc", version_base=None)
def main(config) -> None:
    """Hydra entry point (same overrides as ``verl.trainer.main_ppo``)."""
    run(config)


if __name__ == "__main__":
    main()
