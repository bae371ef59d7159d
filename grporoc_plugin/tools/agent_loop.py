"""``grporoc_tool_agent``: verl's ``ToolAgentLoop`` plus per-trajectory tool counters; never drops a malformed call.

Select with ``actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent`` and pair it with
``actor_rollout_ref.rollout.multi_turn.format=grporoc_hermes`` (malformed ``<tool_call>`` blocks become the tool
response ``"Failed to decode tool call: <error>"``). verl's behaviour is otherwise unchanged; only three small
hooks are wrapped:

* ``_call_tool``: answers malformed-call markers; counts every call that the tool itself did not count (unknown
  function and invalid JSON arguments -> ``tool_errors_parse``, an exception raised by the tool ->
  ``tool_errors_infra``: our code tool turns every model mistake into a response and never raises).
* ``_handle_generating_state``: ``assistant_turns``, ``truncated`` (response budget hit), ``dropped_tool_calls``
  (calls beyond ``max_parallel_calls`` and unclosed ``<tool_call>`` tags).
  Each turn's own tokens are decoded once to count ``void_turns`` (a turn with neither a tool call nor an answer,
  SimpleTIR's void turn) and to keep the model's text for the answer-tag count.
* ``_handle_processing_tools_state``: ``truncated`` when the tool output is dropped because it would overflow the
  response budget.

``run`` initialises every counter (see :mod:`grporoc_plugin.tools`) so all trajectories carry the same keys, counts
``answer_tags``/``answer_tags_balanced`` on the model-generated text outside tool calls only (tool outputs and code
cannot add or unbalance tags) and records ``model_spans``: the ``[start, end)`` token ranges of ``response_ids`` the
model generated (``response_mask == 1``), for consumers that receive no response mask (the streaming reward path).
With these, the RoC penalties come from the trajectory itself, whatever reward function or reward model scored it.
The counters are not written before the first generation on purpose: verl copies the server's ``extra_fields``
(global steps) into an *empty* ``agent_data.extra_fields`` only.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall
from verl.tools.schemas import ToolResponse

from grporoc_plugin.penalties import count_answer_tags
from grporoc_plugin.tools import init_counters, model_spans, record_tool_call

# A module reference, not names: importing the parser imports verl's agent-loop package, whose post-import hook
# (grporoc_plugin.register) imports this module while the parser is still initialising.
from grporoc_plugin.tools import parser as _parser

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

AGENT_LOOP_NAME = "grporoc_tool_agent"
# Must match the metrics key CodeExecTool puts on calls it already counted (kept literal: no tool import here).
_COUNTED_METRIC = "grporoc_counted"
# verl's own error text for an exception raised inside a tool (tool_agent_loop.py `_call_tool`).
_TOOL_EXCEPTION_PREFIX = "Error executing tool"
# extra_fields key holding the model's decoded turns until run() folds them into the answer-tag counters.
_TURN_TEXTS = "_grporoc_turn_texts"
# A tool call's arguments are code, not an answer: answer tags inside them (even in a string literal) do not count.
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>.*?(?:</tool_call>|\Z)", re.DOTALL)


@register(AGENT_LOOP_NAME)
class GrpoRocToolAgentLoop(ToolAgentLoop):
    """``tool_agent`` that answers and counts malformed calls and records per-trajectory tool counters."""

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> AgentLoopOutput:
        output = await super().run(sampling_params, priority=priority, **kwargs)
        counters = init_counters(output.extra_fields)
        turn_texts = counters.pop(_TURN_TEXTS, None) or []
        closed, balanced = count_answer_tags("\n".join(_TOOL_CALL_BLOCK.sub("\n", text) for text in turn_texts))
        counters["answer_tags"] = closed
        counters["answer_tags_balanced"] = balanced
        counters["model_spans"] = model_spans(output.response_mask)
        return output

    async def _handle_generating_state(
        self, agent_data: AgentData, sampling_params: dict[str, Any], ignore_termination: bool = False
    ) -> AgentState:
        parser_reports_unclosed = hasattr(self.tool_parser, "unclosed_tool_calls")
        if parser_reports_unclosed:
            self.tool_parser.unclosed_tool_calls = 0  # only non-zero if this turn reached the parser
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)

        counters = init_counters(agent_data.extra_fields)
        counters["assistant_turns"] = agent_data.assistant_turns
        turn_text = self.tokenizer.decode(agent_data.response_ids, skip_special_tokens=True)
        # kept in extra_fields until run() folds it into the answer-tag counters (verl copies that dict to the output)
        counters.setdefault(_TURN_TEXTS, []).append(turn_text)
        if not _has_tool_call_or_answer(turn_text):
            counters["void_turns"] += 1
        if len(agent_data.response_mask) >= self.response_length:
            counters["truncated"] = True
        if state == AgentState.PROCESSING_TOOLS:  # tool_calls were parsed from this turn
            counters["dropped_tool_calls"] += max(0, len(agent_data.tool_calls) - self.max_parallel_calls)
        if parser_reports_unclosed:
            counters["dropped_tool_calls"] += self.tool_parser.unclosed_tool_calls
        return state

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        state = await super()._handle_processing_tools_state(agent_data)
        if state == AgentState.TERMINATED:  # verl's only reason: the tool turn would overflow the budget
            init_counters(agent_data.extra_fields)["truncated"] = True
        return state

    async def _call_tool(
        self, tool_call: FunctionCall, tools_kwargs: dict[str, Any], agent_data: AgentData
    ) -> tuple[ToolResponse, float, dict]:
        extra_fields = agent_data.extra_fields
        error = _parser.malformed_call_error(tool_call)
        if error is not None:
            record_tool_call(extra_fields, "parse")
            return ToolResponse(text=_parser.DECODE_ERROR_PREFIX + error), 0.0, {}

        # Classify what verl answers without running the tool (it words those cases itself).
        active_tools = getattr(agent_data, "_active_tools", self.tools)
        kind = None if tool_call.name in active_tools and _is_json(tool_call.arguments) else "parse"
        response, reward, metrics = await super()._call_tool(tool_call, tools_kwargs, agent_data)
        if not (isinstance(metrics, dict) and metrics.get(_COUNTED_METRIC)):
            if kind is None and (response.text or "").startswith(_TOOL_EXCEPTION_PREFIX):
                kind = "infra"
            record_tool_call(extra_fields, kind)
        return response, reward, metrics


def _has_tool_call_or_answer(turn_text: str) -> bool:
    """A turn that is not void: it attempts a tool call (even a malformed one) or gives an answer."""
    return "<tool_call>" in turn_text or "\\boxed" in turn_text or count_answer_tags(turn_text)[0] > 0


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return False
    return True
