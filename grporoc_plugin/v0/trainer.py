"""GRPO-RoC for verl's legacy V0 trainer (``trainer.use_v1=False``): selection inside ``_balance_batch``.

``RayPPOTrainer.fit`` calls ``self._balance_batch(batch)`` (only with ``trainer.balance_batch=True``) right after
rollout + streaming reward and before the reward tensor is extracted and old-log-prob / ref / advantage run, and
keeps using the same ``DataProto`` object afterwards, so the selection is applied **in place**.

V0 repeats every prompt ``actor_rollout_ref.rollout.n`` times itself, so there ``rollout.n`` is the *oversampled*
size (2G) and ``algorithm.roc.keep_n`` (default ``rollout.n // 2``) the kept G. verl sizes actor mini-batches as
``ppo_mini_batch_size * rollout.n`` rows, so ``ppo_mini_batch_size`` must be set on the kept batch:
``ppo_mini_batch_size = train_batch_size * G / (k * rollout.n)`` gives ``k`` updates per step (validated at start-up).
V0 has no padding rows: whole groups are dropped to keep the row count a multiple of the data-parallel size.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from verl import DataProto
from verl.trainer.ppo.ray_trainer import RayPPOTrainer

from grporoc_plugin import compat
from grporoc_plugin.adapter import CONDITION_FIELDS, PENALTY_COUNTERS, STAT_COUNTERS, RoCStage, Sessions
from grporoc_plugin.config import RoCConfigError
from grporoc_plugin.penalties import ERROR_KINDS

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCRayPPOTrainer", "read_sessions", "select_dataproto_inplace"]

ADAPTER = "V0 trainer (RoCRayPPOTrainer)"


def _rows_of(batch: DataProto, keys: set[str]) -> list[dict]:
    """Per-row dicts of the non-tensor columns in ``keys`` (the agent loop's counters are flattened columns in V0)."""
    present = [k for k in keys if k in batch.non_tensor_batch]
    columns = {k: batch.non_tensor_batch[k] for k in present}
    return [{k: columns[k][i] for k in present} for i in range(len(batch))]


def read_sessions(batch: DataProto, stage: RoCStage) -> Sessions:
    """One session per row: uid, correctness, counters and reward info from the flattened non-tensor columns."""
    key = stage.settings.correct_key
    if stage.reads_reward:
        if "rm_scores" not in batch.batch.keys():
            raise RoCConfigError(
                "algorithm.roc.correct_key=reward needs rm_scores at _balance_batch (streaming reward)"
            )
        correct = batch.batch["rm_scores"].sum(-1).float().cpu().numpy().astype(np.float64)
    else:
        if key not in batch.non_tensor_batch:
            raise stage.missing_correctness_error(["row 0"], len(batch), list(batch.non_tensor_batch))
        correct = np.array([_to_float(v) for v in batch.non_tensor_batch[key]], dtype=np.float64)
    counter_keys = {*PENALTY_COUNTERS, *(f"tool_errors_{k}" for k in ERROR_KINDS), *STAT_COUNTERS, *CONDITION_FIELDS}
    response_len = None
    if "responses" in batch.batch.keys() and "attention_mask" in batch.batch.keys():
        width = batch.batch["responses"].shape[-1]  # verl's response_length: attention over the response columns
        response_len = batch.batch["attention_mask"][:, -width:].sum(-1).float().cpu().numpy().astype(np.float64)
    return Sessions(
        group_ids=list(batch.non_tensor_batch["uid"]),
        correct_values=correct,
        counters=_rows_of(batch, counter_keys),
        reward_info=_rows_of(batch, {"p_err", "p_format", "tool_calls"}),
        response_len=response_len,
    )


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def select_dataproto_inplace(batch: DataProto, stage: RoCStage, *, step: int, world_size: int = 1) -> dict:
    """Keep the RoC selection of ``batch`` (whole uid groups, kept rows in rollout order); return metrics."""
    sessions = read_sessions(batch, stage)
    selection = stage.select(sessions, step=step, world_size=world_size)
    kept = selection.kept
    if kept.size == 0:
        stage.on_empty_batch(step=step, refills_done=0, can_refill=False)
        kept = stage.keep_one_instead(selection, sessions, world_size=world_size)
    if kept.size != len(batch):
        selected = batch.select_idxs(kept)
        batch.batch, batch.non_tensor_batch = selected.batch, selected.non_tensor_batch
    return selection.metrics


class RoCRayPPOTrainer(RayPPOTrainer):
    """verl's V0 ``RayPPOTrainer`` with GRPO-RoC selection at the start of ``_balance_batch``."""

    def __init__(self, config, *args, **kwargs):
        compat.require_supported_verl(ADAPTER)
        self.roc_stage = RoCStage.from_run_config(config, trainer="v0", adapter=ADAPTER)
        super().__init__(config, *args, **kwargs)

    def _balance_batch(self, batch: DataProto, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """Select in place (whole groups, no padding rows), then verl's sequence-length balancing."""
        if len(batch):
            dp = self._get_dp_size(self.actor_rollout_wg, "actor")
            metrics.update(select_dataproto_inplace(batch, self.roc_stage, step=self.global_steps, world_size=dp))
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
