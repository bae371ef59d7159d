"""Fixtures for the grporoc reward-manager tests: verl's real composed trainer config, the offline tiny tokenizer,
and per-session ``DataProto`` built exactly as ``AgentLoopWorker._compute_score`` builds it for the reward loop."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from tensordict import TensorDict

# tests/ is not a package (and site-packages holds a foreign top-level ``tests``): import the helper by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_tokenizer import build_tokenizer, save_tokenizer  # noqa: E402
from verl import DataProto  # noqa: E402

RESPONSE_LENGTH = 64  # actor_rollout_ref.rollout.response_length in these tests (the truncation budget L_max)


@pytest.fixture(scope="session")
def base_config():
    """verl's ``ppo_trainer`` composed by hydra (once per session) with ``reward.reward_manager.name=grporoc``."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(
            config_name="ppo_trainer",
            overrides=[
                "reward.reward_manager.name=grporoc",
                f"actor_rollout_ref.rollout.response_length={RESPONSE_LENGTH}",
                "+reward.reward_kwargs.verify_workers=1",
            ],
        )
    return cfg


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def make_config(base_config):
    """``make_config(**reward_kwargs)``: a copy of the trainer config with extra ``reward.reward_kwargs``."""

    def _make(roc: dict | None = None, **reward_kwargs):
        cfg = OmegaConf.create(OmegaConf.to_container(base_config, resolve=False))
        with open_dict(cfg):
            for key, value in reward_kwargs.items():
                cfg.reward.reward_kwargs[key] = value
            if roc is not None:
                cfg.algorithm.roc = roc
                cfg.actor_rollout_ref.rollout.n = 4  # RoC settings are resolved against the group size
        return cfg

    return _make


@pytest.fixture
def session(tokenizer):
    """The :func:`make_session` helper bound to the test tokenizer."""

    def _session(segments, **kwargs):
        return make_session(tokenizer, segments, **kwargs)

    return _session


def make_session(
    tokenizer,
    segments: list[tuple[str, bool]],
    *,
    ground_truth="4",
    extra_fields: dict | None = None,
    num_turns: int | None = None,
    truncate_to: int | None = None,
    with_response_mask: bool = False,
    with_model_spans: bool = False,
) -> DataProto:
    """One trajectory as the reward loop receives it. ``segments`` are (text, model_generated) response pieces;
    ``truncate_to`` cuts the response to that many tokens (the agent loop's budget cut); ``with_response_mask`` adds
    the batch-path ``response_mask`` (V0 colocated reward), which the streaming path does not carry;
    ``with_model_spans`` adds what ``grporoc_tool_agent`` writes for the streaming path instead,
    ``tool_extra_fields["model_spans"]`` (computed by the agent loop's own helper, before any cut)."""
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    prompt_text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
    response_ids: list[int] = []
    mask: list[int] = []
    for text, is_model in segments:
        ids = tokenizer.encode(text, add_special_tokens=False)
        response_ids += ids
        mask += [int(is_model)] * len(ids)
    extra_fields = dict(extra_fields or {})
    if with_model_spans:
        from grporoc_plugin.tools import model_spans

        extra_fields["model_spans"] = model_spans(mask)
    if truncate_to is not None:
        response_ids, mask = response_ids[:truncate_to], mask[:truncate_to]
    prompts = torch.tensor(prompt_ids, dtype=torch.int64)
    responses = torch.tensor(response_ids, dtype=torch.int64)
    input_ids = torch.cat([prompts, responses])
    attention_mask = torch.ones_like(input_ids)
    tensors = {
        "prompts": prompts.unsqueeze(0),
        "responses": responses.unsqueeze(0),
        "input_ids": input_ids.unsqueeze(0),
        "attention_mask": attention_mask.unsqueeze(0),
        "position_ids": torch.arange(input_ids.numel()).unsqueeze(0),
    }
    if with_response_mask:
        tensors["response_mask"] = torch.tensor(mask, dtype=torch.int64).unsqueeze(0)
    kwargs = {
        "data_source": "math",
        "reward_model": {"ground_truth": ground_truth, "style": "rule"},
        "extra_info": {"index": 0},
        "uid": str(uuid.uuid4()),
        "index": 0,
        "raw_prompt": messages,
    }
    non_tensor = {k: np.array([v] if not isinstance(v, list) else [None], dtype=object) for k, v in kwargs.items()}
    non_tensor["raw_prompt"][0] = messages
    tef = np.empty(1, dtype=object)
    tef[0] = extra_fields
    non_tensor.update(
        {
            "__num_turns__": np.array([2 if num_turns is None else num_turns]),
            "tool_extra_fields": tef,
            "prompt_len": np.array([len(prompt_ids)]),
            "response_len": np.array([len(response_ids)]),
        }
    )
    return DataProto(batch=TensorDict(tensors, batch_size=1), non_tensor_batch=non_tensor)
