"""Pin tests of grporoc_plugin.compat: one per private verl name or behaviour the plugin relies on.

When a verl upgrade changes one of them, the test named after it fails (and docs/verl-internals.md says which
component is affected), instead of a training run failing deep inside a private call.
"""

from __future__ import annotations

import inspect
import re

import pytest

from grporoc_plugin import compat


def _source(obj) -> str:
    return inspect.getsource(obj)


def test_every_component_names_known_internals():
    names = {name for internals in compat.COMPONENT_INTERNALS.values() for name in internals}
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)`", open("docs/verl-internals.md").read(), re.MULTILINE))
    assert names == documented, "docs/verl-internals.md must list exactly the internals compat.py names"


def test_version_guard():
    assert compat.unsupported_verl_message() is None  # the pinned verl 0.9.1
    assert compat.unsupported_verl_message("0.9.3") is None
    for bad in ("0.10.0", "0.9.0", "1.0.0rc1", None):
        message = compat.unsupported_verl_message(bad) if bad else compat.unsupported_verl_message("0.0")
        assert message and "V1 RoC sampler" in message and compat.ALLOW_UNSUPPORTED_ENV in message


def test_version_guard_fails_at_start_up_naming_the_component(monkeypatch):
    monkeypatch.setattr(compat, "verl_version", lambda: "0.10.0")
    expected = r"V0 trainer: grporoc_plugin supports verl >=0.9.1,<0.10 but found verl 0\.10\.0"
    with pytest.raises(RuntimeError, match=expected):
        compat.require_supported_verl("V0 trainer")
    monkeypatch.setenv(compat.ALLOW_UNSUPPORTED_ENV, "1")
    compat.require_supported_verl("V0 trainer")  # warns only


def test_SESSION_KEY():
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    assert 'f"{uid}_{session_id}_{i}"' in _source(AgentLoopWorkerTQ._agent_loop_postprocess)
    assert compat.split_session_key("0c5e-9a_3_1") == ("0c5e-9a", "0c5e-9a_3", 1)
    assert compat.split_session_key("plain") == ("plain", "plain", 0)
    assert compat.session_number("0c5e-9a_12") == 12


def test_RESPONSE_LEN_TAG_and_EXTRA_FIELDS():
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    source = _source(AgentLoopWorkerTQ._agent_loop_postprocess)
    assert f'"{compat.RESPONSE_LEN_TAG}": response_len' in source
    assert f'output.extra_fields["{compat.REWARD_EXTRA_INFO}"]' in source
    assert "field = output.as_dict()" in source  # extra_fields travels as its own field


def test_ROLLOUT_N_FIELD():
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    assert f'prompt.pop("{compat.ROLLOUT_N_FIELD}"' in _source(AgentLoopWorkerTQ._run_prompt)


def test_REFILL_FN_TRAINER():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert "refill_fn=self._add_prompts_to_generate" in _source(PPOTrainer._build_replay_buffer)

    class Trainer:
        def refill(self, n):
            return n

    trainer = Trainer()
    assert compat.trainer_of_refill_fn(trainer.refill) is trainer and compat.trainer_of_refill_fn(None) is None


def test_FILTER_GROUPS_METRIC():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert inspect.signature(PPOTrainer._resolve_filter_groups_metric).parameters.keys() == {"self"}


def test_TRAINER_MODE_SYNC_LITERAL():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    assert f'self.trainer_mode == "{compat.SYNC_TRAINER_MODE}"' in _source(PPOTrainer._build_replay_buffer)


def test_BALANCE_BATCH():
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    for cls in (RayPPOTrainer, PPOTrainer):
        params = list(inspect.signature(getattr(cls, compat.BALANCE_BATCH)).parameters)
        assert params == ["self", "batch", "metrics", "logging_prefix", "keep_minibatch"], cls
    step = _source(PPOTrainer._step_once)
    assert step.index("self._balance_batch(") < step.index("self._compute_old_log_prob(")


def test_COLOCATED_REWARD_FIELDS():
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    source = _source(PPOTrainer._compute_reward_colocate)
    assert f'write_back = {{"{compat.RM_SCORES}": rm_scores}}' in source
    assert 'for key in rm_output.meta_info.get("reward_extra_keys", []):' in source
    assert "write_back[key] = rm_output.non_tensor_batch[key]" in source
    from types import SimpleNamespace

    colocated = SimpleNamespace(reward_loop_manager=SimpleNamespace(reward_loop_worker_handles=None))
    assert compat.is_colocated_reward(colocated)
    assert not compat.is_colocated_reward(
        SimpleNamespace(reward_loop_manager=SimpleNamespace(reward_loop_worker_handles=["h"]))
    )


def test_V0_TASK_RUNNER_GLOBALS():
    base = compat.v0_task_runner_base()
    assert "RayPPOTrainer" in base.run.__globals__


def test_TOOL_AGENT_HOOKS_and_TOOL_EXCEPTION_PREFIX():
    from verl.experimental.agent_loop.tool_agent_loop import AgentData, ToolAgentLoop

    for name in compat.TOOL_AGENT_HOOKS:
        assert inspect.iscoroutinefunction(getattr(ToolAgentLoop, name)), name
    assert list(inspect.signature(ToolAgentLoop._call_tool).parameters) == [
        "self", "tool_call", "tools_kwargs", "agent_data"
    ]  # fmt: skip
    assert f'"{compat.TOOL_EXCEPTION_PREFIX}' in _source(ToolAgentLoop._call_tool)
    init = _source(AgentData.__init__)
    for field in ("self.response_ids", "self.response_mask", "self.assistant_turns", "self.tool_calls",
                  "self.extra_fields"):  # fmt: skip
        assert field in init, field
    assert "agent_data.response_ids = output.token_ids" in _source(ToolAgentLoop._handle_generating_state)


def test_STREAMING_REWARD_FIELDS():
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    source = _source(AgentLoopWorker._compute_score)
    for key in (f'"{compat.TOOL_EXTRA_FIELDS}"', '"response_len"', '"__num_turns__"'):
        assert key in source, key


def test_PRIVATE_REGISTRIES():
    import grporoc_plugin.tools.agent_loop  # noqa: F401 - registers
    import grporoc_plugin.tools.parser  # noqa: F401 - registers

    assert "grporoc_hermes" in compat.registered_tool_parsers()
    assert "grporoc_tool_agent" in compat.registered_agent_loops()
    assert {"vllm", "sglang"} <= compat.registered_rollouts()


def test_AGENT_LOOP_WORKER_HOOKS():
    import inspect as _inspect

    from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopWorker
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    kind = _inspect.Parameter
    # (ray.remote adds a keyword-only ``_ray_trace_ctx`` to actor methods, base classes' included)
    params = [
        p for p in _inspect.signature(AgentLoopWorker._run_agent_loop).parameters.values() if p.name != "_ray_trace_ctx"
    ]
    assert [(p.name, p.kind) for p in params] == [
        ("self", kind.POSITIONAL_OR_KEYWORD),
        ("sampling_params", kind.POSITIONAL_OR_KEYWORD),
        ("trajectory", kind.POSITIONAL_OR_KEYWORD),
        ("agent_name", kind.KEYWORD_ONLY),
        ("trace", kind.KEYWORD_ONLY),
        ("kwargs", kind.VAR_KEYWORD),
    ]
    run_source = _source(AgentLoopWorker._run_agent_loop)
    assert "await agent_loop.run(sampling_params, **kwargs)" in run_source
    assert 'self._agent_loop_postprocess(output, trajectory["validate"], **kwargs)' in run_source
    for worker in (AgentLoopWorker, compat.agent_loop_worker_tq_class()):
        names = list(_inspect.signature(worker._agent_loop_postprocess).parameters)
        assert names[:3] == ["self", "output", "validate"] and names[-1] == "kwargs", worker
    assert compat.agent_loop_worker_tq_class() is AgentLoopWorkerTQ.__ray_actor_class__
    assert "self.agent_loop_workers_class.options(" in _source(AgentLoopManager._init_agent_loop_workers)
    prompt_source = _source(AgentLoopWorkerTQ._run_prompt)
    assert "session_id=i, **prompt" in prompt_source
