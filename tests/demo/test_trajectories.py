"""SFT trajectories: parseable by both hermes parsers, tool responses from real sandbox runs, agent-loop token stream.

Uses the demo's own tokenizer (assets.build_tokenizer) and tool config (the plugin's CodeExecTool, local sandbox).
~15 s.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from verl.experimental.agent_loop.tool_parser import ToolParser

from grporoc_plugin.demo import assets
from grporoc_plugin.demo.run import write_tool_config
from grporoc_plugin.demo.trajectories import (
    KINDS,
    MathProblem,
    Renderer,
    ToolRunner,
    buggy_code,
    build_trajectories,
    make_problems,
    sample_kinds,
    truncate_like_agent_loop,
)
from grporoc_plugin.tools.parser import MALFORMED_TOOL_NAME, parse_hermes_text


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return assets.build_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return ToolRunner(str(write_tool_config(tmp_path_factory.mktemp("tools") / "tool_config.yaml")))


@pytest.fixture(scope="module")
def trajectories(tokenizer, runner):
    problems = make_problems(18, seed=3)
    return build_trajectories(problems, tokenizer, runner, mix={"clean": 1, "fix": 1, "no_tool": 1}, seed=5)


def test_mix_and_problem_family(trajectories):
    assert {t.kind for t in trajectories} == set(KINDS)
    assert [t.kind for t in trajectories].count("fix") == 6
    for t in trajectories:
        assert eval(t.problem.expression) == t.problem.answer  # noqa: S307 - generator output: digits and + - *
        assert t.problem.prompt[0]["content"] == f"What is {t.problem.expression}? {assets.INSTRUCTION}"


def test_tool_calls_parse_with_both_hermes_parsers(trajectories, tokenizer, runner):
    verl_hermes = ToolParser.get_tool_parser("hermes", tokenizer)
    plugin_hermes = ToolParser.get_tool_parser("grporoc_hermes", tokenizer)
    for t in trajectories:
        texts = t.assistant_texts
        for text in texts[:-1]:  # every turn but the last calls the tool
            content, calls, unclosed = parse_hermes_text(text)
            assert unclosed == 0 and len(calls) == 1 and calls[0].name == runner.tool_name
            ids = tokenizer.encode(text, add_special_tokens=False)
            for parser in (verl_hermes, plugin_hermes):
                _, parsed = asyncio.run(parser.extract_tool_calls(ids))
                assert [c.name for c in parsed] == [runner.tool_name]
                assert MALFORMED_TOOL_NAME not in {c.name for c in parsed}
                assert t.problem.expression in json.loads(parsed[0].arguments)["code"]
        _, calls, _ = parse_hermes_text(texts[-1])
        assert calls == [] and f"<answer>\\boxed{{{t.problem.answer}}}</answer>" in texts[-1]


def test_tool_responses_come_from_real_execution(trajectories):
    for t in trajectories:
        responses = [m["content"] for m in t.messages if m["role"] == "tool"]
        if t.kind == "clean":
            assert t.tool_statuses == ["ok"] and responses == [str(t.problem.answer)]
        elif t.kind == "fix":
            assert t.tool_statuses[0] != "ok" and t.tool_statuses[1] == "ok"
            assert responses[0].startswith("Error:") and "Error" in responses[0].split("\n", 1)[1]
            assert responses[1] == str(t.problem.answer)
        else:
            assert t.tool_statuses == [] and responses == []


def test_buggy_code_really_fails(runner):
    rng = random.Random(0)
    codes = [buggy_code("3 * 4 - 5", rng) for _ in range(12)]
    assert len(set(codes)) > 2
    assert all(status != "ok" for _, status in runner.call_many(codes))


def test_tokens_match_the_agent_loop_stream(trajectories, tokenizer, runner):
    eos = tokenizer.eos_token_id
    for t in trajectories:
        prompt = tokenizer.apply_chat_template(
            list(t.problem.prompt), tools=runner.schemas, add_generation_prompt=True, tokenize=False
        )
        assert tokenizer.decode(t.input_ids[: t.prompt_length]) == prompt
        assert len(t.loss_mask) == len(t.input_ids) and not any(t.loss_mask[: t.prompt_length])
        trained = [i for i, m in zip(t.input_ids, t.loss_mask, strict=True) if m]
        encode = tokenizer.encode
        expected = [tok for text in t.assistant_texts for tok in encode(text, add_special_tokens=False) + [eos]]
        assert trained == expected  # loss exactly on generated tokens + EOS, never on tool output
        full = tokenizer.decode(t.input_ids)
        for m in t.messages[len(t.problem.prompt) :]:
            wrapped = m["content"] if m["role"] == "assistant" else f"<tool_response>\n{m['content']}\n</tool_response>"
            assert wrapped in full
        assert t.input_ids[-1] == eos


def test_renderer_rejects_unknown_roles_and_bad_mix(tokenizer, runner):
    renderer = Renderer(tokenizer, runner.schemas)
    problem = MathProblem(({"role": "user", "content": "What is 1 + 1?"},), 2, "1 + 1")
    with pytest.raises(ValueError, match="unexpected role"):
        renderer.render([*problem.prompt, {"role": "assistant", "content": "x"}, {"role": "user", "content": "again"}])
    with pytest.raises(ValueError, match="bad trajectory mix"):
        sample_kinds(4, {"clean": 1, "typo": 1}, random.Random(0))


def test_truncation_matches_agent_loop_semantics():
    text = "a" * 10 + "b" * 10
    assert truncate_like_agent_loop(text, 100) == text
    assert truncate_like_agent_loop(text, 10) == "aaaaa...(truncated)...bbbbb"
    assert truncate_like_agent_loop(text, 10, "left") == "(truncated)..." + "b" * 10
    assert truncate_like_agent_loop(text, 10, "right") == "a" * 10 + "...(truncated)"
