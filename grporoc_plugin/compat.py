"""Every private verl name or behaviour the plugin relies on, in one place, each pinned by ``tests/test_compat.py``.

verl's public extension points (registries, ``BaseTool``, ``RewardManagerBase``, the custom sampler and
``agent_loop_manager_class`` settings) carry most of the plugin; what they do not reach goes through this module, so
that when verl changes one of these (0.10 removes ``AgentLoopBase.apply_chat_template``, for instance) exactly one pin
test names it. docs/verl-internals.md lists them with the component each one serves. The CPU backend's own fixes of
verl internals live in :mod:`grporoc_plugin.cpu.internals` (pinned by ``tests/cpu/test_internals.py``).

Import-light: nothing from verl is imported at module level.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- version guard

#: verl versions this plugin is built and tested against (inclusive lower bound, exclusive upper bound).
SUPPORTED_VERL = (">=0.9.1", "<0.10")
#: Set to 1 to run anyway on an unsupported verl (every private use below may then fail deep inside verl).
ALLOW_UNSUPPORTED_ENV = "GRPOROC_ALLOW_UNSUPPORTED_VERL"

#: component -> the private verl behaviours (names below) it needs; what an unsupported verl puts at risk.
COMPONENT_INTERNALS: dict[str, tuple[str, ...]] = {
    "V1 RoC sampler (RoCReplayBuffer)": ("SESSION_KEY", "REFILL_FN_TRAINER", "FILTER_GROUPS_METRIC"),
    "oversampling manager (RoCAgentLoopManagerTQ)": ("ROLLOUT_N_FIELD",),
    "trainer mode grporoc_sync (RoCTrainerSync)": (
        "SESSION_KEY",
        "BALANCE_BATCH",
        "TRAINER_MODE_SYNC_LITERAL",
        "COLOCATED_REWARD_FIELDS",
    ),
    "V0 trainer (grporoc_plugin.v0.main)": ("BALANCE_BATCH", "V0_TASK_RUNNER_GLOBALS"),
    "agent loop grporoc_tool_agent": ("TOOL_AGENT_HOOKS", "TOOL_EXCEPTION_PREFIX"),
    "reward manager grporoc (streaming inputs)": ("STREAMING_REWARD_FIELDS",),
    "doctor": ("PRIVATE_REGISTRIES",),
    "RC-GRPO conditioning hook (grporoc_plugin.rc)": ("AGENT_LOOP_WORKER_HOOKS", "ROLLOUT_N_FIELD"),
}


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:  # a pre-release / local suffix ends the numeric part
            break
    return tuple(parts)


def verl_version() -> str | None:
    """The installed verl distribution's version, or None when verl is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("verl")
    except PackageNotFoundError:
        return None


def unsupported_verl_message(installed: str | None = None) -> str | None:
    """None when the installed verl is supported, else a message naming the version and the affected components."""
    installed = verl_version() if installed is None else installed
    low, high = (_version_tuple(bound.lstrip("<>=")) for bound in SUPPORTED_VERL)
    if installed is not None and low <= _version_tuple(installed) < high:
        return None
    affected = "; ".join(f"{component} ({', '.join(names)})" for component, names in COMPONENT_INTERNALS.items())
    return (
        f"grporoc_plugin supports verl {','.join(SUPPORTED_VERL)} but found verl {installed or 'not installed'}. "
        f"Components that rely on private verl behaviour and may break: {affected}. The selection engine, the "
        f"grpo_roc estimator, the sandbox and the penalties do not depend on verl internals. Install a supported "
        f"verl, or set {ALLOW_UNSUPPORTED_ENV}=1 to start anyway."
    )


def require_supported_verl(component: str) -> None:
    """Start-up guard of a component: fail clearly on an unsupported verl (warn once with the override set)."""
    message = unsupported_verl_message()
    if message is None:
        return
    if os.environ.get(ALLOW_UNSUPPORTED_ENV, "") == "1":
        logger.warning("%s (%s=1: starting %s anyway)", message, ALLOW_UNSUPPORTED_ENV, component)
        return
    raise RuntimeError(f"{component}: {message}")


