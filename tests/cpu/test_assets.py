"""Tiny offline assets: deterministic fast build, Qwen/Hermes chat template, verl dataset format, ToolAgentLoop fit."""

from __future__ import annotations

import filecmp
import json

import pandas as pd
import pytest
from transformers import AutoTokenizer

from grporoc_plugin.demo import assets


@pytest.fixture(scope="module")
def tokenizer(tiny_assets):
    return AutoTokenizer.from_pretrained(tiny_assets["model"])


def test_build_is_fast_and_deterministic(tiny_assets, tmp_path):
    assert float(tiny_assets["build_s"]) < 30
    again = assets.build_tokenizer(str(tmp_path / "tok"))
    assert filecmp.cmp(tmp_path / "tok" / "tokenizer.json", f"{tiny_assets['model']}/tokenizer.json", shallow=False)
    assert 1000 <= len(again) <= 2048
    model = assets.build_model(str(tmp_path / "tok"), again)
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tiny_assets["model"])
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), saved.state_dict().values(), strict=True))
    assert model.config.tie_word_embeddings and model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 500_000
    train, _ = assets.build_dataset(str(tmp_path / "data"))
    assert pd.read_parquet(train).equals(pd.read_parquet(tiny_assets["train"]))


def test_special_tokens_and_compact_tool_text(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for token in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", *assets.TOOL_TAGS):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    call = '{"name": "python_code_with_standard_io", "arguments": {"code": "print(1 + 2)", "input": ""}}'
    assert len(tokenizer.encode(call, add_special_tokens=False)) < len(call) / 2.5  # BPE learned the tool-call JSON


def test_chat_template_renders_qwen_hermes_format(tokenizer):
    conversation = assets.tool_trajectory(assets.Problem("2 + 3", 5))
    conversation[1]["tool_calls"][0]["function"]["arguments"] = '{"code": "print(2 + 3)", "input": ""}'  # string form
    text = tokenizer.apply_chat_template(conversation, tools=[assets.TOOL_SCHEMA], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(assets.TOOL_SCHEMA) + "\n</tools>" in text
    assert (
        "<|im_start|>assistant\nLet me compute it with Python.\n<tool_call>\n"
        '{"name": "python_code_with_standard_io", "arguments": {"code": "print(2 + 3)", "input": ""}}\n'
        "</tool_call><|im_end|>\n"
    ) in text
    assert "<|im_start|>user\n<tool_response>\n5\n\n</tool_response><|im_end|>\n" in text
    assert text.endswith("<answer>\\boxed{5}</answer><|im_end|>\n")
    prompt = tokenizer.apply_chat_template(conversation[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == f"<|im_start|>user\n{conversation[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
    with_system = [{"role": "system", "content": "Be brief."}, conversation[0]]
    text = tokenizer.apply_chat_template(with_system, tools=[assets.TOOL_SCHEMA], tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n") and text.count("<|im_start|>system") == 1


def test_dataset_is_verl_rl_format(tiny_assets, tokenizer):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    df = pd.read_parquet(tiny_assets["train"])
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(df.columns)
    for _, row in df.head(8).iterrows():
        question = row["prompt"][0]["content"]
        assert row["prompt"][0]["role"] == "user" and "<answer>\\boxed{N}</answer>" in question
        expression = question.removeprefix("What is ").split("?")[0]
        assert str(eval(expression)) == row["reward_model"]["ground_truth"]  # noqa: S307 - our own digits/+-*
    assert list(df["extra_info"].map(lambda e: e["index"])) == list(range(len(df)))
    dataset = RLHFDataset(
        data_files=[tiny_assets["train"]],
        tokenizer=tokenizer,
        config=OmegaConf.create({"max_prompt_length": 64, "filter_overlong_prompts": False}),
    )
    assert len(dataset) == len(df) and dataset[0]["raw_prompt"][0]["role"] == "user"


async def test_tool_agent_loop_with_hermes_parser_on_tiny_tokenizer(tiny_assets, tokenizer):
    """verl's real ToolAgentLoop + HermesToolParser + Qwen Continuous-Token builder on our template (scripted LLM)."""
    from hydra import compose, initialize_config_module
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
    from verl.tools.base_tool import BaseTool
    from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from verl.workers.rollout.replica import TokenOutput

    calls = []

    class EchoPython(BaseTool):
        async def execute(self, instance_id, parameters, **kwargs):
            calls.append(parameters)
            return ToolResponse(text="5\n"), 0.0, {}

    turns = [
        'Let me compute.\n<tool_call>\n{"name": "python_code_with_standard_io", "arguments": '
        '{"code": "print(2 + 3)", "input": ""}}\n</tool_call><|im_end|>',
        "The result is 5.\n<answer>\\boxed{5}</answer><|im_end|>",
    ]

    class ScriptedLLM:  # stands in for the LLM server: returns the scripted assistant turns as token ids
        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            return TokenOutput(token_ids=tokenizer.encode(turns[len(calls)], add_special_tokens=False))

    with initialize_config_module("verl.trainer.config", version_base=None):
        config = compose(
            "ppo_trainer",
            overrides=[
                "actor_rollout_ref.rollout.multi_turn.format=hermes",
                "actor_rollout_ref.rollout.prompt_length=512",
                "actor_rollout_ref.rollout.response_length=256",
                "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
            ],
        )
    tool = EchoPython({}, OpenAIFunctionToolSchema.model_validate(assets.TOOL_SCHEMA))
    loop = ToolAgentLoop(
        trainer_config=DictConfigWrap(config),
        server_manager=ScriptedLLM(),
        tokenizer=tokenizer,
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        hf_model_type="qwen2",
        tools=ToolListWrap([tool]),
    )
    question = assets.Problem("2 + 3", 5).question
    out = await loop.run(sampling_params={"temperature": 1.0}, raw_prompt=[{"role": "user", "content": question}])

    assert calls == [{"code": "print(2 + 3)", "input": ""}], "Hermes parser must extract the tool call"
    expected = tokenizer.apply_chat_template(
        [
            {"role": "user", "content": question},
            {
                "role": "assistant",
                "content": "Let me compute.",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": assets.TOOL_NAME, "arguments": {"code": "print(2 + 3)", "input": ""}},
                    }
                ],
            },
            {"role": "tool", "content": "5\n"},
            {"role": "assistant", "content": "The result is 5.\n<answer>\\boxed{5}</answer>"},
        ],
        tools=[assets.TOOL_SCHEMA],
        tokenize=False,
    )
    assert tokenizer.decode(out.prompt_ids + out.response_ids) + "\n" == expected
    generated = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in turns)
    assert sum(out.response_mask) == generated, "only model tokens are trained on"
    assert out.num_turns == 4  # user + 2 assistant + 1 tool
