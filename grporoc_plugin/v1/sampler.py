"""GRPO-RoC for verl's V1 trainer: a custom replay-buffer sampler that selects rollouts before any model compute.

Select it with::

    trainer.v1.sampler.custom_sampler.path=pkg://grporoc_plugin.v1.sampler
    trainer.v1.sampler.custom_sampler.name=RoCReplayBuffer

``PPOTrainer._step_once`` calls ``sample`` right after rollout + streaming reward and before balance / old-log-prob /
ref / advantage. On the ``train`` partition the sampler reads each session's correctness and penalties from
TransferQueue, keeps or drops whole sessions (``{uid}_{session}_{i}`` keys), clears the dropped keys and returns the
kept ones; ``val`` passes through untouched.

Settings come from ``algorithm.roc`` (see :mod:`grporoc_plugin.config`): from ``sampler_kwargs.roc`` when the plugin
yaml wires it, else from the trainer config reached through ``refill_fn`` (verl passes the trainer's bound
``_add_prompts_to_generate``), which also gives the batch geometry to validate at construction and the DAPO
``filter_groups`` settings that verl does not pass to custom samplers.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from grporoc_plugin.config import REWARD_METRIC, RoCConfigError, RoCSettings, resolve_settings, validate_run_config

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCReplayBuffer", "select_kv_batch", "session_key"]


def session_key(key: str) -> tuple[str, str]:
    """``{uid}_{session}_{i}`` -> (uid, ``{uid}_{session}``); verl's uids are uuid4 strings (no ``_``)."""
    parts = key.rsplit("_", 2)
    if len(parts) != 3:
        return key, key
    return parts[0], f"{parts[0]}_{parts[1]}"


def _session_number(session: str) -> int:
    tail = session.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _extra_info(value: Any) -> dict:
    extra = getattr(value, "data", value)
    info = extra.get("reward_extra_info", None) if isinstance(extra, dict) else None
    return info if isinstance(info, dict) else {}


def _number(value: Any, default: float = np.nan) -> float:
    try:
        return float(getattr(value, "item", lambda: value)())
    except (TypeError, ValueError):
        return default


