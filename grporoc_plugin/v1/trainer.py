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

from grporoc_plugin import compat
from grporoc_plugin.adapter import RoCStage
from grporoc_plugin.config import RoCConfigError
from grporoc_plugin.v1.kv import read_sessions, split_batch

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCTrainerSync", "TRAINER_MODE"]

#: ``trainer.v1.trainer_mode`` value that selects :class:`RoCTrainerSync`.
TRAINER_MODE = "grporoc_sync"
ADAPTER = f"trainer mode {TRAINER_MODE} (RoCTrainerSync)"


@register_trainer(TRAINER_MODE)
class RoCTrainerSync(PPOTrainerSync):
    """verl's synchronous V1 trainer with GRPO-RoC selection in ``_balance_batch``."""

    def __init__(self, config):
        compat.require_supported_verl(ADAPTER)
        self.roc_stage = RoCStage.from_run_config(config, trainer="v1", adapter=ADAPTER)
        custom = config.trainer.v1.sampler.get("custom_sampler", None) or {}
        if str(custom.get("name", "")) == "RoCReplayBuffer":
            raise RoCConfigError(
                f"trainer.v1.trainer_mode={TRAINER_MODE} selects in _balance_batch; also setting "
                "trainer.v1.sampler.custom_sampler=RoCReplayBuffer would select twice: unset the custom sampler"
            )
        if self.roc_stage.settings.empty_batch == "refill":
            logger.warning("grporoc: algorithm.roc.empty_batch=refill is not possible after sampling; using keep_one")
        super().__init__(config)

    def _build_replay_buffer(self):
        # this trainer *is* sync: say so before verl compares trainer_mode with the literal "sync"
        self.trainer_mode = compat.SYNC_TRAINER_MODE
        return super()._build_replay_buffer()

    def _balance_batch(self, batch: KVBatchMeta, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """Drop the sessions RoC rejects (whole sessions, keys cleared), then verl's balancing/padding."""
        if batch.partition_id == "train" and batch.keys:
            colocated = compat.is_colocated_reward(self)
            sessions, layout = read_sessions(batch, self.roc_stage, colocated=colocated)
            selection = self.roc_stage.select(sessions, step=self.global_steps)
            chosen = selection.kept
            if not chosen.size:
                self.roc_stage.on_empty_batch(step=self.global_steps, refills_done=0, can_refill=False)
                chosen = self.roc_stage.keep_one_instead(selection, sessions)
            kept, dropped = split_batch(batch, layout, chosen)
            if dropped:
                tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
            selection.metrics["roc/colocated"] = float(colocated)
            metrics.update(selection.metrics)
            batch = kept
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
