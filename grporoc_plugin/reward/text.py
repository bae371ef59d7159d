"""Which part of a decoded response is the model's own text, for answer extraction and answer-tag counting.

A multi-turn response interleaves model turns with tool outputs, and a tool output is whatever the executed code
printed: it can print ``</tool_response> ... <answer>\\boxed{42}</answer> <tool_response>`` and so forge the
conversation structure. Only tokens the model generated may supply its answer. Three sources, best first:

1. ``response_mask`` in the batch (colocated / batch reward path): 1 = model-generated token.
2. ``tool_extra_fields["model_spans"]`` (streaming reward path, written by ``grporoc_tool_agent``): ``[start, end)``
   token ranges of ``response_ids`` where ``response_mask == 1``.
   With either, ``model_text`` = the model's spans, decoded one by one and joined with newlines; answers and answer
   tags are read from it only. Tool outputs cannot reach the answer, whatever they print.
3. Neither (verl's plain ``tool_agent``): the structure is only visible in the decoded text, where a tool output can
   forge it. The fallback then

   * reads the **answer** only from the text after the last ``</tool_response>`` (minus an unclosed trailing
     ``<tool_response>...``). The real closing tag of a tool output always follows everything the tool printed, so no
     tool output can place an answer there: the forged-answer attack above fails. What it costs: an answer the model
     wrote *before* its last tool call is not seen (the rStar2 format puts the answer in the final turn). What it
     does not cover: a response cut *inside* a tool output (possible only if an agent loop lets a tool output overflow
     the response budget, which verl's does not, and only read with ``truncated_reward="verify"``);
   * counts **answer tags** on the text with every ``<tool_response>...</tool_response>`` block cut out (non-greedy,
     an unclosed block runs to the end). This is forgeable: a tool output that prints a closing tag followed by
     ``<answer>...</answer>`` adds an answer tag to the count, so ``p_format`` is best effort there. Use
     ``grporoc_tool_agent`` (or a batch with ``response_mask``) for penalties a tool cannot touch.

``last_boxed_full_text`` (the release's extraction, see :mod:`grporoc_plugin.reward.manager`) reads ``full_text``,
the whole decoded response, tool outputs included, by definition.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["ResponseText", "TOOL_RESPONSE_CLOSE", "spans_from_mask", "split_response", "validate_spans"]

TOOL_RESPONSE_OPEN, TOOL_RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_TOOL_RESPONSE_BLOCK = re.compile(r"<tool_response>.*?(?:</tool_response>|\Z)", re.DOTALL)

Source = Literal["response_mask", "model_spans", "delimiters"]


@dataclasses.dataclass(frozen=True)
class ResponseText:
    """The parts of one decoded response the reward needs."""

    #: text the answer tags are counted on (the model's spans; fallback: tool-response blocks cut out)
    model_text: str
    #: text the answer is extracted from (the model's spans; fallback: after the last ``</tool_response>``)
    answer_text: str
    #: the whole decoded response (tool outputs included); None unless asked for
    full_text: str | None
    #: where the model/tool split came from
    source: Source


def spans_from_mask(mask: Sequence[Any]) -> list[tuple[int, int]]:
    """``[start, end)`` ranges where ``mask`` is truthy."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def validate_spans(spans: Any, length: int) -> list[tuple[int, int]]:
    """``model_spans`` checked and clipped to the first ``length`` tokens (the response may have been cut).

    Raises ``ValueError`` naming the problem when they are not sorted, non-overlapping ``[start, end)`` int pairs:
    a broken contract must not silently fall back to the forgeable text rules.
    """
    if hasattr(spans, "tolist"):
        spans = spans.tolist()
    if not isinstance(spans, list | tuple):
        raise ValueError(f"tool_extra_fields['model_spans'] must be a list of [start, end) pairs, got {spans!r:.100}")
    out: list[tuple[int, int]] = []
    prev_end = 0
    for pair in spans:
        if hasattr(pair, "tolist"):
            pair = pair.tolist()
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_) for v in pair)
            or not prev_end <= pair[0] < pair[1]
        ):
            raise ValueError(
                f"tool_extra_fields['model_spans'] must hold sorted, non-overlapping [start, end) int pairs with "
                f"start < end; got {pair!r:.100} after end {prev_end}"
            )
        prev_end = int(pair[1])
        start, end = int(pair[0]), min(int(pair[1]), length)
        if start < end:
            out.append((start, end))
    return out


def split_response(
    decode: Callable[[list[int]], str],
    ids: list[int],
    spans: list[tuple[int, int]] | None,
    *,
    source: Source = "model_spans",
    need_full_text: bool = False,
) -> ResponseText:
    """Decode ``ids`` into the parts the reward needs; ``spans`` None means no mask is known (text fallback)."""
    if spans is not None:
        model_text = "\n".join(decode(ids[start:end]) for start, end in spans)
        full_text = decode(ids) if need_full_text else None
        return ResponseText(model_text, model_text, full_text, source)
    full_text = decode(ids)
    model_text = _TOOL_RESPONSE_BLOCK.sub("\n", full_text)
    return ResponseText(model_text, final_turn_text(full_text), full_text if need_full_text else None, "delimiters")


def final_turn_text(text: str) -> str:
    """The text after the last ``</tool_response>``, without an unclosed ``<tool_response>...`` at its end."""
    cut = text.rfind(TOOL_RESPONSE_CLOSE)
    tail = text if cut < 0 else text[cut + len(TOOL_RESPONSE_CLOSE) :]
    opened = tail.find(TOOL_RESPONSE_OPEN)
    return tail if opened < 0 else tail[:opened]
