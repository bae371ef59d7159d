"""GRPO-RoC for verl's V1 trainer: a custom replay-buffer sampler that selects rollouts before any model compute.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://grporoc_plugin.v1.sampler
    trainer.v1.sampler.custom_sampler.name=RoCReplayBuffer

``PPOTrainer._step_once`` calls ``sample`` right after rollout + streaming reward and before balance / old-log-prob /
ref / advantage. On the ``train`` partition the sampler reads each session's correctness and penalties from
TransferQueue, keeps or drops whole sessions (``{uid}_{session}_{i}`` keys), clears the dropped keys and returns the
kept ones; ``val`` passes through untouched.

Settings come from ``algorithm.roc`` of the trainer config, reached through ``refill_fn`` (verl passes the trainer's
bound ``_add_prompts_to_generate``), which also gives the batch geometry to validate at construction and the DAPO
``filter_groups`` settings that verl does not pass to custom samplers. Outside a verl trainer, ``sampler_kwargs``
carries ``roc`` and ``rollout_n``. Everything but the TransferQueue mapping is :class:`grporoc_plugin.adapter.RoCStage`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from grporoc_plugin import compat
from grporoc_plugin.adapter import RoCStage, Selection
from grporoc_plugin.config import RoCConfigError, resolve_settings
from grporoc_plugin.v1.kv import read_sessions, split_batch

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCReplayBuffer", "select_kv_batch"]

ADAPTER = "V1 RoC sampler (RoCReplayBuffer)"


def select_kv_batch(
    batch: KVBatchMeta, stage: RoCStage, *, step: int, colocated: bool = False
) -> tuple[KVBatchMeta, list[str], dict[str, float]]:
    """Apply RoC to a TransferQueue batch; return (kept batch, dropped keys, metrics). Dropped keys are not cleared.

    One selection unit per session (its last output carries the reward); a session is kept or dropped whole. When
    every group is rejected the kept batch is empty: the caller applies the empty-batch policy.
    """
    sessions, layout = read_sessions(batch, stage, colocated=colocated)
    selection = stage.select(sessions, step=step)
    kept, dropped = split_batch(batch, layout, selection.kept)
    selection.metrics["roc/trajectory_rows_before"] = float(len(batch.keys))
    selection.metrics["roc/trajectory_rows_kept"] = float(len(kept.keys))
    selection.metrics["roc/colocated"] = float(colocated)
    return kept, dropped, selection.metrics


def keep_one_kv(
    batch: KVBatchMeta, stage: RoCStage, metrics: dict[str, float], *, colocated: bool = False
) -> tuple[KVBatchMeta, list[str]]:
    """The empty-batch fallback on a TransferQueue batch (see :meth:`RoCStage.keep_one_instead`); updates the
    selection ``metrics`` to the kept sessions. Reads the sessions again: a rare path, kept out of the common one."""
    sessions, layout = read_sessions(batch, stage, colocated=colocated)
    chosen = stage.keep_one_instead(Selection(np.empty(0, dtype=np.int64), metrics), sessions)
    kept, dropped = split_batch(batch, layout, chosen)
    metrics["roc/trajectory_rows_kept"] = float(len(kept.keys))
    return kept, dropped


class RoCReplayBuffer(ReplayBuffer):
    """verl ``ReplayBuffer`` that applies GRPO-RoC selection to every train batch (val passes through)."""

    def __init__(
        self,
        trainer_mode: str,
        trainer_config: Any,
        max_off_policy_threshold: int | None,
        max_off_policy_strategy: str,
        sampler_kwargs: Any,
        poll_interval: float = 2.0,
        refill_fn=None,
        **kwargs: Any,
    ):
        compat.require_supported_verl(ADAPTER)
        trainer = compat.trainer_of_refill_fn(refill_fn)
        full_config = getattr(trainer, "config", None)
        sampler_kwargs = sampler_kwargs if sampler_kwargs is not None else {}
        if full_config is not None:
            self.stage = RoCStage.from_run_config(full_config, trainer="v1", adapter=ADAPTER)
            kwargs = {**self._dapo_kwargs(trainer, full_config), **kwargs}
        else:  # built outside a verl trainer (tests, custom loops): settings from sampler_kwargs
            roc = sampler_kwargs.get("roc", None)
            rollout_n = sampler_kwargs.get("rollout_n", None)
            if roc is None or rollout_n is None:
                raise RoCConfigError(
                    "RoCReplayBuffer outside a verl trainer needs trainer.v1.sampler.sampler_kwargs.roc "
                    "(the algorithm.roc settings) and sampler_kwargs.rollout_n"
                )
            self.stage = RoCStage(resolve_settings(roc, rollout_n=rollout_n, trainer="v1"), adapter=ADAPTER)
        self.settings = self.stage.settings
        super().__init__(
            trainer_mode=trainer_mode,
            trainer_config=trainer_config,
            max_off_policy_threshold=max_off_policy_threshold,
            max_off_policy_strategy=max_off_policy_strategy,
            sampler_kwargs=sampler_kwargs,
            poll_interval=poll_interval,
            refill_fn=refill_fn,
            **kwargs,
        )
        self.can_refill = refill_fn is not None and trainer_mode == compat.SYNC_TRAINER_MODE
        if self.settings.empty_batch == "refill" and not self.can_refill:
            raise RoCConfigError(
                "algorithm.roc.empty_batch=refill needs the sync V1 trainer's refill function; use keep_one or error"
            )
        logger.info("grporoc: RoC sampler active: %s", self.settings)

    @staticmethod
    def _dapo_kwargs(trainer: Any, full_config: Any) -> dict[str, Any]:
        """What verl's ``_build_replay_buffer`` gives its own sampler for DAPO ``filter_groups``, but not ours."""
        metric = compat.filter_groups_metric(trainer)
        sampler_config = full_config.trainer.v1.sampler
        refill_failed = bool(sampler_config.get("sync_refill_failed_groups", False))
        if metric is None and not refill_failed:
            return {}
        filter_groups = full_config.algorithm.get("filter_groups", None) or {}
        train_batch_size = int(full_config.data.train_batch_size)
        # PPOTrainer._init_dataloader switches the dataloader to gen_batch_size=1 in exactly these cases
        return {
            "filter_groups_metric": metric,
            "sync_refill_failed_groups": refill_failed,
            "train_batch_size": train_batch_size,
            "gen_batch_size": 1,
            "max_inflight_gen_batches": int(filter_groups.get("max_inflight_gen_batches", 1)) if metric else 1,
        }

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[KVBatchMeta, dict]:
        """Sample like verl's buffer, then keep the RoC selection of the train batch and clear the rest."""
        batch, metrics = super().sample(global_steps=global_steps, partition_id=partition_id, batch_size=batch_size)
        if partition_id == "val" or not batch.keys:
            return batch, metrics
        started = time.perf_counter()
        refill_s = 0.0  # regeneration is rollout time, not the plugin's own overhead
        refills = 0
        while True:
            kept, dropped, roc_metrics = select_kv_batch(batch, self.stage, step=global_steps)
            if kept.keys:
                break
            try:
                action = self.stage.on_empty_batch(step=global_steps, refills_done=refills, can_refill=self.can_refill)
            except RuntimeError:  # empty_batch=error: leave nothing of this batch behind in TransferQueue
                tq.kv_clear(keys=list(batch.keys), partition_id=batch.partition_id)
                raise
            if action == "refill":
                # all groups had equal outcomes: generate a fresh batch with the same weights (sync mode, the
                # rollout replicas are still awake before on_sample_end)
                tq.kv_clear(keys=list(batch.keys), partition_id=batch.partition_id)
                refills += 1
                refill_started = time.perf_counter()
                self.refill_fn(batch_size)
                batch, more = super().sample(
                    global_steps=global_steps, partition_id=partition_id, batch_size=batch_size
                )
                refill_s += time.perf_counter() - refill_started
                metrics.update({k: metrics.get(k, 0) + v for k, v in more.items() if isinstance(v, int | float)})
                continue
            kept, dropped = keep_one_kv(batch, self.stage, roc_metrics)
            break
        roc_metrics["roc/empty_batch_refills"] = float(refills)
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        # The plugin's own cost on the critical path: TQ reads, selection, kv_clear (refill generation excluded).
        roc_metrics["roc/refill_time_s"] = refill_s
        roc_metrics["roc/time_s"] = time.perf_counter() - started - refill_s
        metrics.update(roc_metrics)
        return kept, metrics
