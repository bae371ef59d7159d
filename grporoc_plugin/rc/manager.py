"""RC-GRPO in verl's agent-loop managers: draw each replica's reward token, run the conditioned workers.

The manager sees every prompt of a step before generation, so the per-group draw happens here, once, seeded by
``(algorithm.rc.seed, global step, dataset index)`` (:mod:`grporoc_plugin.rc.schedule`); the workers
(:mod:`grporoc_plugin.rc.worker`) only place the drawn token.

* V1: ``AgentLoopWorkerTQ._run_prompt`` starts a prompt's ``n`` sessions itself (``n`` = ``__rollout_n__``, set by
  the RoC oversampling manager, else ``rollout.n``), so each prompt gets a ``__rc_high__`` row with one entry per
  session, read by the session of that number (``session_id``).
* V0: the trainer repeats every prompt ``rollout.n`` times (interleaved) before generation, and a replica has no
  index of its own (verl's ``get_trajectory_info`` numbers rows *per worker chunk*, which splits a group across
  workers); the manager numbers the rows of each ``uid`` on the whole batch, before chunking, and writes a
  ``rc_token`` column.

Validation batches draw nothing (workers use ``algorithm.rc.eval_token``). With ``algorithm.rc.enable=False`` every
class here behaves exactly as verl's.

    actor_rollout_ref.rollout.agent.agent_loop_manager_class=grporoc_plugin.rc.manager.RCAgentLoopManagerTQ  # V1
    # the plugin's RoC manager (grporoc.yaml's default) includes the hook; grporoc_plugin.v0.main picks the V0 one
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopManager

from grporoc_plugin import compat
from grporoc_plugin.config import config_get
from grporoc_plugin.rc.schedule import draw_group, row_tokens
from grporoc_plugin.rc.settings import RC_TOKEN_FIELD, RCSettings, check_run_tokenizer, rc_settings_from_config
from grporoc_plugin.rc.worker import SCHEDULE_FIELD, rc_worker_class

__all__ = ["RCAgentLoopManager", "RCAgentLoopManagerTQ", "RCManagerMixin", "tq_schedule"]


def _plain(value: Any) -> Any:
    value = getattr(value, "data", value)  # NonTensorData
    return value.tolist() if hasattr(value, "tolist") else value


def _td_column(prompts: Any, key: str, size: int) -> list | None:
    """A per-prompt column of a TensorDict as a list (tensor, NonTensorStack or one NonTensorData for all)."""
    if key not in prompts.keys():
        return None
    value = _plain(prompts.get(key))
    return list(value) if isinstance(value, list | tuple) else [value] * size


def tq_schedule(prompts: Any, settings: RCSettings, rollout_n: int) -> torch.Tensor:
    """(prompts, n_max) int64: 1 = high token, 0 = low, -1 = no such session; one row per prompt of a V1 batch."""
    size = int(prompts.batch_size[0])
    ns = _td_column(prompts, compat.ROLLOUT_N_FIELD, size) or [rollout_n] * size
    keys = _td_column(prompts, "index", size) or _td_column(prompts, "uid", size) or list(range(size))
    steps = _td_column(prompts, "global_steps", size) or [0] * size
    flags = torch.full((size, max(int(n) for n in ns)), -1, dtype=torch.int64)
    for row, (n, key, step) in enumerate(zip(ns, keys, steps, strict=True)):
        drawn = draw_group(settings.schedule, int(n), settings.p_high, seed=settings.seed, step=int(step), key=key)
        flags[row, : int(n)] = torch.from_numpy(drawn.astype(np.int64))
    return flags


def _is_validation_td(prompts: Any) -> bool:
    if "validate" not in prompts.keys():
        return False
    value = _plain(prompts.get("validate"))
    return bool(value[0] if isinstance(value, list) and value else value)


class RCManagerMixin:
    """Mix in before a verl agent-loop manager class; call the ``_rc_*`` hooks from its methods."""

    rc_settings: RCSettings = RCSettings()

    def _rc_setup(self, config: Any) -> None:
        """Parse ``algorithm.rc`` and check the tokens against the run's tokenizer (before any worker starts)."""
        self.rc_settings = rc_settings_from_config(config)
        check_run_tokenizer(config, self.rc_settings)

    def _rc_use_workers(self, *, v1: bool) -> None:
        """After the base ``__init__``: the conditioned worker class (when RC is enabled)."""
        if self.rc_settings.enable:
            self.agent_loop_workers_class = rc_worker_class(v1)

    def _rc_prepare_tq(self, prompts: Any) -> None:
        """V1: add the per-session token draw of every train prompt (``__rc_high__``)."""
        if self.rc_settings.enable and not _is_validation_td(prompts):
            rollout_n = int(config_get(self.config, "actor_rollout_ref.rollout.n"))
            prompts.set(SCHEDULE_FIELD, tq_schedule(prompts, self.rc_settings, rollout_n))

    def _rc_prepare_dataproto(self, prompts: Any) -> None:
        """V0: the ``rc_token`` column of a repeated train batch (REMAX's greedy baseline rows get the eval token)."""
        s = self.rc_settings
        if not s.enable or prompts.meta_info.get("validate", False):
            return
        batch = prompts.non_tensor_batch
        uids = batch["uid"]
        keys = batch["index"] if "index" in batch else uids
        sampled = np.ones(len(uids), dtype=bool)
        if "__do_sample__" in batch:
            sampled = np.asarray(batch["__do_sample__"], dtype=bool)
        tokens = np.full(len(uids), s.eval_text, dtype=object)
        rows = np.flatnonzero(sampled)
        tokens[rows] = row_tokens(
            [uids[r] for r in rows],
            [keys[r] for r in rows],
            schedule=s.schedule,
            p_high=s.p_high,
            seed=s.seed,
            step=int(prompts.meta_info.get("global_steps", 0)),
            high=s.high_token,
            low=s.low_token,
        )
        batch[RC_TOKEN_FIELD] = tokens


class RCAgentLoopManager(RCManagerMixin, AgentLoopManager):
    """verl's DataProto ``AgentLoopManager`` (V0 trainer) with reward-conditioned rollouts."""

    def __init__(self, config, *args, **kwargs):
        self._rc_setup(config)
        super().__init__(config, *args, **kwargs)
        self._rc_use_workers(v1=False)

    def generate_sequences(self, prompts):
        """Write the rows' tokens, then verl's dispatch (chunking happens after: groups keep their draw)."""
        self._rc_prepare_dataproto(prompts)
        return super().generate_sequences(prompts)


def _tq_manager_base() -> type:
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ

    return AgentLoopManagerTQ


class RCAgentLoopManagerTQ(RCManagerMixin, _tq_manager_base()):
    """verl's ``AgentLoopManagerTQ`` (V1 trainer) with reward-conditioned rollouts, for runs without the RoC manager
    (``grporoc_plugin.v1.manager.RoCAgentLoopManagerTQ`` has the same hooks)."""

    def __init__(self, config, *args, **kwargs):
        compat.require_supported_verl("RC-GRPO manager (RCAgentLoopManagerTQ)")
        self._rc_setup(config)
        super().__init__(config, *args, **kwargs)
        self._rc_use_workers(v1=True)

    def generate_sequences(self, prompts):
        self._rc_prepare_tq(prompts)
        return super().generate_sequences(prompts)
