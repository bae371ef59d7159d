"""Oversampling for GRPO-RoC on verl's V1 trainer: each train prompt generates ``algorithm.roc.oversample_n`` sessions.

Select it with::

    +actor_rollout_ref.rollout.agent.agent_loop_manager_class=grporoc_plugin.v1.manager.RoCAgentLoopManagerTQ

``actor_rollout_ref.rollout.n`` stays the kept group size G (verl sizes PPO mini-batches by it); the manager sets the
per-prompt ``__rollout_n__`` that ``AgentLoopWorkerTQ._run_prompt`` honours. Validation batches are left alone (their
``validate`` flag is set; ``val_kwargs.n`` applies). With ``algorithm.rc.enable`` it also draws each session's
reward token and runs the conditioned workers (RC-GRPO, :class:`grporoc_plugin.rc.manager.RCManagerMixin`).
"""

from __future__ import annotations

import logging
import os

import torch
from tensordict import TensorDict
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ

from grporoc_plugin import compat
from grporoc_plugin.adapter import RoCStage
from grporoc_plugin.config import RoCConfigError
from grporoc_plugin.rc.manager import RCManagerMixin

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCAgentLoopManagerTQ", "add_rollout_n"]

ADAPTER = "oversampling manager (RoCAgentLoopManagerTQ)"


def _is_validation(prompts: TensorDict) -> bool:
    if "validate" not in prompts.keys():
        return False
    value = prompts.get("validate")
    value = getattr(value, "data", value)
    if isinstance(value, torch.Tensor):
        return bool(value.reshape(-1)[0].item()) if value.numel() else False
    return bool(value)


def add_rollout_n(prompts: TensorDict, n: int) -> TensorDict:
    """Set ``__rollout_n__ = n`` for every train prompt (validation batches unchanged); returns ``prompts``."""
    if _is_validation(prompts) or compat.ROLLOUT_N_FIELD in prompts.keys():
        return prompts  # a dataset-provided per-prompt n wins
    prompts.set(compat.ROLLOUT_N_FIELD, torch.full((prompts.batch_size[0],), int(n), dtype=torch.int64))
    return prompts


class RoCAgentLoopManagerTQ(RCManagerMixin, AgentLoopManagerTQ):
    """``AgentLoopManagerTQ`` that oversamples train prompts to ``algorithm.roc.oversample_n`` sessions."""

    def __init__(self, config, *args, **kwargs):
        compat.require_supported_verl(ADAPTER)
        self.roc_settings = RoCStage.from_run_config(config, trainer="v1", adapter=ADAPTER).settings
        custom = config.trainer.v1.sampler.get("custom_sampler", None) or {}
        mode = config.trainer.v1.get("trainer_mode", "sync")
        if mode == "sync" and str(custom.get("name", "")) != "RoCReplayBuffer":
            raise RoCConfigError(
                "RoCAgentLoopManagerTQ oversamples but nothing selects: set trainer.v1.sampler.custom_sampler."
                "{path=pkg://grporoc_plugin.v1.sampler,name=RoCReplayBuffer} or trainer.v1.trainer_mode=grporoc_sync"
            )
        self._rc_setup(config)  # algorithm.rc (RC-GRPO)
        super().__init__(config, *args, **kwargs)
        self._rc_use_workers(v1=True)

    def generate_sequences(self, prompts: TensorDict) -> None:
        """Dispatch like verl, with ``oversample_n`` sessions per train prompt when RoC is enabled."""
        if self.roc_settings.enable:
            add_rollout_n(prompts, self.roc_settings.oversample_n)
        self._rc_prepare_tq(prompts)  # after __rollout_n__: one token per session
        return super().generate_sequences(prompts)
