"""Synthetic tool-using math trajectories for the demo's SFT warm-start (the recipe's "non-reasoning SFT first").

Each trajectory solves one arithmetic problem from the demo data's generator family in one of three ways:

* ``clean``: one ``<tool_call>`` running correct code, the real tool response, then the boxed answer;
* ``fix``: a first call whose code fails (NameError, SyntaxError, ZeroDivisionError, TypeError), the real error
  response, a corrected call, its response, then the answer (the tool-error pattern RoC learns to avoid);
* ``no_tool``: the boxed answer straight away.

Tool responses are never written by hand: every call is executed by the demo's real code tool
(``grporoc_plugin.tools.code_tool.CodeExecTool`` from the tool_config yaml, running in the plugin sandbox) and
shortened exactly as verl's agent loop does (``max_tool_response_length``, middle truncation).

Token ids and the loss mask are built with verl's own Continuous Token builder, the component ``ToolAgentLoop`` uses
at rollout time, so SFT sees exactly the token stream the policy later generates into: prompt (chat template with
the tool schema), assistant tokens + EOS (loss), tool-response context + generation prompt (no loss).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS: tuple[str, ...] = ("clean", "fix", "no_tool")
#: Default share of each kind in the SFT set.
DEFAULT_MIX: Mapping[str, float] = {"clean": 0.5, "fix": 0.3, "no_tool": 0.2}


@dataclass(frozen=True)
class MathProblem:
    """One problem: the chat prompt the trainer will see, its integer answer and code that computes it."""

    prompt: tuple[Mapping[str, str], ...]
    """Chat messages (system/user) exactly as in the training parquet's ``prompt`` column."""
    answer: int
    """Ground truth."""
    expression: str
    """A Python expression that evaluates to ``answer``."""


@dataclass
class Trajectory:
    """A rendered multi-turn trajectory."""

    kind: str
    """One of :data:`KINDS`."""
    problem: MathProblem
    """The problem it solves."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Prompt + assistant/tool messages (assistant ``content`` is the raw generated text incl. tool calls)."""
    tool_statuses: list[str] = field(default_factory=list)
    """Sandbox status of each executed call ("ok", "exec_error", ...)."""
    input_ids: list[int] = field(default_factory=list)
    """Prompt + response token ids, as the agent loop would build them."""
    loss_mask: list[int] = field(default_factory=list)
    """1 on model-generated (assistant) tokens, 0 on prompt and tool-response tokens."""
    prompt_length: int = 0
    """Number of prompt tokens at the start of ``input_ids``."""

    @property
    def assistant_texts(self) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == "assistant"]


def make_problems(n: int, seed: int) -> list[MathProblem]:
    """``n`` problems from the demo dataset's generator (``assets.make_problem``), prompts as in its parquet."""
    from grporoc_plugin.demo import assets

    rng = random.Random(seed)
    problems = []
    for _ in range(n):
        p = assets.make_problem(rng)
        problems.append(MathProblem(({"role": "user", "content": p.question},), p.answer, p.expression))
    return problems


# ------------------------------------------------------------------------------------------------ text


#: Short lead-ins of the assistant turns (the demo tokenizer's BPE corpus uses the same phrasing).
FIRST_CALL_LEAD = "Let me compute it with Python."
RETRY_CALL_LEAD = "The code failed. Let me fix it."


def tool_call_text(tool_name: str, code: str, lead: str = FIRST_CALL_LEAD) -> str:
    """An assistant turn with one hermes tool call, as the chat template renders it (``grporoc_hermes`` format)."""
    payload = json.dumps({"name": tool_name, "arguments": {"code": code, "input": ""}}, ensure_ascii=False)
    return f"{lead}\n<tool_call>\n{payload}\n</tool_call>"


def answer_text(answer: int) -> str:
    """The final turn: the answer in ``<answer>`` tags and ``\\boxed{}`` (what the reward worker verifies)."""
    return f"The result is {answer}.\n<answer>\\boxed{{{answer}}}</answer>"


def correct_code(expression: str) -> str:
    return f"print({expression})"


def buggy_code(expression: str, rng: random.Random) -> str:
    """Code for ``expression`` that fails when executed, in one of several realistic ways."""
    variants = (
        f"prnt({expression})",  # NameError
        f"print({expression}",  # SyntaxError (unclosed paren)
        f"print({expression} / 0)",  # ZeroDivisionError
        f"print({expression} + '1')",  # TypeError
        f"print(result)\nresult = {expression}",  # NameError (used before assignment)
    )
    return rng.choice(variants)


def truncate_like_agent_loop(text: str, max_chars: int, side: str = "middle") -> str:
    """Shorten a tool response the way verl's ToolAgentLoop does (``multi_turn.max_tool_response_length``)."""
    if not text or len(text) <= max_chars:
        return text
    if side == "left":
        return "(truncated)..." + text[-max_chars:]
    if side == "right":
        return text[:max_chars] + "...(truncated)"
    half = max_chars // 2
    return text[:half] + "...(truncated)..." + text[-half:]


# ------------------------------------------------------------------------------------------------ tools