# ----------------------------------------------------------------------------------------- V1 TransferQueue keys

#: AgentLoopWorkerTQ._agent_loop_postprocess keys every output f"{uid}_{session_id}_{index}" (uid: a uuid4, no "_").
SESSION_KEY = "{uid}_{session_id}_{index}"


def split_session_key(key: str) -> tuple[str, str, int]:
    """``{uid}_{session}_{index}`` -> (uid, ``{uid}_{session}``, index); a key of another shape is its own session."""
    parts = key.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return key, key, 0
    return parts[0], f"{parts[0]}_{parts[1]}", int(parts[2])


def session_number(session: str) -> int:
    """The ``session_id`` of ``{uid}_{session_id}`` (rollout order within a group)."""
    tail = session.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else 0


#: AgentLoopWorkerTQ._run_prompt pops this per-prompt field as the number of sessions (default rollout.n).
ROLLOUT_N_FIELD = "__rollout_n__"


# ------------------------------------------------------------------------------------------ V1 trainer internals


def trainer_of_refill_fn(refill_fn: Any) -> Any:
    """REFILL_FN_TRAINER: ``PPOTrainer._build_replay_buffer`` passes the trainer's *bound* ``_add_prompts_to_generate``
    as ``refill_fn``; its ``__self__`` is the trainer (the sampler reads the full config and DAPO settings there)."""
    return getattr(refill_fn, "__self__", None)


def filter_groups_metric(trainer: Any) -> str | None:
    """FILTER_GROUPS_METRIC: ``PPOTrainer._resolve_filter_groups_metric()``, DAPO's metric (None when off)."""
    resolve = getattr(trainer, "_resolve_filter_groups_metric", None)
    return resolve() if resolve is not None else None


#: TRAINER_MODE_SYNC_LITERAL: verl compares ``self.trainer_mode`` with the literal "sync" (replay buffer class,
#: dataloader gen_batch_size, checkpoints, prompt persistence); a sync trainer registered under another name must
#: present itself as "sync" before ``_build_replay_buffer`` runs.
SYNC_TRAINER_MODE = "sync"

#: BALANCE_BATCH: ``_balance_batch(batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False)`` runs after
#: rollout + reward and before old-log-prob in both V0 (``RayPPOTrainer``) and V1 (``PPOTrainer``).
BALANCE_BATCH = "_balance_batch"


def is_colocated_reward(trainer: Any) -> bool:
    """COLOCATED_REWARD_FIELDS: with a colocated reward model the reward loop has no worker handles (no streaming
    reward) and ``PPOTrainer._compute_reward_colocate`` writes ``rm_scores`` and each reward_extra_info key as its own
    TransferQueue field after sampling, instead of ``extra_fields["reward_extra_info"]``."""
    manager = getattr(trainer, "reward_loop_manager", None)
    return manager is not None and getattr(manager, "reward_loop_worker_handles", None) is None


#: TransferQueue field holding each output's agent-loop ``extra_fields`` (streaming reward info nested inside).
EXTRA_FIELDS = "extra_fields"
#: Key of the streaming reward's extra info inside ``extra_fields`` (AgentLoopWorker._agent_loop_postprocess).
REWARD_EXTRA_INFO = "reward_extra_info"
#: Field with the per-token reward (colocated and streaming).
RM_SCORES = "rm_scores"
#: Tag of every output with its response length in tokens (model + tool tokens).
RESPONSE_LEN_TAG = "response_len"


# ----------------------------------------------------------------------------------------------------- V0 trainer


