"""GRPO-RoC with a colocated reward model on verl's V1 trainer: select in ``_balance_batch``, after the reward.

A colocated reward model (``reward.reward_model.enable=True`` without ``enable_resource_pool``) scores the batch
only after replay-buffer sampling (``PPOTrainer._compute_reward_colocate``, step 2 of ``_step_once``), so the RoC
sampler cannot see the scores. This trainer, selected with ``trainer.v1.trainer_mode=grporoc_sync``, selects in
``_balance_batch`` (step 3, still before old-log-prob / ref / advantage) and otherwise behaves as verl's ``sync``.
It also works with a streaming reward. Use it *instead of* the RoC sampler, never with it.
"""

from __future__ import annotations

import logging
import os

import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from grporoc_plugin.config import RoCConfigError, RoCSettings, resolve_settings, roc_section, validate_run_config
from grporoc_plugin.v1.sampler import _keep_one_group, select_kv_batch

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCTrainerSync", "TRAINER_MODE"]

#: ``trainer.v1.trainer_mode`` value that selects :class:`RoCTrainerSync`.
TRAINER_MODE = "grporoc_sync"


@register_trainer(TRAINER_MODE)
class RoCTrainerSync(PPOTrainerSync):
    """verl's synchronous V1 trainer with GRPO-RoC selection in ``_balance_batch``."""

    def __init__(self, config):
        roc = roc_section(config)
        if roc is None:
            raise RoCConfigError(f"trainer.v1.trainer_mode={TRAINER_MODE} needs algorithm.roc settings")
        self.roc_settings: RoCSettings = resolve_settings(roc, rollout_n=config.actor_rollout_ref.rollout.n)
        for warning in validate_run_config(config, self.roc_settings, trainer="v1"):
            logger.warning("grporoc: %s", warning)
        custom = config.trainer.v1.sampler.get("custom_sampler", None) or {}
        if str(custom.get("name", "")) == "RoCReplayBuffer":
            raise RoCConfigError(
                f"trainer.v1.trainer_mode={TRAINER_MODE} selects in _balance_batch; also setting "
                "trainer.v1.sampler.custom_sampler=RoCReplayBuffer would select twice: unset the custom sampler"
            )
        if self.roc_settings.empty_batch == "refill":
            logger.warning("grporoc: algorithm.roc.empty_batch=refill is not possible after sampling; using keep_one")
        super().__init__(config)

    def _build_replay_buffer(self):
        # verl compares trainer_mode with the literal "sync" in several places (replay buffer class, dataloader
        # gen_batch_size, checkpoints, prompt persistence): this trainer *is* sync, so say so before any of them
        self.trainer_mode = "sync"
        return super()._build_replay_buffer()

    def _balance_batch(self, batch: KVBatchMeta, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """Drop the sessions RoC rejects (whole sessions, keys cleared), then verl's balancing/padding."""
        if batch.partition_id == "train" and batch.keys:
            colocated = self.reward_loop_manager.reward_loop_worker_handles is None
            kept, dropped, roc_metrics = select_kv_batch(
                batch,
                self.roc_settings,
                step=self.global_steps,
                reward_manager=str(self.config.reward.reward_manager.get("name", None)),
                top_level_fields=colocated,
            )
            if not kept.keys:
                if self.roc_settings.empty_batch == "error":
                    raise RuntimeError(
                        f"GRPO-RoC rejected every group of step {self.global_steps} (algorithm.roc.empty_batch=error)"
                    )
                kept, dropped = _keep_one_group(batch, self.roc_settings.keep_n)
                roc_metrics["roc/empty_batch_kept_one"] = 1.0
                logger.warning("grporoc: every group rejected at step %d; one zero-advantage group", self.global_steps)
            if dropped:
                tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
            metrics.update(roc_metrics)
            batch = kept
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
