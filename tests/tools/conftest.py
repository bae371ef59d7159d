"""Shared pieces for the tool tests: the offline tokenizer, a scripted LLM server and a real AgentLoopWorker."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

# tests/ is not a package (and site-packages holds a foreign top-level ``tests``): import the helper by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import verl  # noqa: E402
from assets_tokenizer import build_tokenizer, save_tokenizer  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_TOOL_CONFIG = REPO / "example_configs" / "tool_config.yaml"
VERL_TRAINER_CONFIG = Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"


class ScriptedServer:
    """Stands in for verl's ``LLMServerClient``: replies with pre-scripted assistant turns (token ids).

    ``scripts`` maps a marker that occurs in the user prompt to that trajectory's turns, so the trajectories of one
    batch run concurrently, as in verl. Each reply ends with ``<|im_end|>`` (the stop token).
    """

    def __init__(self, tokenizer, scripts: dict[str, list[str]]):
        self.tokenizer = tokenizer
        self.scripts = {key: list(turns) for key, turns in scripts.items()}
        self.prompts: dict[str, list[str]] = {key: [] for key in scripts}
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs) -> TokenOutput:
        prompt = self.tokenizer.decode(prompt_ids)
        key = next(k for k in self.scripts if k in prompt)
        self.prompts[key].append(prompt)
        ids = self.tokenizer.encode(self.scripts[key].pop(0), add_special_tokens=False) + [self.im_end]
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), extra_fields={"global_steps": 7})


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> str:
    """Tokenizer + a tiny Qwen2 config.json (no weights: the agent loop needs the tokenizer and model_type only)."""
    from transformers import Qwen2Config

    path = save_tokenizer(tmp_path_factory.mktemp("tiny_qwen2"))
    Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, architectures=["Qwen2ForCausalLM"],
    ).save_pretrained(path)  # fmt: skip
    return path


def trainer_config(model_dir: str, tool_config_path: str | os.PathLike, **multi_turn):
    """verl's full generated PPO config with the rollout set up for ``grporoc_tool_agent``."""
    cfg = OmegaConf.load(VERL_TRAINER_CONFIG)
    rollout = cfg.actor_rollout_ref.rollout
    cfg.actor_rollout_ref.model.path = model_dir
    rollout.name = "vllm"
    rollout.prompt_length = 1024
    rollout.response_length = multi_turn.pop("response_length", 512)
    rollout.agent.default_agent_loop = "grporoc_tool_agent"
    rollout.multi_turn.tool_config_path = str(tool_config_path)
    rollout.multi_turn.format = "grporoc_hermes"
    rollout.multi_turn.max_tool_response_length = 2048
    for key, value in multi_turn.items():
        rollout.multi_turn[key] = value
    return cfg


def prompts_batch(questions: list[str]) -> DataProto:
    raw = np.empty(len(questions), dtype=object)
    raw[:] = [[{"role": "user", "content": q}] for q in questions]
    reward_model = np.empty(len(questions), dtype=object)
    reward_model[:] = [{"style": "rule", "ground_truth": "4"} for _ in questions]
    extra_info = np.empty(len(questions), dtype=object)
    extra_info[:] = [{"index": i} for i in range(len(questions))]
    return DataProto(
        batch=None,
        non_tensor_batch={
            "raw_prompt": raw,
            "data_source": np.array(["grporoc/test"] * len(questions), dtype=object),
            "reward_model": reward_model,
            "extra_info": extra_info,
            "index": np.arange(len(questions)),
        },
    )