def select_kv_batch(
    batch: KVBatchMeta,
    settings: RoCSettings,
    *,
    step: int,
    reward_manager: str | None = None,
    top_level_fields: bool = False,
) -> tuple[KVBatchMeta, list[str], dict[str, float]]:
    """Apply RoC to a TransferQueue batch; return (kept batch, dropped keys, metrics). Dropped keys are not cleared.

    One selection unit per session (its last output carries the reward); a session is kept or dropped whole.
    ``top_level_fields``: read ``correct_key``/``p_err``/``p_format``/``tool_calls`` as TransferQueue fields, where
    ``PPOTrainer._compute_reward_colocate`` writes the reward extra info, instead of ``extra_fields``.
    """
    keys = list(batch.keys)
    sessions: dict[str, list[int]] = defaultdict(list)
    last_row: dict[str, int] = {}
    for row, key in enumerate(keys):
        _, sess = session_key(key)
        sessions[sess].append(row)
        index = key.rsplit("_", 1)[-1]
        if sess not in last_row or (index.isdigit() and int(index) >= int(keys[last_row[sess]].rsplit("_", 1)[-1])):
            last_row[sess] = row
    # Rollout order within each group is the session index, not TransferQueue's arrival order (async rollouts finish
    # fast trajectories first, which would bias negative_mode=first_k towards short failures).
    group_rank: dict[str, int] = {}
    for sess in sessions:
        group_rank.setdefault(sess.rsplit("_", 1)[0], len(group_rank))
    order = sorted(sessions, key=lambda sess: (group_rank[sess.rsplit("_", 1)[0]], _session_number(sess)))
    rows = [last_row[s] for s in order]
    sel_keys = [keys[r] for r in rows]

    want_reward = settings.correct_key == REWARD_METRIC
    if top_level_fields:
        # PPOTrainer._compute_reward_colocate writes each reward_extra_info key as its own field
        infos = [{} for _ in sel_keys]
        wanted = ["rm_scores"] if want_reward else [settings.correct_key]
        data = {}
        for name in [*wanted, "p_err", "p_format", "tool_calls"]:
            try:
                values = list(
                    tq.kv_batch_get(keys=sel_keys, partition_id=batch.partition_id, select_fields=[name])[name]
                )
            except Exception:  # noqa: BLE001 - a field the reward did not report; a missing correct_key fails below
                continue
            if name == "rm_scores":
                data["rm_scores"] = values
            else:
                for info, value in zip(infos, values, strict=True):
                    info[name] = value
    else:
        names = ["rm_scores", "extra_fields"] if want_reward else ["extra_fields"]
        data = tq.kv_batch_get(keys=sel_keys, partition_id=batch.partition_id, select_fields=names)
        infos = [_extra_info(v) for v in list(data["extra_fields"])]

    if want_reward:
        correct = np.array([_number(r.sum()) for r in list(data["rm_scores"])], dtype=np.float64)
    else:
        missing = [k for k, info in zip(sel_keys, infos, strict=True) if settings.correct_key not in info]
        if missing:
            raise RoCConfigError(
                f"GRPO-RoC classifies trajectories on reward_extra_info[{settings.correct_key!r}] "
                f"(algorithm.roc.correct_key), but the reward manager "
                f"(reward.reward_manager.name={reward_manager or '?'}) did not report it for {len(missing)} of "
                f"{len(sel_keys)} sessions, e.g. {missing[0]} (keys seen: {sorted(infos[0]) if infos else []}). Use "
                "reward.reward_manager.name=grporoc, a compute_score returning a dict with that key, or "
                f"algorithm.roc.correct_key={REWARD_METRIC} for a binary scalar reward"
            )
        correct = np.array([_number(info[settings.correct_key]) for info in infos], dtype=np.float64)

    def column(name: str) -> np.ndarray | None:
        if not any(name in info for info in infos):
            return None
        return np.array([_number(info.get(name), np.nan) for info in infos], dtype=np.float64)

    group_ids = [session_key(k)[0] for k in sel_keys]
    kept_sessions, metrics = settings.select(
        group_ids,
        correct,
        p_err=column("p_err"),
        p_format=column("p_format"),
        tool_calls=column("tool_calls"),
        step=step,
    )
    kept_rows = sorted(r for i in kept_sessions.tolist() for r in sessions[order[i]])
    kept_set = set(kept_rows)
    dropped = [k for r, k in enumerate(keys) if r not in kept_set]
    metrics["roc/trajectory_rows_before"] = float(len(keys))
    metrics["roc/trajectory_rows_kept"] = float(len(kept_rows))
    kept_batch = KVBatchMeta(
        partition_id=batch.partition_id,
        keys=[keys[r] for r in kept_rows],
        tags=[batch.tags[r] for r in kept_rows],
        fields=batch.fields,
        extra_info=batch.extra_info,
    )
    return kept_batch, dropped, metrics


