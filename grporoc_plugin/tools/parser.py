"""Hermes tool-call parser that never drops a malformed call (``multi_turn.format=grporoc_hermes``).

verl 0.9.1's ``HermesToolParser`` logs and drops a ``<tool_call>`` whose JSON fails to parse, so the model gets no
feedback and the error is never counted. This parser returns such a call as a *malformed marker* (a ``FunctionCall``
named :data:`MALFORMED_TOOL_NAME` whose arguments carry the error); ``grporoc_tool_agent`` turns it into the tool
response ``"Failed to decode tool call: <error>"`` (rStar2-Agent's released behaviour) and counts it as
``tool_errors_parse``. Malformed: invalid JSON, not an object, missing/non-string ``name``, missing or non-object
``arguments``.

An unclosed ``<tool_call>`` (no matching ``</tool_call>``) is not a call: as in the release and in verl, it yields no
tool response and, if it is the only thing in the turn, the rollout ends. It is counted in
:attr:`GrpoRocHermesToolParser.unclosed_tool_calls` (read by the agent loop into ``dropped_tool_calls``).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import regex
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.tools.schemas import OpenAIFunctionToolSchema
from verl.utils.ray_utils import get_event_loop
from verl.utils.rollout_trace import rollout_trace_op

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

PARSER_NAME = "grporoc_hermes"
#: Name of the marker call that stands for a malformed ``<tool_call>`` block (never a real tool name).
MALFORMED_TOOL_NAME = "__grporoc_malformed_tool_call__"
#: Prefix of the tool response the model receives for a malformed call (the release's wording).
DECODE_ERROR_PREFIX = "Failed to decode tool call: "

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_TOOL_CALL_RE = regex.compile(r"<tool_call>(.*?)</tool_call>", regex.DOTALL)


def malformed_call(error: str) -> FunctionCall:
    """The marker for a malformed call; its arguments are valid JSON so verl's message building stays quiet."""
    return FunctionCall(name=MALFORMED_TOOL_NAME, arguments=json.dumps({"error": error}, ensure_ascii=False))


def malformed_call_error(call: FunctionCall) -> str | None:
    """The decode error carried by a malformed marker, or None for a well-formed call."""
    if call.name != MALFORMED_TOOL_NAME:
        return None
    try:
        return str(json.loads(call.arguments)["error"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return "malformed tool call"


def _decode_call(body: str) -> FunctionCall:
    """One ``<tool_call>`` body -> a call, or a malformed marker naming what is wrong."""
    try:
        obj: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        return malformed_call(str(exc))
    if not isinstance(obj, dict):
        return malformed_call(f"expected a JSON object with 'name' and 'arguments', got {type(obj).__name__}")
    for key in ("name", "arguments"):
        if key not in obj:
            return malformed_call(f"missing key {key!r}")
    name, arguments = obj["name"], obj["arguments"]
    if not isinstance(name, str) or not name:
        return malformed_call(f"'name' must be a non-empty string, got {name!r}")
    if not isinstance(arguments, dict):
        return malformed_call(f"'arguments' must be a JSON object, got {type(arguments).__name__}")
    return FunctionCall(name=name, arguments=json.dumps(arguments, ensure_ascii=False))


def parse_hermes_text(text: str) -> tuple[str, list[FunctionCall], int]:
    """Split a decoded assistant turn into (content without tool calls, calls incl. malformed markers, #unclosed)."""
    calls = [_decode_call(body) for body in _TOOL_CALL_RE.findall(text)]
    content = _TOOL_CALL_RE.sub("", text)
    # Whatever opening tag survives the removal of complete blocks has no closing tag.
    unclosed = content.count(TOOL_CALL_START)
    return content, calls, unclosed


@ToolParser.register(PARSER_NAME)
class GrpoRocHermesToolParser(ToolParser):
    """Hermes format (``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``) with malformed-call markers."""

    def __init__(self, tokenizer) -> None:
        super().__init__(tokenizer)
        #: Unclosed ``<tool_call>`` tags in the last parsed turn (one parser per agent-loop instance = trajectory).
        self.unclosed_tool_calls = 0

    @rollout_trace_op
    async def extract_tool_calls(
        self, responses_ids: list[int], tools: list[OpenAIFunctionToolSchema] | None = None
    ) -> tuple[str, list[FunctionCall]]:
        loop = get_event_loop()
        # Same decoding as verl's hermes parser (special tokens kept), so both see the same text.
        text = await loop.run_in_executor(None, self.tokenizer.decode, responses_ids)
        content, calls, unclosed = parse_hermes_text(text)
        self.unclosed_tool_calls = unclosed
        for call in calls:
            error = malformed_call_error(call)
            if error is not None:
                logger.info("malformed tool call returned to the model: %s", error)
        if unclosed:
            logger.info("%d unclosed %s tag(s): not a tool call", unclosed, TOOL_CALL_START)
        return content, calls
