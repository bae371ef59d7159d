"""Per-trajectory multi-turn rollouts of a local HF policy with the real code tool (pre-RL calibration).

The demo's ``sft.rollout_eval`` reports aggregates only; calibrating the experiment's warm start needs each
trajectory's outcome *and* its tool-call history (did a positive contain a failed call followed by a recovery?), so
this is a per-trajectory variant of the same loop: the same token builder (verl's Continuous Token builder), parser
(``grporoc_hermes``), code tool (sandboxed ``CodeExecTool`` via the demo's ``ToolRunner``), the agent loop's budgets
(``max_assistant_turns``, a response budget that counts model and tool tokens like verl's ``response_length``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass
class TrajectoryRecord:
    """What one sampled trajectory did."""

    answer: int
    """Ground truth."""
    text: str = ""
    """Assistant text and tool responses, concatenated."""
    statuses: list[str] = field(default_factory=list)
    """Status of each tool call in order ("ok", "exec_error", "parse_error", ...)."""
    response_tokens: int = 0
    """Model + tool tokens after the prompt (verl's ``response_length``)."""
    done: bool = False

    @property
    def correct(self) -> bool:
        found = _BOXED.findall(self.text)
        return bool(found) and found[-1].strip() == str(self.answer)

    @property
    def errors(self) -> int:
        return sum(s != "ok" for s in self.statuses)

    @property
    def recovered(self) -> bool:
        """At least one failed call followed, later, by a successful one."""
        first_error = next((i for i, s in enumerate(self.statuses) if s != "ok"), None)
        return first_error is not None and "ok" in self.statuses[first_error + 1 :]


@dataclass(frozen=True)
class Calibration:
    """The pre-RL criteria of the experiment, measured on sampled trajectories."""

    samples: int
    acc: float
    """(a) share of correct trajectories."""
    pos_error_recovery_share: float
    """(b) share of correct trajectories with >= 1 failed call followed by a successful one."""
    pos_with_error_share: float
    """Share of correct trajectories with >= 1 failed call."""
    pos_tool_error_ratio: float
    """Failed calls / calls over correct trajectories (the paper's Fig. 4 quantity)."""
    acc_after_clean_first_call: float
    """Accuracy of trajectories whose first call succeeded ..."""
    acc_after_failed_first_call: float
    """... and of those whose first call failed (the design wants these close: success must not depend on erring)."""
    no_tool_share: float
    """Share of trajectories without any tool call."""
    tool_calls_per_traj: float
    response_len_mean: float

    def line(self) -> str:
        return (
            f"[calibration] {self.samples} rollouts: (a) acc {self.acc:.1%}; (b) positives with a failed call then a "
            f"recovery {self.pos_error_recovery_share:.1%} (with >= 1 failed call {self.pos_with_error_share:.1%}, "
            f"tool-error ratio {self.pos_tool_error_ratio:.3f}); acc after a clean / failed first call "
            f"{self.acc_after_clean_first_call:.1%} / {self.acc_after_failed_first_call:.1%}; no-tool "
            f"{self.no_tool_share:.1%}; {self.tool_calls_per_traj:.2f} calls/traj; {self.response_len_mean:.0f} tokens"
        )


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def calibrate(records: Sequence[TrajectoryRecord]) -> Calibration:
    """Aggregate the pre-RL criteria over ``records``."""
    pos = [r for r in records if r.correct]
    first_ok = [r for r in records if r.statuses and r.statuses[0] == "ok"]
    first_bad = [r for r in records if r.statuses and r.statuses[0] != "ok"]
    n = len(records)
    return Calibration(
        samples=n,
        acc=_ratio(len(pos), n),
        pos_error_recovery_share=_ratio(sum(r.recovered for r in pos), len(pos)),
        pos_with_error_share=_ratio(sum(r.errors > 0 for r in pos), len(pos)),
        pos_tool_error_ratio=_ratio(sum(r.errors for r in pos), sum(len(r.statuses) for r in pos)),
        acc_after_clean_first_call=_ratio(sum(r.correct for r in first_ok), len(first_ok)),
        acc_after_failed_first_call=_ratio(sum(r.correct for r in first_bad), len(first_bad)),
        no_tool_share=_ratio(sum(not r.statuses for r in records), n),
        tool_calls_per_traj=_ratio(sum(len(r.statuses) for r in records), n),
        response_len_mean=_ratio(sum(r.response_tokens for r in records), n),
    )


_NO_CALL = object()


def _take_turn(s: dict, gen: list[int], tokenizer: Any, renderer: Any, budget: int):
    """Append one generated turn to state ``s``; return the code of its first tool call (None: not decodable) or
    ``_NO_CALL`` when the turn makes no call or the budget is spent (the trajectory ends)."""
    from grporoc_plugin.tools.parser import parse_hermes_text

    rec: TrajectoryRecord = s["rec"]
    if renderer.eos_id in gen:
        gen = gen[: gen.index(renderer.eos_id) + 1]
    gen = gen[: max(0, budget - rec.response_tokens)]
    text = tokenizer.decode(gen, skip_special_tokens=True)
    rec.text += text
    s["ids"] = list(renderer.builder.merge_assistant_tokens(s["ids"], gen).token_ids)
    rec.response_tokens = len(s["ids"]) - s["p0"]
    s["messages"].append({"role": "assistant", "content": text})
    _, calls, _ = parse_hermes_text(text)
    if not calls or rec.response_tokens >= budget:
        rec.done = True
        return _NO_CALL
    try:
        code = json.loads(calls[0].arguments).get("code")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, str) else None


