"""The conditioning hook: agent-loop workers that put each replica's reward token into its prompt before rollout.

verl's ``AgentLoopWorker._run_agent_loop(sampling_params, trajectory, *, agent_name, trace, **kwargs)`` instantiates
the agent loop and calls ``run(sampling_params, **kwargs)``; every agent loop (``single_turn_agent``,
``tool_agent``, ``grporoc_tool_agent``, third-party ones) builds ``prompt_ids`` from ``kwargs["raw_prompt"]``. The
mixin here replaces ``raw_prompt`` by the conditioned messages (:func:`grporoc_plugin.rc.inject.inject_token`) for
the agent loop only, so the token is inside ``prompt_ids``, which verl stores as ``prompts`` and uses for the
log-prob recomputation too. The replica's token comes from

* V1 (``AgentLoopWorkerTQ``): the per-prompt ``__rc_high__`` row the manager drew (one entry per session) and the
  ``session_id`` verl's ``_run_prompt`` passes to each session;
* V0 (``AgentLoopWorker`` on a repeated ``DataProto``): the ``rc_token`` column the manager wrote per row;
* validation (``trajectory["validate"]``): ``algorithm.rc.eval_token``.

``_agent_loop_postprocess`` then restores the original ``raw_prompt`` (the reward function or reward model judges
the task, not the conditioning) and records ``rc_token`` and ``rc_token_in_prompt`` (the token id really is in
``prompt_ids``) in the output's ``extra_fields``; they reach the reward worker, TransferQueue (V1) and the
``DataProto`` non-tensor columns (V0) like the agent loop's other counters. The uid is never changed.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray
from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

from grporoc_plugin.rc.inject import inject_token
from grporoc_plugin.rc.settings import (
    RC_TOKEN_FIELD,
    RC_TOKEN_IN_PROMPT_FIELD,
    RCSettings,
    check_tokenizer,
    rc_settings_from_config,
)

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

__all__ = ["SCHEDULE_FIELD", "RCAgentLoopWorker", "RCWorkerMixin", "rc_worker_class"]

#: Per-prompt tensor field the V1 manager adds: (n_max,) int, 1 = high token, 0 = low, -1 = no such session.
SCHEDULE_FIELD = "__rc_high__"
#: kwargs key carrying the unconditioned prompt from _run_agent_loop to _agent_loop_postprocess.
_ORIGINAL_PROMPT = "__rc_raw_prompt__"


class RCWorkerMixin:
    """Mix in before a verl agent-loop worker class (see the module docstring)."""

    _rc_state: tuple[RCSettings, dict[str, int]] | None = None

    def _rc(self) -> tuple[RCSettings, dict[str, int]]:
        """(settings, token ids); checked against this worker's tokenizer and chat template once."""
        if self._rc_state is None:
            settings = rc_settings_from_config(self.config)
            ids = check_tokenizer(settings, self.tokenizer) if settings.enable else {}
            self._rc_state = (settings, ids)
        return self._rc_state

    def _rc_token(self, settings: RCSettings, trajectory: dict, kwargs: dict) -> str:
        flags = kwargs.pop(SCHEDULE_FIELD, None)
        assigned = kwargs.pop(RC_TOKEN_FIELD, None)
        if trajectory.get("validate", False):
            return settings.eval_text
        if flags is not None:
            flag = int(flags[int(kwargs["session_id"])])
            if flag < 0:
                raise RuntimeError(f"RC-GRPO: no token drawn for session {kwargs['session_id']} of {kwargs['uid']}")
            return settings.high_token if flag else settings.low_token
        if assigned is not None:
            return str(assigned)
        raise RuntimeError(
            "algorithm.rc.enable=True but the agent-loop manager assigned no reward token: set "
            "actor_rollout_ref.rollout.agent.agent_loop_manager_class to grporoc_plugin.v1.manager."
            "RoCAgentLoopManagerTQ or grporoc_plugin.rc.manager.RCAgentLoopManagerTQ (V1; grporoc_plugin.v0.main "
            "sets grporoc_plugin.rc.manager.RCAgentLoopManager itself)"
        )

    async def _run_agent_loop(
        self,
        sampling_params: dict[str, Any],
        trajectory: dict[str, Any],
        *,
        agent_name: str,
        trace: bool = True,
        **kwargs,
    ):
        settings, _ = self._rc()
        if settings.enable:
            token = self._rc_token(settings, trajectory, kwargs)
            kwargs[RC_TOKEN_FIELD] = token
            if token:
                kwargs[_ORIGINAL_PROMPT] = kwargs["raw_prompt"]
                kwargs["raw_prompt"] = inject_token(kwargs["raw_prompt"], token, settings.position, settings.separator)
        return await super()._run_agent_loop(sampling_params, trajectory, agent_name=agent_name, trace=trace, **kwargs)

    async def _agent_loop_postprocess(self, output, validate, **kwargs):
        original = kwargs.pop(_ORIGINAL_PROMPT, None)
        if original is not None:
            kwargs["raw_prompt"] = original
        if RC_TOKEN_FIELD in kwargs:
            token = str(kwargs[RC_TOKEN_FIELD])
            for out in output if isinstance(output, list) else [output]:
                out.extra_fields[RC_TOKEN_FIELD] = token
                out.extra_fields[RC_TOKEN_IN_PROMPT_FIELD] = self._rc_in_prompt(token, out.prompt_ids)
        return await super()._agent_loop_postprocess(output, validate, **kwargs)

    def _rc_in_prompt(self, token: str, prompt_ids: list[int]) -> bool:
        if not token:
            return False
        settings, ids = self._rc()
        found = ids[token] in prompt_ids if settings.vocab == "special" else token in self.tokenizer.decode(prompt_ids)
        if not found:
            logger.error(
                "RC-GRPO: the token %r is not in the rollout's prompt_ids (left-truncated by rollout.prompt_length, "
                "or dropped by the agent loop's chat template); reported as rc/token_in_prompt_share < 1",
                token,
            )
        return bool(found)


class RCAgentLoopWorker(RCWorkerMixin, AgentLoopWorker):
    """verl's DataProto ``AgentLoopWorker`` (V0 trainer) with the conditioning hook."""


_REMOTE: dict[str, Any] = {}


def rc_worker_class(v1: bool):
    """The Ray actor class of the conditioned worker: ``AgentLoopWorkerTQ``'s (V1) or ``AgentLoopWorker``'s (V0)."""
    name = "v1" if v1 else "v0"
    if name not in _REMOTE:
        if v1:  # imports TransferQueue and verl's V1 agent loop: only when a V1 manager asks
            from grporoc_plugin.rc.worker_tq import RCAgentLoopWorkerTQ as cls
        else:
            cls = RCAgentLoopWorker
        _REMOTE[name] = ray.remote(cls)
    return _REMOTE[name]
