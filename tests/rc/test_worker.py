"""The conditioning hook through verl's real AgentLoopWorker: the token is inside prompt_ids, per replica.

V0: the manager's per-row draw on a repeated ``DataProto`` -> ``RCAgentLoopWorker.generate_sequences`` (verl's own
worker, agent loops and ``_postprocess``). V1: the per-session draw of ``tq_schedule`` on a TensorDict shaped like
verl's, read by ``_run_agent_loop`` with the ``session_id`` verl's ``AgentLoopWorkerTQ._run_prompt`` passes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
import verl
from omegaconf import OmegaConf
from rc_helpers import HIGH, LOW, EchoServer, prompts_batch

from grporoc_plugin.rc.manager import RCManagerMixin, tq_schedule
from grporoc_plugin.rc.schedule import draw_group
from grporoc_plugin.rc.settings import RCSettings, resolve_rc_settings
from grporoc_plugin.rc.worker import SCHEDULE_FIELD, RCAgentLoopWorker

REPO = Path(__file__).resolve().parents[2]
VERL_CONFIG = Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
QUESTIONS = ["What is 1 + 3?", "What is 2 + 2?", "What is 5 - 1?"]


def _config(model_dir: str, agent: str, prompt_length: int = 1024, **rc):
    cfg = OmegaConf.load(VERL_CONFIG)
    cfg.actor_rollout_ref.model.path = model_dir
    rollout = cfg.actor_rollout_ref.rollout
    rollout.name, rollout.prompt_length, rollout.response_length = "vllm", prompt_length, 64
    rollout.agent.default_agent_loop = agent
    if agent == "grporoc_tool_agent":
        rollout.multi_turn.tool_config_path = str(REPO / "example_configs" / "tool_config.yaml")
        rollout.multi_turn.format = "grporoc_hermes"
    cfg.algorithm.rc = {"enable": True, **rc}
    return cfg


def _manager(cfg) -> RCManagerMixin:
    manager = RCManagerMixin()
    manager.rc_settings = resolve_rc_settings(cfg.algorithm.rc)
    return manager


def _generate(cfg, tokenizer, batch):
    server = EchoServer(tokenizer)

    async def run():
        return await RCAgentLoopWorker(cfg, server).generate_sequences(batch)

    return asyncio.run(run()), server


def _prompt_tokens(out, tokenizer) -> list[list[int]]:
    ids = {tokenizer.convert_tokens_to_ids(t): t for t in (HIGH, LOW)}
    return [[ids[t] for t in row.tolist() if t in ids] for row in out.batch["prompts"]]


@pytest.mark.parametrize("agent", ["single_turn_agent", "grporoc_tool_agent"])
@pytest.mark.parametrize("position", ["system_suffix", "user_prefix"])
def test_v0_rows_carry_their_drawn_token_inside_prompt_ids(model_dir, tokenizer, agent, position):
    cfg = _config(model_dir, agent, position=position)
    batch = prompts_batch(QUESTIONS, repeat=4, system="Be brief." if position == "system_suffix" else None)
    original = [list(p) for p in batch.non_tensor_batch["raw_prompt"]]
    _manager(cfg)._rc_prepare_dataproto(batch)
    drawn = list(batch.non_tensor_batch["rc_token"])
    out, server = _generate(cfg, tokenizer, batch)

    in_prompt = _prompt_tokens(out, tokenizer)
    assert in_prompt == [[tok] for tok in drawn]  # exactly one reward token in each prompt: the drawn one
    assert list(out.non_tensor_batch["rc_token"]) == drawn
    assert all(out.non_tensor_batch["rc_token_in_prompt"])
    assert list(out.non_tensor_batch["uid"]) == list(batch.non_tensor_batch["uid"])  # uid unchanged
    for q in range(len(QUESTIONS)):  # exact_split(0.5) over 4 replicas: 2 + 2 in every group, seeded per group
        rows = slice(4 * q, 4 * q + 4)
        assert sorted(drawn[rows]) == sorted([HIGH, HIGH, LOW, LOW])
        expected = draw_group("exact_split", 4, 0.5, seed=0, step=3, key=q)
        assert [t == HIGH for t in drawn[rows]] == expected.tolist()
    # the LLM server saw the token (rollout); prompts = what the actor recomputes log-probs on
    assert all(any(tokenizer.convert_tokens_to_ids(t) in ids for t in (HIGH, LOW)) for ids in server.prompt_ids)
    decoded = tokenizer.decode(out.batch["prompts"][0], skip_special_tokens=False)
    assert (f"system\nBe brief. {drawn[0]}" if position == "system_suffix" else f"user\n{drawn[0]} What is") in decoded
    # reward functions / reward models judge the task: raw_prompt is restored
    assert [list(p) for p in out.non_tensor_batch["raw_prompt"]] == original


@pytest.mark.parametrize(("eval_token", "expected"), [("high", HIGH), ("low", LOW), ("none", "")])
def test_validation_uses_the_evaluation_token(model_dir, tokenizer, eval_token, expected):
    cfg = _config(model_dir, "single_turn_agent", eval_token=eval_token)
    batch = prompts_batch(QUESTIONS, repeat=2)
    batch.meta_info["validate"] = True
    _manager(cfg)._rc_prepare_dataproto(batch)
    assert "rc_token" not in batch.non_tensor_batch  # nothing drawn for validation
    out, _ = _generate(cfg, tokenizer, batch)
    assert list(out.non_tensor_batch["rc_token"]) == [expected] * len(out)
    assert _prompt_tokens(out, tokenizer) == [[expected] if expected else []] * 6


def test_remax_greedy_baseline_rows_get_the_evaluation_token():
    manager = RCManagerMixin()
    manager.rc_settings = RCSettings(enable=True)
    batch = prompts_batch(QUESTIONS[:1], repeat=5)
    batch.non_tensor_batch["__do_sample__"] = np.array([True] * 4 + [False])
    manager._rc_prepare_dataproto(batch)
    tokens = list(batch.non_tensor_batch["rc_token"])
    assert tokens[4] == HIGH and sorted(tokens[:4]) == sorted([HIGH, HIGH, LOW, LOW])


def test_v1_sessions_read_their_entry_of_the_prompts_draw(model_dir, tokenizer):
    """V1: one prompt TensorDict row per uid; session i reads __rc_high__[i] (oversampled n = 6 here)."""
    from tensordict import NonTensorData, NonTensorStack, TensorDict

    from grporoc_plugin.v1.manager import add_rollout_n

    prompts = TensorDict({"index": torch.tensor([0, 1])}, batch_size=[2])
    prompts.set("global_steps", NonTensorData(5))
    prompts.set("raw_prompt", NonTensorStack(*[[{"role": "user", "content": q}] for q in QUESTIONS[:2]]))
    add_rollout_n(prompts, 6)
    cfg = _config(model_dir, "single_turn_agent", p_high=0.5)
    flags = tq_schedule(prompts, resolve_rc_settings(cfg.algorithm.rc), rollout_n=4)
    assert flags.shape == (2, 6) and flags.sum(1).tolist() == [3, 3]
    assert flags[1].tolist() == draw_group("exact_split", 6, 0.5, seed=0, step=5, key=1).astype(int).tolist()

    server = EchoServer(tokenizer)
    trajectory = {"step": 5, "sample_index": 1, "rollout_n": 0, "validate": False}

    async def run():
        worker = RCAgentLoopWorker(cfg, server)
        return await asyncio.gather(
            *(
                worker._run_agent_loop(
                    {"temperature": 1.0},
                    trajectory,
                    agent_name="single_turn_agent",
                    uid="u1",
                    session_id=i,
                    raw_prompt=[{"role": "user", "content": QUESTIONS[1]}],
                    **{SCHEDULE_FIELD: flags[1]},
                )
                for i in range(6)
            )
        )

    outputs = asyncio.run(run())
    high_id = tokenizer.convert_tokens_to_ids(HIGH)
    for i, output in enumerate(outputs):
        assert output.extra_fields["rc_token"] == (HIGH if flags[1, i] else LOW)
        assert (high_id in output.prompt_ids[0].tolist()) == bool(flags[1, i])
        assert output.extra_fields["rc_token_in_prompt"] is True


def test_a_token_lost_to_prompt_truncation_is_reported(model_dir, tokenizer):
    """verl left-truncates prompts longer than rollout.prompt_length: the tool schema pushes the token out."""
    cfg = _config(model_dir, "grporoc_tool_agent", prompt_length=256)
    batch = prompts_batch(QUESTIONS[:1], repeat=2, system="Be brief.")
    _manager(cfg)._rc_prepare_dataproto(batch)
    out, _ = _generate(cfg, tokenizer, batch)
    assert list(out.non_tensor_batch["rc_token_in_prompt"]) == [False, False]  # -> rc/token_in_prompt_share = 0


def test_enabled_without_a_drawing_manager_fails_loudly(model_dir, tokenizer):
    cfg = _config(model_dir, "single_turn_agent")
    with pytest.raises(RuntimeError, match=r"agent_loop_manager_class"):
        _generate(cfg, tokenizer, prompts_batch(QUESTIONS, repeat=2))  # no rc_token column: manager skipped


def test_v0_trainer_adapter_reads_the_tokens_into_rc_metrics(model_dir, tokenizer):
    """The V0 trainer's read_sessions (flattened non-tensor columns) -> RoCStage.select -> rc/* and stratified RoC."""
    from grporoc_plugin.adapter import RoCStage
    from grporoc_plugin.config import resolve_settings
    from grporoc_plugin.v0.trainer import read_sessions

    cfg = _config(model_dir, "grporoc_tool_agent")
    batch = prompts_batch(QUESTIONS, repeat=8)
    _manager(cfg)._rc_prepare_dataproto(batch)
    out, _ = _generate(cfg, tokenizer, batch)
    out.non_tensor_batch["uid"] = batch.non_tensor_batch["uid"]
    # group 0 mixed, group 1 all wrong, group 2 all correct
    out.non_tensor_batch["acc"] = np.array([float((i < 8 and i % 3 == 0) or i >= 16) for i in range(len(out))])
    settings = resolve_settings({"stratify_by": "rc_token", "min_pos": 1, "min_neg": 1}, rollout_n=8, trainer="v0")
    stage = RoCStage(settings, rc=RCSettings(enable=True))
    sessions = read_sessions(out, stage)
    assert [c["rc_token"] for c in sessions.counters] == list(batch.non_tensor_batch["rc_token"])
    kept, metrics = stage.select(sessions, step=1)
    assert metrics["rc/groups_mixed_tokens_share"] == 1.0 and metrics["rc/token_in_prompt_share"] == 1.0
    assert metrics["rc/high_share"] == 0.5 and metrics["rc/zero_var_group_share"] == pytest.approx(2 / 3)
    assert metrics["roc/groups_kept"] == 1 and len(kept) == 4  # RoC keeps G = 4 of the one mixed group
