"""Code tool, tool-call parser and agent loop for multi-turn rollouts, plus the per-trajectory counters they share.

Counters live in ``agent_data.extra_fields`` (verl copies that dict into ``AgentLoopOutput.extra_fields``; the reward
worker receives it as ``data.non_tensor_batch["tool_extra_fields"][i]``). Import-light: no sandbox, no Ray here.
"""

from __future__ import annotations

from typing import Any, Literal

ErrorKind = Literal["parse", "exec", "timeout", "infra"]

#: Error kinds, in the order of the ``tool_errors_<kind>`` counters.
ERROR_KINDS: tuple[str, ...] = ("parse", "exec", "timeout", "infra")

#: Integer counters every trajectory of ``grporoc_tool_agent`` carries (0 when nothing happened).
INT_COUNTERS: tuple[str, ...] = (
    "tool_calls",
    *(f"tool_errors_{kind}" for kind in ERROR_KINDS),
    "assistant_turns",
    "dropped_tool_calls",
    "answer_tags",
    "void_turns",
)

#: Boolean counters (False by default).
BOOL_COUNTERS: tuple[str, ...] = ("truncated", "answer_tags_balanced")


def init_counters(extra_fields: dict[str, Any]) -> dict[str, Any]:
    """Add every counter key missing from ``extra_fields`` with its zero value; return ``extra_fields``."""
    for key in INT_COUNTERS:
        extra_fields.setdefault(key, 0)
    for key in BOOL_COUNTERS:
        extra_fields.setdefault(key, False)
    return extra_fields


def record_tool_call(extra_fields: dict[str, Any], error_kind: str | None) -> None:
    """Count one tool call and, if it failed, one error of ``error_kind`` (one of :data:`ERROR_KINDS`)."""
    init_counters(extra_fields)
    extra_fields["tool_calls"] += 1
    if error_kind is not None:
        if error_kind not in ERROR_KINDS:
            raise ValueError(f"unknown tool error kind {error_kind!r}; expected one of {ERROR_KINDS}")
        extra_fields[f"tool_errors_{error_kind}"] += 1


def model_spans(response_mask: list[int]) -> list[list[int]]:
    """``[start, end)`` index ranges of the model-generated tokens (``response_mask == 1``) of a response."""
    spans: list[list[int]] = []
    start = None
    for i, m in enumerate([*response_mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append([start, i])
            start = None
    return spans


__all__ = [
    "BOOL_COUNTERS",
    "ERROR_KINDS",
    "INT_COUNTERS",
    "ErrorKind",
    "init_counters",
    "model_spans",
    "record_tool_call",
]