class ToolRunner:
    """Executes tool calls with the real tools of a tool_config yaml (verl's loader, the plugin's sandbox)."""

    def __init__(self, tool_config_path: str, max_tool_response_length: int = 256):
        from verl.tools.tool_registry import initialize_tools_from_config

        tools = initialize_tools_from_config(tool_config_path)
        if not tools:
            raise ValueError(f"{tool_config_path}: no tools declared")
        self.tools = {tool.name: tool for tool in tools}
        self.tool_name = tools[0].name
        # the schema list the agent loop hands to the chat template
        self.schemas = [t.tool_schema.model_dump(exclude_unset=True, exclude_none=True) for t in tools]
        self.max_tool_response_length = max_tool_response_length

    async def acall(self, code: str) -> tuple[str, str]:
        """Run ``code`` through the code tool's full lifecycle; return (response text, sandbox status)."""
        tool = self.tools[self.tool_name]
        instance_id, _ = await tool.create()
        try:
            response, _, info = await tool.execute(instance_id, {"code": code})
        finally:
            await tool.release(instance_id)
        text = truncate_like_agent_loop(response.text or "", self.max_tool_response_length)
        return text, str(info.get("status", "unknown"))

    def call_many(self, codes: Sequence[str]) -> list[tuple[str, str]]:
        """Execute many snippets concurrently (the sandbox pool runs them in parallel)."""

        async def run_all():
            return await asyncio.gather(*(self.acall(code) for code in codes))

        return asyncio.run(run_all())


# ------------------------------------------------------------------------------------------------ rendering


class Renderer:
    """Turns messages into agent-loop token ids with verl's Continuous Token builder."""

    def __init__(self, tokenizer: Any, tool_schemas: list[dict[str, Any]], hf_model_type: str = "qwen2"):
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        self.tokenizer = tokenizer
        self.tools = tool_schemas
        self.builder = create_continuous_token_builder(tokenizer, hf_model_type=hf_model_type)
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos_token_id: generation could never stop")
        self.eos_id = int(tokenizer.eos_token_id)

    def render(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int], int]:
        """(input_ids, loss_mask, prompt_length) for prompt messages followed by assistant/tool turns."""
        n_prompt = next((i for i, m in enumerate(messages) if m["role"] in ("assistant", "tool")), len(messages))
        history = [dict(m) for m in messages[:n_prompt]]
        ids = list(self.builder.build_initial_tokens(history, tools=self.tools))
        prompt_length = len(ids)
        mask: list[int] = []
        i = n_prompt
        while i < len(messages):
            message = messages[i]
            if message["role"] == "assistant":
                generated = self.tokenizer.encode(message["content"], add_special_tokens=False) + [self.eos_id]
                merge = self.builder.merge_assistant_tokens(ids, generated)
                history.append(dict(message))
                i += 1
            elif message["role"] == "tool":
                previous = list(history)
                while i < len(messages) and messages[i]["role"] == "tool":
                    history.append(dict(messages[i]))
                    i += 1
                merge = self.builder.merge_context_tokens(previous, history, ids, tools=self.tools)
            else:
                raise ValueError(f"unexpected role {message['role']!r} after the prompt")
            mask, _ = self.builder.align_response_metadata(merge, mask)
            ids = list(merge.token_ids)
        return ids, [0] * prompt_length + mask, prompt_length


# ------------------------------------------------------------------------------------------------ building


def plan_turns(kind: str, problem: MathProblem, rng: random.Random) -> list[str | None]:
    """Code of each tool call in order (``None`` marks the final answer turn)."""
    if kind == "clean":
        return [correct_code(problem.expression), None]
    if kind == "fix":
        return [buggy_code(problem.expression, rng), correct_code(problem.expression), None]
    if kind == "no_tool":
        return [None]
    raise ValueError(f"unknown trajectory kind {kind!r}; expected one of {KINDS}")


def sample_kinds(n: int, mix: Mapping[str, float], rng: random.Random) -> list[str]:
    """``n`` kinds in the given proportions (exact counts up to rounding, shuffled)."""
    unknown = set(mix) - set(KINDS)
    if unknown or not mix or any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"bad trajectory mix {dict(mix)}: non-negative weights over {KINDS}")
    total = sum(mix.values())
    counts = {k: int(n * w / total) for k, w in mix.items()}
    leftover = n - sum(counts.values())
    for k in sorted(mix, key=lambda k: -mix[k])[:leftover]:
        counts[k] += 1
    kinds = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(kinds)
    return kinds


def build_trajectories(
    problems: Sequence[MathProblem],
    tokenizer: Any,
    runner: ToolRunner,
    *,
    mix: Mapping[str, float] = DEFAULT_MIX,
    seed: int = 0,
    hf_model_type: str = "qwen2",
) -> list[Trajectory]:
    """One rendered trajectory per problem, kinds drawn from ``mix``; all tool calls executed for real."""
    rng = random.Random(seed)
    kinds = sample_kinds(len(problems), mix, rng)
    plans = [plan_turns(kind, problem, rng) for kind, problem in zip(kinds, problems, strict=True)]
    codes = [code for plan in plans for code in plan if code is not None]
    results = iter(runner.call_many(codes))
    renderer = Renderer(tokenizer, runner.schemas, hf_model_type=hf_model_type)
    out = []
    for kind, problem, plan in zip(kinds, problems, plans, strict=True):
        traj = Trajectory(kind=kind, problem=problem, messages=[dict(m) for m in problem.prompt])
        for turn, code in enumerate(plan):
            if code is None:
                traj.messages.append({"role": "assistant", "content": answer_text(problem.answer)})
                continue
            text, status = next(results)
            lead = FIRST_CALL_LEAD if turn == 0 else RETRY_CALL_LEAD
            traj.messages.append({"role": "assistant", "content": tool_call_text(runner.tool_name, code, lead)})
            traj.messages.append({"role": "tool", "content": text})
            traj.tool_statuses.append(status)
        traj.input_ids, traj.loss_mask, traj.prompt_length = renderer.render(traj.messages)
        out.append(traj)
    return out
