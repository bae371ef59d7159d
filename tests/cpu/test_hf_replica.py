"""The ``hf`` replicas on a real local Ray: server names per role and suffix, weight sync, the reward model's HTTP API.

verl builds the in-worker adapter of a colocated/standalone replica from ``replica.get_ray_class_with_init_args()``
(``CheckpointEngineWorker`` passes the extra kwargs through to ``get_rollout_class(name)(...)``); the tests build it
the same way, in this process, so no torch.distributed group is needed.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl.workers.config import HFModelConfig, RolloutConfig

GREEDY = {"temperature": 0.0, "max_tokens": 4}


def _rollout_config(**kwargs) -> RolloutConfig:
    return RolloutConfig(name="hf", prompt_length=256, response_length=16, tensor_model_parallel_size=1, **kwargs)


def _adapter_for(replica):
    """The adapter exactly as ``CheckpointEngineWorker`` builds it for this replica (extra init kwargs included)."""
    from grporoc_plugin.cpu.replica import HFServerAdapter

    kwargs = dict(replica.get_ray_class_with_init_args().kwargs)
    config, model_config = kwargs.pop("rollout_config"), kwargs.pop("model_config")
    return HFServerAdapter(config=config, model_config=model_config, device_mesh=None, **kwargs)


async def _global_steps(replica, prompt: list[int]):
    out = await replica.server_handle.generate.remote(request_id="probe", prompt_ids=prompt, sampling_params=GREEDY)
    return out.extra_fields["global_steps"]


@pytest.fixture(scope="module")
def policy_replica(local_ray, tiny_assets):
    """A launched policy replica of rank 0, no suffix (what verl's hybrid rollout creates)."""
    from grporoc_plugin.cpu.replica import HFReplica

    replica = HFReplica(0, _rollout_config(), HFModelConfig(path=tiny_assets["model"]), gpus_per_node=1)
    asyncio.run(replica.launch_servers())
    yield replica
    local_ray.kill(replica.server_handle)


def test_weight_sync_reaches_the_suffixed_server(local_ray, tiny_assets, policy_replica):
    """A replica launched with ``name_suffix`` gets its weights; a same-rank replica without the suffix does not."""
    from grporoc_plugin.cpu.replica import HFReplica

    model_config = HFModelConfig(path=tiny_assets["model"])
    judge = HFReplica(
        replica_rank=0, config=_rollout_config(), model_config=model_config, gpus_per_node=1, name_suffix="judge"
    )
    prompt = AutoTokenizer.from_pretrained(tiny_assets["model"]).encode("What is 2 + 3?")
    weights = AutoModelForCausalLM.from_pretrained(tiny_assets["model"], dtype=torch.float32).state_dict()

    async def go():
        await judge.launch_servers()
        try:
            await _adapter_for(judge).update_weights(iter(weights.items()), global_steps=7)
            return await _global_steps(judge, prompt), await _global_steps(policy_replica, prompt)
        finally:
            local_ray.kill(judge.server_handle)

    judge_steps, plain_steps = asyncio.run(go())
    assert judge_steps == 7, "the suffixed replica's server did not receive the weights"
    assert plain_steps is None, "the weights went to the other replica's server"


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except OSError:
        return False


def _rm_score_input(tokenizer, prompt_ids: list[int], response_text: str):
    """One trajectory as ``PPOTrainer._compute_reward_colocate`` hands it to the reward loop: [prompt | response]."""
    import numpy as np
    from tensordict import TensorDict
    from verl.protocol import DataProto

    response = tokenizer.encode(response_text, add_special_tokens=False)
    raw_prompt = np.empty(1, dtype=object)
    raw_prompt[0] = [{"role": "user", "content": "What is 2 + 3?"}]
    batch = TensorDict(
        {
            "prompts": torch.tensor([prompt_ids]),
            "responses": torch.tensor([response]),
            "attention_mask": torch.ones(1, len(prompt_ids) + len(response), dtype=torch.long),
        },
        batch_size=1,
    )
    return DataProto(batch=batch, non_tensor_batch={"raw_prompt": raw_prompt})


def test_reward_replica_scores_through_verls_router_and_reward_loop_worker(
    local_ray, tiny_assets, tiny_reward_model, policy_replica
):
    """A reward replica next to a same-rank policy replica; verl's router + RewardLoopWorker get its scores.

    Ends by killing the reward server's actor (what Ray does to an owner's actors when the trainer ends): its HTTP
    port must close with it.
    """
    from hydra import compose, initialize_config_module
    from transformers import AutoModelForSequenceClassification
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.router.naive_router import launch_router_process

    from grporoc_plugin.cpu import cpu_reward_model_overrides, internals
    from grporoc_plugin.cpu.replica import HFReplica

    internals.route_disrm_engine_to_classify("hf")  # what the backend does in every process under VERL_PLATFORM=cpu
    with initialize_config_module("verl.trainer.config", version_base=None):
        config = compose(
            "ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={tiny_assets['model']}",
                *cpu_reward_model_overrides(tiny_reward_model),
                "reward.reward_model.rollout.dtype=float32",
            ],
        )
    rm = config.reward.reward_model
    reward = HFReplica(0, rm.rollout, HFModelConfig(path=rm.model_path), gpus_per_node=1, is_reward_model=True)
    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt_ids = tokenizer.encode(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False))
    responses = ["The result is 5.\n<answer>\\boxed{5}</answer>", "Let me compute it with Python."]

    async def go():
        await reward.launch_servers()  # the same rank as the policy replica: the names must not collide
        router_address, router = launch_router_process(worker_urls=[f"http://{reward.server_address}"])
        try:
            worker = RewardLoopWorker(config, reward_router_address=router_address)
            scores = [await worker.compute_score(_rm_score_input(tokenizer, prompt_ids, r)) for r in responses]
            return [s["reward_score"] for s in scores], reward.server_address
        finally:
            router.terminate()
            router.join(10)

    scores, address = asyncio.run(go())
    rm_model = AutoModelForSequenceClassification.from_pretrained(rm.model_path, dtype=torch.float32).eval()
    for response, score in zip(responses, scores, strict=True):
        chat = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": response}]
        text = tokenizer.apply_chat_template(chat, tokenize=False)  # verl's RM input: the chat, eos stripped
        with torch.no_grad():
            expected = rm_model(torch.tensor([tokenizer(text)["input_ids"]])).logits[0, 0]
        assert score == pytest.approx(float(expected), abs=1e-5)

    assert _port_open(address)
    local_ray.kill(reward.server_handle)
    deadline = time.monotonic() + 30
    while _port_open(address) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(address), "the reward server's port outlived its actor"


def test_unsupported_replicas_are_refused_before_launch(tiny_assets):
    """A distillation teacher, and a hybrid replica with a suffix its adapters could never look up, fail loudly."""
    from verl.workers.rollout.replica import RolloutMode

    from grporoc_plugin.cpu.replica import HFReplica

    model_config = HFModelConfig(path=tiny_assets["model"])
    teacher = HFReplica(0, _rollout_config(), model_config, gpus_per_node=1, is_teacher_model=True)
    with pytest.raises(NotImplementedError, match="teachers"):
        asyncio.run(teacher.launch_servers())
    hybrid = HFReplica(0, _rollout_config(), model_config, gpus_per_node=1, name_suffix="x")
    hybrid.rollout_mode = RolloutMode.HYBRID
    with pytest.raises(ValueError, match="name_suffix"):
        asyncio.run(hybrid.launch_servers())
