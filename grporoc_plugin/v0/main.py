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

from grporoc_plugin import compat
from grporoc_plugin.adapter import RoCStage
from grporoc_plugin.rc.settings import RC_MANAGER_V0, rc_settings_from_config

logger = logging.getLogger(__name__)

__all__ = ["RoCTaskRunner", "main", "run"]


class _RoCTaskRunnerMixin:
    def run(self, config):
        """verl's V0 ``TaskRunner.run`` with :class:`RoCRayPPOTrainer` as the trainer class."""
        from grporoc_plugin.v0.trainer import RoCRayPPOTrainer

        return compat.run_v0_with_trainer(self, config, RoCRayPPOTrainer)


def _make_task_runner():
    return ray.remote(type("RoCTaskRunner", (_RoCTaskRunnerMixin, compat.v0_task_runner_base()), {}))


RoCTaskRunner = None  # built lazily (importing verl's V0 module pulls the trainer stack)


def check_config(config) -> None:
    """Driver-side fail-fast: verl version, RoC settings and V0 batch geometry, before Ray starts."""
    compat.require_supported_verl("V0 trainer (grporoc_plugin.v0.main)")
    RoCStage.from_run_config(config, trainer="v0", adapter="grporoc_plugin.v0.main")


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
        if agent is not None and rc_settings_from_config(config).enable and not agent.get("agent_loop_manager_class"):
            agent.agent_loop_manager_class = RC_MANAGER_V0  # RC-GRPO: draws each row's reward token
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