def _run_tools(pending: list, runner: Any, renderer: Any, budget: int) -> None:
    """Execute the pending calls concurrently in the sandbox and append their responses (verl's context tokens)."""

    async def run_all(codes):
        return await asyncio.gather(*(runner.acall(code) for code in codes))

    codes = [c for _, c in pending if c is not None]
    results = iter(asyncio.run(run_all(codes)) if codes else [])
    for s, code in pending:
        rec = s["rec"]
        text, status = next(results) if code is not None else ("Error: invalid tool call", "parse_error")
        rec.statuses.append(status)
        previous = list(s["messages"])
        s["messages"].append({"role": "tool", "content": text})
        rec.text += f"\n<tool_response>\n{text}\n</tool_response>\n"
        merge = renderer.builder.merge_context_tokens(previous, s["messages"], s["ids"], tools=runner.schemas)
        s["ids"] = list(merge.token_ids)
        rec.response_tokens = len(s["ids"]) - s["p0"]
        if rec.response_tokens >= budget:
            rec.done = True


@torch.no_grad()
def sample_trajectories(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Any],
    runner: Any,
    *,
    samples_per_problem: int = 4,
    max_turns: int = 4,
    response_budget: int = 256,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> list[TrajectoryRecord]:
    """Sample ``samples_per_problem`` trajectories per problem (``demo.trajectories.MathProblem``), batched."""
    from grporoc_plugin.demo.sft import generate_turn
    from grporoc_plugin.demo.trajectories import Renderer

    renderer = Renderer(tokenizer, runner.schemas)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else renderer.eos_id
    jobs = [p for p in problems for _ in range(samples_per_problem)]
    records: list[TrajectoryRecord] = []
    torch.manual_seed(seed)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        states = []
        for p in chunk:
            messages = [dict(m) for m in p.prompt]
            ids = list(renderer.builder.build_initial_tokens(messages, tools=runner.schemas))
            states.append({"rec": TrajectoryRecord(answer=p.answer), "ids": ids, "messages": messages, "p0": len(ids)})
        for _ in range(max_turns):
            active = [s for s in states if not s["rec"].done]
            if not active:
                break
            # generate up to the largest remaining budget; each row is cut to its own budget in _take_turn
            remaining = max(1, max(response_budget - s["rec"].response_tokens for s in active))
            pending = []
            budget = min(remaining, response_budget)
            turns = generate_turn(model, renderer, active, pad, max_new_tokens=budget, temperature=temperature)
            for s, gen in zip(active, turns, strict=True):
                code = _take_turn(s, gen, tokenizer, renderer, response_budget)
                if code is not _NO_CALL:
                    pending.append((s, code))
            _run_tools(pending, runner, renderer, response_budget)
        records += [s["rec"] for s in states]
    return records