def _keep_one_group(batch: KVBatchMeta, keep_n: int) -> tuple[KVBatchMeta, list[str]]:
    """Fallback for an all-rejected batch: the first group's first ``keep_n`` sessions (zero GRPO advantage)."""
    keys = list(batch.keys)
    first_uid = session_key(keys[0])[0]
    sessions: list[str] = []
    kept_rows = []
    for row, key in enumerate(keys):
        uid, sess = session_key(key)
        if uid != first_uid:
            continue
        if sess not in sessions:
            sessions.append(sess)
        if sessions.index(sess) < keep_n:
            kept_rows.append(row)
    kept_set = set(kept_rows)
    kept = KVBatchMeta(
        partition_id=batch.partition_id,
        keys=[keys[r] for r in kept_rows],
        tags=[batch.tags[r] for r in kept_rows],
        fields=batch.fields,
        extra_info=batch.extra_info,
    )
    return kept, [k for r, k in enumerate(keys) if r not in kept_set]


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
        trainer = getattr(refill_fn, "__self__", None)
        full_config = getattr(trainer, "config", None)
        sampler_kwargs = sampler_kwargs if sampler_kwargs is not None else {}
        roc = sampler_kwargs.get("roc", None)
        if roc is None and full_config is not None:
            roc = full_config.get("algorithm", {}).get("roc", None)
        if roc is None:
            raise RoCConfigError(
                "RoCReplayBuffer found no GRPO-RoC settings: declare algorithm.roc (plugin config grporoc.yaml, or "
                "+algorithm.roc.enable=true on verl's config) or trainer.v1.sampler.sampler_kwargs.roc"
            )
        if full_config is not None:
            rollout_n = full_config.actor_rollout_ref.rollout.n
        else:
            rollout_n = sampler_kwargs.get("rollout_n", None)
            if rollout_n is None:
                raise RoCConfigError("trainer.v1.sampler.sampler_kwargs.rollout_n is required outside a verl trainer")
        self.settings: RoCSettings = resolve_settings(roc, rollout_n=rollout_n, trainer="v1")
        self.reward_manager_name: str | None = None
        if full_config is not None:
            for warning in validate_run_config(full_config, self.settings, trainer="v1"):
                logger.warning("grporoc: %s", warning)
            self.reward_manager_name = str(full_config.reward.reward_manager.get("name", None))
            kwargs = {**self._dapo_kwargs(trainer, full_config), **kwargs}
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
        if self.settings.empty_batch == "refill" and (refill_fn is None or trainer_mode != "sync"):
            raise RoCConfigError(
                "algorithm.roc.empty_batch=refill needs the sync V1 trainer's refill function; use keep_one or error"
            )
        logger.info("grporoc: RoC sampler active: %s", self.settings)

    @staticmethod
    def _dapo_kwargs(trainer: Any, full_config: Any) -> dict[str, Any]:
        """What verl's ``_build_replay_buffer`` gives its own sampler for DAPO ``filter_groups``, but not ours."""
        resolve = getattr(trainer, "_resolve_filter_groups_metric", None)
        metric = resolve() if resolve is not None else None
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
            kept, dropped, roc_metrics = select_kv_batch(
                batch, self.settings, step=global_steps, reward_manager=self.reward_manager_name
            )
            if kept.keys:
                break
            policy = self.settings.empty_batch
            if policy == "error":
                tq.kv_clear(keys=list(batch.keys), partition_id=batch.partition_id)
                raise RuntimeError(
                    f"GRPO-RoC rejected every group of step {global_steps} (algorithm.roc.empty_batch=error); "
                    "enable algorithm.filter_groups (metric acc) to refill, or use empty_batch=refill/keep_one"
                )
            if policy == "refill" and refills < self.settings.max_refills:
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
            # keep_one (or refills exhausted): verl's V1 loop cannot skip a step, so train on one whole group; its
            # GRPO advantage is zero (all outcomes equal), so the policy-gradient term vanishes like a skipped step
            kept, dropped = _keep_one_group(batch, self.settings.keep_n)
            roc_metrics["roc/empty_batch_kept_one"] = 1.0
            logger.warning(
                "grporoc: every group rejected at step %d; training on one zero-advantage group", global_steps
            )
            break
        roc_metrics["roc/empty_batch_refills"] = float(refills)
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=batch.partition_id)
        # The plugin's own cost on the critical path: TQ reads, selection, kv_clear (refill generation excluded).
        roc_metrics["roc/refill_time_s"] = refill_s
        roc_metrics["roc/time_s"] = time.perf_counter() - started - refill_s
        metrics.update(roc_metrics)
        return kept, metrics