def v0_task_runner_base() -> type:
    """V0_TASK_RUNNER_GLOBALS: verl's V0 ``TaskRunner.run`` builds ``RayPPOTrainer`` resolved from its module globals
    (the actor class behind the Ray remote wrapper)."""
    from verl.trainer import main_ppo_v0

    base = main_ppo_v0.TaskRunner.__ray_actor_class__
    if "RayPPOTrainer" not in base.run.__code__.co_names:
        raise RuntimeError("verl.trainer.main_ppo_v0.TaskRunner.run no longer builds RayPPOTrainer; update grporoc")
    return base


def run_v0_with_trainer(task_runner: Any, config: Any, trainer_cls: type) -> Any:
    """Call verl's V0 ``TaskRunner.run`` with ``trainer_cls`` bound as its ``RayPPOTrainer``.

    Ray may ship the task runner class by value (cloudpickle copies base classes and their globals), so the run
    function is taken from verl's module as imported in the calling actor and its globals rebound there; that actor
    exists only to run this task, so nothing else sees the rebinding.
    """
    base_run = v0_task_runner_base().run
    base_run.__globals__["RayPPOTrainer"] = trainer_cls
    return base_run(task_runner, config)


# ----------------------------------------------------------------------------------------------------- agent loop

#: TOOL_AGENT_HOOKS: ToolAgentLoop's private per-state methods grporoc_tool_agent wraps, and the AgentData fields
#: it reads there (response_ids = the current turn's tokens, assistant_turns, tool_calls, response_mask).
TOOL_AGENT_HOOKS = ("_handle_generating_state", "_handle_processing_tools_state", "_call_tool")
#: TOOL_EXCEPTION_PREFIX: verl's ``_call_tool`` answers an exception raised inside a tool with this text.
TOOL_EXCEPTION_PREFIX = "Error executing tool"
#: STREAMING_REWARD_FIELDS: ``AgentLoopWorker._compute_score`` hands the reward worker the agent loop's
#: ``extra_fields`` under this non-tensor key (plus ``response_len`` and ``__num_turns__``).
TOOL_EXTRA_FIELDS = "tool_extra_fields"


# ------------------------------------------------------------------------------------- RC-GRPO conditioning hook

#: AGENT_LOOP_WORKER_HOOKS: ``AgentLoopWorker._run_agent_loop(sampling_params, trajectory, *, agent_name, trace,
#: **kwargs)`` builds the agent loop and calls ``run(sampling_params, **kwargs)`` with the prompt's fields
#: (``raw_prompt`` among them), then ``_agent_loop_postprocess(output, validate, **kwargs)`` (V0's worker and
#: ``AgentLoopWorkerTQ``); managers start ``self.agent_loop_workers_class`` in ``_init_agent_loop_workers``; V1's
#: ``_run_prompt`` passes every prompt field and ``session_id`` to each session.
AGENT_LOOP_WORKER_HOOKS = ("_run_agent_loop", "_agent_loop_postprocess", "agent_loop_workers_class")


def agent_loop_worker_tq_class() -> type:
    """AGENT_LOOP_WORKER_HOOKS: the class behind verl's ``@ray.remote`` ``AgentLoopWorkerTQ`` (to subclass it)."""
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    return AgentLoopWorkerTQ.__ray_actor_class__


# --------------------------------------------------------------------------------------------- private registries


def registered_tool_parsers() -> set[str]:
    """PRIVATE_REGISTRIES: names in ``ToolParser._registry`` (no public getter lists them)."""
    from verl.experimental.agent_loop.tool_parser import ToolParser

    return set(ToolParser._registry)


def registered_agent_loops() -> set[str]:
    """PRIVATE_REGISTRIES: names in ``verl.experimental.agent_loop.agent_loop._agent_loop_registry``."""
    from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

    return set(_agent_loop_registry)


def registered_rollouts() -> set[str]:
    """PRIVATE_REGISTRIES: names in ``RolloutReplicaRegistry._registry``."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return set(RolloutReplicaRegistry._registry)
