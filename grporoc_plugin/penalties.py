"""Per-trajectory RoC penalties: tool-error ratio ``p_err`` and answer-format penalty ``p_format`` (spec §1.4).

Two ways to compute them:

* :func:`structured_penalties`, vectorised over per-trajectory counters written during rollout (the plugin's default).
  Errors are counted by kind, so timeouts and malformed tool calls count (the paper's three failure modes) and
  infrastructure failures never do.
* :func:`text_penalties`, the released code's substring/regex rules on the decoded response text (special tokens
  kept), reproduced exactly, quirks included (timeouts and most parse failures are not errors, any "error" in a tool
  output is; the turn count misses the first assistant turn). It is kept for ``compat`` runs and comparisons.

Pure numpy + stdlib: no verl or torch imports, so the reward worker and the sampler can both import this cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ERROR_KINDS",
    "PenaltyConfig",
    "combine_penalties",
    "count_answer_tags",
    "structured_penalties",
    "text_penalties",
]

#: Tool-error kinds a trajectory's counters may carry (``tool_errors_<kind>``), see docs/CONTRACTS.md.
ERROR_KINDS: tuple[str, ...] = ("parse", "exec", "timeout", "infra")
#: Kinds that may count against the model; "infra" (sandbox/tool-server failure) is never the model's fault.
PENALISABLE_ERROR_KINDS: tuple[str, ...] = ("parse", "exec", "timeout")
TURN_COUNT_MODES: tuple[str, ...] = ("assistant_turns", "compat")
_TURN_COUNT_ALIASES = {"compat_regex": "compat"}  # spec §8 spelling

# Release tokens (Qwen chat template, rStar2-Agent prompt format).
_TR_OPEN, _TR_CLOSE = "<tool_response>", "</tool_response>"
_ANS_OPEN, _ANS_CLOSE = "<answer>", "</answer>"
_TURN_OPEN, _TURN_CLOSE = "<|im_start|>assistant", "<|im_end|>"


@dataclass(frozen=True)
class PenaltyConfig:
    """How a trajectory's penalty is computed from its counters (spec §1.4; paper Eq. 4-5)."""

    no_tool_p_err: float = 0.5
    """p_err of a trajectory without any tool call (paper: 0.5, "to encourage tool usage"); in [0, 1]."""
    error_kinds: tuple[str, ...] = PENALISABLE_ERROR_KINDS
    """Tool-error kinds counted in p_err: parse, exec, timeout (infra failures are never the model's fault)."""
    use_error_ratio: bool = True
    """Add the tool-error ratio p_err to the penalty (release roc_error_ratio)."""
    use_answer_format: bool = True
    """Add the answer-format penalty p_format to the penalty (release roc_answer_format)."""
    turn_count: str = "assistant_turns"
    """Denominator of p_format: assistant_turns (paper) or compat (release regex count, one turn fewer)."""

    def __post_init__(self) -> None:
        # frozen dataclass: normalise with object.__setattr__ (YAML gives lists and ints)
        p = self.no_tool_p_err
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise ValueError(f"PenaltyConfig.no_tool_p_err must be a number in [0, 1], got {p!r}")
        object.__setattr__(self, "no_tool_p_err", float(p))

        kinds = self.error_kinds
        if isinstance(kinds, str) or not isinstance(kinds, Sequence):
            raise ValueError(f"PenaltyConfig.error_kinds must be a list of error kinds, got {kinds!r}")
        kinds = tuple(kinds)
        for kind in kinds:
            if kind == "infra":
                raise ValueError(
                    "PenaltyConfig.error_kinds may not contain 'infra': infrastructure failures (sandbox or tool "
                    "server) are not the model's fault and are never penalised"
                )
            if kind not in PENALISABLE_ERROR_KINDS:
                raise ValueError(
                    f"PenaltyConfig.error_kinds: unknown kind {kind!r}; allowed: {list(PENALISABLE_ERROR_KINDS)}"
                )
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"PenaltyConfig.error_kinds has duplicates: {list(kinds)}")
        object.__setattr__(self, "error_kinds", kinds)

        for name in ("use_error_ratio", "use_answer_format"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"PenaltyConfig.{name} must be a bool, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))

        mode = _TURN_COUNT_ALIASES.get(self.turn_count, self.turn_count)
        if mode not in TURN_COUNT_MODES:
            raise ValueError(f"PenaltyConfig.turn_count must be one of {list(TURN_COUNT_MODES)}, got {mode!r}")
        object.__setattr__(self, "turn_count", mode)


# ---------------------------------------------------------------------------------------------------------------------
# Structured counters -> penalties
# ---------------------------------------------------------------------------------------------------------------------


def _as_float(name: str, values, n: int | None) -> np.ndarray:
    """1-D float64 copy of a per-trajectory counter; unreadable entries (None, junk, NaN) become 0."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):  # object arrays with None/str from non_tensor_batch: salvage per element
        arr = np.array([_to_float(v) for v in np.asarray(values, dtype=object).ravel()], dtype=np.float64)
    arr = np.nan_to_num(arr.reshape(-1), nan=0.0, posinf=0.0, neginf=0.0)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"structured_penalties: {name} has {arr.shape[0]} entries, expected {n} (one per trajectory)")
    return arr


def _to_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def structured_penalties(
    tool_calls,
    errors_by_kind: Mapping[str, object],
    answer_tags,
    answer_tags_balanced,
    assistant_turns,
    config: PenaltyConfig | None = None,
    truncated=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised (p_err, p_format, p_total) float64 arrays from per-trajectory counters.

    * ``p_err`` = ``no_tool_p_err`` without tool calls, else (sum of the counted error kinds) / tool_calls in [0, 1].
    * ``p_format`` = 1 if no closed answer tag or tags unbalanced, else min(1, (answer_tags - 1) / turns), where
      turns is ``assistant_turns`` (paper) or, with ``turn_count="compat"``, what the release's regex counts in the
      response text: the first assistant header belongs to the prompt, so ``assistant_turns - 1``, one fewer again if
      ``truncated`` (the final turn has no ``<|im_end|>``), floored at 0; 0 turns give 1 (so a single-turn answer is
      1.0 in compat mode and 0.0 in the paper). Counters cannot see the text-only quirks (answer tags inside tool
      outputs, a run stopped with a closed final turn while ``truncated``), so compat here equals
      :func:`text_penalties` only on well-formed rollouts.
    * ``p_total`` = p_err * use_error_ratio + p_format * use_answer_format, in [0, 2].

    ``errors_by_kind`` maps kind -> per-trajectory counts (keys from :data:`ERROR_KINDS`; every kind in
    ``config.error_kinds`` must be present). Negative or unreadable counts are read as 0 (never crash training).
    """
    config = PenaltyConfig() if config is None else config
    calls = _as_float("tool_calls", tool_calls, None)
    n = calls.shape[0]

    unknown = sorted(set(errors_by_kind) - set(ERROR_KINDS))
    if unknown:
        raise ValueError(f"structured_penalties: errors_by_kind has unknown kinds {unknown}; allowed {ERROR_KINDS}")
    missing = [k for k in config.error_kinds if k not in errors_by_kind]
    if missing:
        raise ValueError(f"structured_penalties: errors_by_kind lacks {missing}, counted by PenaltyConfig.error_kinds")
    errors = np.zeros(n, dtype=np.float64)
    for kind in config.error_kinds:
        errors += np.maximum(_as_float(f"errors_by_kind[{kind!r}]", errors_by_kind[kind], n), 0.0)

    has_tool = calls > 0
    ratio = np.divide(errors, calls, out=np.zeros(n, dtype=np.float64), where=has_tool)
    p_err = np.where(has_tool, np.clip(ratio, 0.0, 1.0), config.no_tool_p_err)

    closed = _as_float("answer_tags", answer_tags, n)
    balanced = _as_float("answer_tags_balanced", answer_tags_balanced, n) != 0
    turns = np.maximum(_as_float("assistant_turns", assistant_turns, n), 0.0)
    if config.turn_count == "compat":
        trunc = np.zeros(n, dtype=bool) if truncated is None else _as_float("truncated", truncated, n) != 0
        turns = np.maximum(turns - 1.0 - trunc, 0.0)
    ok = (closed >= 1) & balanced & (turns > 0)
    fmt = np.divide(closed - 1.0, turns, out=np.ones(n, dtype=np.float64), where=ok)
    p_format = np.where(ok, np.minimum(fmt, 1.0), 1.0)

    return p_err, p_format, combine_penalties(p_err, p_format, config)


def combine_penalties(p_err, p_format, config: PenaltyConfig | None = None) -> np.ndarray:
    """p_total = p_err * use_error_ratio + p_format * use_answer_format (release roc.py:25-38), float64."""
    config = PenaltyConfig() if config is None else config
    p_err = np.asarray(p_err, dtype=np.float64)
    total = np.zeros(p_err.shape, dtype=np.float64)
    if config.use_error_ratio:
        total += p_err
    if config.use_answer_format:
        total += np.asarray(p_format, dtype=np.float64)
    return total


# ---------------------------------------------------------------------------------------------------------------------
# Text -> counters / penalties (release rules)
# ---------------------------------------------------------------------------------------------------------------------
# The release runs re.findall(r"<x>.*?</x>", text, re.DOTALL). For literal delimiters that cannot overlap each other
# (true for all three pairs here), that equals a greedy str.find scan: next opener, then the first closer at or after
# its end, resume after the closer; an opener without a later closer ends the scan (no later opener has one either).
# str.find/str.count run at memchr speed, several times faster than sre's prefix scan, and need no match objects.


def _count_pairs(text: str, open_tag: str, close_tag: str) -> int:
    """len(re.findall(open_tag + '.*?' + close_tag, text, re.DOTALL)) for literal tags, without the regex."""
    count, pos, lo, find = 0, 0, len(open_tag), text.find
    while True:
        start = find(open_tag, pos)
        if start < 0:
            return count
        end = find(close_tag, start + lo)
        if end < 0:
            return count
        count += 1
        pos = end + len(close_tag)


def count_answer_tags(text: str) -> tuple[int, bool]:
    """(closed, balanced) with the release's rules: closed = non-overlapping ``<answer>.*?</answer>`` (DOTALL);
    balanced iff count("<answer>") == count("</answer>") == closed. Pass model-generated text only."""
    closed = _count_pairs(text, _ANS_OPEN, _ANS_CLOSE)
    return closed, text.count(_ANS_OPEN) == closed and text.count(_ANS_CLOSE) == closed


def _text_p_err(text: str) -> float:
    matches = errors = pos = 0
    find = text.find
    while True:
        start = find(_TR_OPEN, pos)
        if start < 0:
            break
        end = find(_TR_CLOSE, start + 15)  # len(_TR_OPEN)
        if end < 0:
            break
        pos = end + 16  # len(_TR_CLOSE)
        matches += 1
        if "error" in text[start:pos].lower():  # slice+lower of one block beats a case-insensitive regex 5x
            errors += 1
    return 0.5 if matches == 0 else errors / matches


def _text_p_format(text: str) -> float:
    # One scan for "answer>" finds both tag kinds (the char before tells "<answer>" from "</answer>"); the tags are
    # balanced with closed == count("<answer>") == count("</answer>") iff they strictly alternate open, close, ...
    find = text.find
    i = find("answer>")
    if i < 0:
        return 1.0
    n_open = 0
    expect_open = True
    while i >= 0:
        prev = text[i - 1] if i >= 1 else ""
        if prev == "<":
            if not expect_open:
                return 1.0
            n_open += 1
            expect_open = False
        elif prev == "/" and i >= 2 and text[i - 2] == "<":
            if expect_open:
                return 1.0
            expect_open = True
        i = find("answer>", i + 7)
    if n_open == 0 or not expect_open:  # no tag at all, or the last opener is unclosed
        return 1.0
    if n_open == 1:
        # (1 - 1) / num_turns is 0 whenever num_turns >= 1, so only "is there one turn" matters: some header lying
        # wholly before the last <|im_end|> (searched backwards from the end, where the final turn closes)
        last_end = text.rfind(_TURN_CLOSE)
        return 1.0 if last_end < 0 or find(_TURN_OPEN, 0, last_end) < 0 else 0.0
    num_turns = _count_pairs(text, _TURN_OPEN, _TURN_CLOSE)
    if num_turns == 0:
        return 1.0
    return min((n_open - 1) / num_turns, 1.0)


def text_penalties(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(p_err, p_format) float64 arrays from decoded responses (special tokens kept), exactly as the release computes
    them (spec §1.4 CODE). A non-str entry (e.g. None from a missing field) is read as the empty response."""
    n = len(texts)
    p_err = np.empty(n, dtype=np.float64)
    p_format = np.empty(n, dtype=np.float64)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            text = ""
        p_err[i] = _text_p_err(text)
        p_format[i] = _text_p_format(text)
    return p_err, p_format
