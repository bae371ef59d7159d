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

from grporoc_plugin.config import (
    REWARD_METRIC,
    RoCConfigError,
    RoCSettings,
    resolve_settings,
    roc_section,
    validate_run_config,
)

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCRayPPOTrainer", "select_dataproto_inplace"]


def _column(batch: DataProto, name: str) -> np.ndarray | None:
    values = batch.non_tensor_batch.get(name, None)
    if values is None:
        return None
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def select_dataproto_inplace(
    batch: DataProto,
    settings: RoCSettings,
    *,
    step: int,
    world_size: int = 1,
    reward_manager: str | None = None,
) -> dict[str, float]:
    """Keep the RoC selection of ``batch`` (whole uid groups stay contiguous in rollout order); return metrics."""
    n = len(batch)
    if settings.correct_key == REWARD_METRIC:
        if "rm_scores" not in batch.batch.keys():
            raise RoCConfigError(
                "algorithm.roc.correct_key=reward needs rm_scores at _balance_batch (streaming reward)"
            )
        correct = batch.batch["rm_scores"].sum(-1).float().cpu().numpy()
    else:
        correct = _column(batch, settings.correct_key)
        if correct is None:
            raise RoCConfigError(
                f"GRPO-RoC classifies trajectories on reward_extra_info[{settings.correct_key!r}] "
                f"(algorithm.roc.correct_key), but the reward manager (reward.reward_manager.name="
                f"{reward_manager or '?'}) did not report it (non_tensor_batch keys: {sorted(batch.non_tensor_batch)})"
            )
    kept, metrics = settings.select(
        list(batch.non_tensor_batch["uid"]),
        correct,
        p_err=_column(batch, "p_err"),
        p_format=_column(batch, "p_format"),
        tool_calls=_column(batch, "tool_calls"),
        step=step,
        world_size=world_size,
    )
    if kept.size == 0:
        if settings.empty_batch == "error":
            raise RuntimeError(f"GRPO-RoC rejected every group of step {step} (algorithm.roc.empty_batch=error)")
        # V0 cannot skip a step either: keep one whole group (zero GRPO advantage), aligned to the world size
        uid0 = batch.non_tensor_batch["uid"][0]
        rows = np.flatnonzero(batch.non_tensor_batch["uid"] == uid0)[: settings.keep_n]
        kept = rows[: max(world_size, len(rows) - len(rows) % world_size)] if len(rows) >= world_size else rows
        metrics["roc/empty_batch_kept_one"] = 1.0
        logger.warning("grporoc: every group rejected at step %d; one zero-advantage group", step)
    if kept.size != n:
        selected = batch.select_idxs(kept)
        batch.batch, batch.non_tensor_batch = selected.batch, selected.non_tensor_batch
    return metrics


class RoCRayPPOTrainer(RayPPOTrainer):
    """verl's V0 ``RayPPOTrainer`` with GRPO-RoC selection at the start of ``_balance_batch``."""

    def __init__(self, config, *args, **kwargs):
        roc = roc_section(config)
        if roc is None:
            raise RoCConfigError("RoCRayPPOTrainer needs algorithm.roc settings")
        self.roc_settings: RoCSettings = resolve_settings(
            roc, rollout_n=config.actor_rollout_ref.rollout.n, trainer="v0"
        )
        for warning in validate_run_config(config, self.roc_settings, trainer="v0"):
            logger.warning("grporoc: %s", warning)
        super().__init__(config, *args, **kwargs)

    def _balance_batch(self, batch: DataProto, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        """Select in place (whole groups, no padding rows), then verl's sequence-length balancing."""
        if self.roc_settings.enable and len(batch):
            dp = self._get_dp_size(self.actor_rollout_wg, "actor")
            metrics.update(
                select_dataproto_inplace(
                    batch,
                    self.roc_settings,
                    step=self.global_steps,
                    world_size=dp,
                    reward_manager=str(self.config.reward.reward_manager.get("name", None)),
                )
            )
        return super()._balance_batch(batch, metrics, logging_prefix=logging_prefix, keep_minibatch=keep_minibatch)
