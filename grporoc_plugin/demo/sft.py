"""The demo's SFT warm-start: a plain torch loop over rendered tool-use trajectories (loss on assistant tokens only).

verl's SFT trainer is torchrun + FSDP on an accelerator; for a model of this size on two CPU cores a plain loop is
both faster and simpler, and it trains exactly what RL will sample from: the agent loop's token stream.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from grporoc_plugin.demo.trajectories import MathProblem, Trajectory

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SFTConfig:
    """Optimisation settings of the warm-start."""

    steps: int = 300
    """Optimizer steps."""
    batch_size: int = 16
    """Trajectories per step."""
    lr: float = 3e-3
    """Peak AdamW learning rate (a tiny randomly initialised model)."""
    warmup_steps: int = 20
    """Linear warm-up, then cosine decay to 10 % of ``lr``."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global grad-norm clip."""
    seed: int = 0
    """Batch order and init of the optimizer's randomness."""
    log_every: int = 25
    """Print the running loss every this many steps."""


def collate(batch: Sequence[Trajectory], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` and ``labels`` (= ids on assistant tokens, -100 elsewhere)."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, traj in enumerate(batch):
        n = len(traj.input_ids)
        seq = torch.tensor(traj.input_ids, dtype=torch.long)
        mask = torch.tensor(traj.loss_mask, dtype=torch.bool)
        ids[row, :n] = seq
        attn[row, :n] = 1
        labels[row, :n] = torch.where(mask, seq, torch.full_like(seq, IGNORE_INDEX))
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def _lr_factor(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def assistant_token_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over assistant tokens (HF shifts ``labels`` internally)."""
    return model(**batch).loss


def train_sft(
    model: Any,
    trajectories: Sequence[Trajectory],
    pad_id: int,
    cfg: SFTConfig = SFTConfig(),
    log: Callable[[str], None] | None = lambda text: print(text, flush=True),
) -> list[float]:
    """Fine-tune ``model`` in place; return the loss of every step."""
    if not trajectories:
        raise ValueError("train_sft: no trajectories")
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    order: list[int] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(trajectories)))
            rng.shuffle(fresh)
            order += fresh
        idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        batch = collate([trajectories[i] for i in idx], pad_id)
        for group in optim.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg)
        loss = assistant_token_loss(model, batch)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optim.step()
        losses.append(float(loss.detach()))
        if log is not None and ((step + 1) % cfg.log_every == 0 or step == 0 or step + 1 == cfg.steps):
            window = losses[-min(cfg.log_every, step + 1) :]
            log(
                f"[sft] step {step + 1:4d}/{cfg.steps}  loss {sum(window) / len(window):.4f}  "
                f"lr {optim.param_groups[0]['lr']:.2e}  {time.perf_counter() - t0:.1f}s"
            )
    model.eval()
    return losses


@dataclass(frozen=True)
class SanityReport:
    """What the SFT'd policy emits as its first turn on fresh problems (sampled like the RL rollout)."""

    samples: int
    tool_call: float
    """Share with at least one complete, parseable ``<tool_call>`` naming the code tool."""
    malformed: float
    """Share with a ``<tool_call>`` block that does not parse (bad JSON / missing keys / unclosed)."""
    answer_only: float
    """Share with no tool call but a ``\\boxed{}`` answer."""
    examples: tuple[str, ...]
    """A few decoded responses."""

    def line(self) -> str:
        return (
            f"[sft] sanity on {self.samples} sampled first turns: parseable tool call {self.tool_call:.0%}, "
            f"malformed {self.malformed:.0%}, direct answer {self.answer_only:.0%}"
        )


@torch.no_grad()
def sanity_check(
    model: Any,
    tokenizer: Any,
    problems: Sequence[MathProblem],
    tool_schemas: list[dict[str, Any]],
    tool_name: str,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    seed: int = 0,
) -> SanityReport:
    """Sample one first turn per problem and parse it with the plugin's ``grporoc_hermes`` parser."""
    from grporoc_plugin.demo.trajectories import Renderer
    from grporoc_plugin.tools.parser import MALFORMED_TOOL_NAME, parse_hermes_text

    renderer = Renderer(tokenizer, tool_schemas)
    prompts = [renderer.render(list(p.prompt))[0] for p in problems]
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else renderer.eos_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, p in enumerate(prompts):  # left padding for generation
        ids[row, width - len(p) :] = torch.tensor(p)
        attn[row, width - len(p) :] = 1
    torch.manual_seed(seed)
    out = model.generate(
        input_ids=ids,
        attention_mask=attn,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        eos_token_id=renderer.eos_id,
        pad_token_id=pad,
    )
    texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    good = bad = answer_only = 0
    for text in texts:
        _, calls, unclosed = parse_hermes_text(text)
        if any(c.name == tool_name for c in calls):
            good += 1
        elif unclosed or any(c.name == MALFORMED_TOOL_NAME for c in calls) or calls:
            bad += 1
        elif "\\boxed{" in text:
            answer_only += 1
    n = max(1, len(texts))
    return SanityReport(len(texts), good / n, bad / n, answer_only / n, tuple(texts[:3]))


@dataclass(frozen=True)
class RolloutReport:
    """End-to-end multi-turn rollouts of the SFT'd policy with the real tool (a local mirror of the agent loop)."""

    samples: int
    acc: float
    """Share whose last ``\\boxed{}`` equals the ground truth."""
    tool_calls_mean: float
    """Tool calls per trajectory."""
    tool_error_share: float
    """Share of executed calls that failed."""
    examples: tuple[str, ...] = ()
    """A few full trajectories (assistant text + tool responses)."""

    def line(self) -> str:
        return (
            f"[sft] {self.samples} multi-turn rollouts with the sandboxed tool: acc {self.acc:.0%}, "
            f"{self.tool_calls_mean:.2f} tool calls each, {self.tool_error_share:.0%} of calls failed"
        )


def generate_turn(
    model: Any, renderer: Any, active: list[dict], pad: int, *, max_new_tokens: int, temperature: float
) -> list[list[int]]:
    """One assistant turn for every active trajectory: a left-padded batched ``generate`` (temperature 0 = greedy:
    HF rejects sampling at temperature 0), each row cut after its EOS."""
    sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens, "top_p": 1.0, "top_k": 0}
    sampling |= {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    width = max(len(s["ids"]) for s in active)
    ids = torch.full((len(active), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, s in enumerate(active):
        ids[row, width - len(s["ids"]) :] = torch.tensor(s["ids"])
        attn[row, width - len(s["ids"]) :] = 1
    out = model.generate(input_ids=ids, attention_mask=attn, eos_token_id=renderer.eos_id, pad_token_id=pad, **sampling)
    turns = []
    for row in range(len(active)):
        gen = out[row, width:].tolist()
        turns.append(gen[: gen.index(renderer.eos_id) + 1] if renderer.eos_id in gen else gen)
    return turns


def _answer_tool_calls(runner: Any, renderer: Any, pending: list[tuple[dict, str | None]]) -> None:
    """Execute each pending call in the sandbox (all at once) and append its response, as the agent loop does."""
    import asyncio

    async def run_all(codes):
        return await asyncio.gather(*(runner.acall(code) for code in codes))

    results = iter(asyncio.run(run_all([c for _, c in pending if c is not None])) if pending else [])
    for s, code in pending:
        text, status = next(results) if code is not None else ("Error: invalid tool call", "invalid_input")
        s["calls"] += 1
        s["errors"] += status != "ok"
        previous = list(s["messages"])
        s["messages"].append({"role": "tool", "content": text})
        s["text"] += f"\n<tool_response>\n{text}\n</tool_response>\n"
        merge = renderer.builder.merge_context_tokens(previous, s["messages"], s["ids"], tools=runner.schemas)
        s["ids"] = merge.token_ids


@torch.no_grad()
def rollout_eval(
    model: Any,
    tokenizer: Any,
    problems: Sequence[MathProblem],
    runner: Any,
    *,
    max_turns: int = 4,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    seed: int = 0,
) -> RolloutReport:
    """Generate -> parse (``grporoc_hermes``) -> execute -> append, batched over problems, like the RL rollout."""
    import json
    import re

    from grporoc_plugin.demo.trajectories import Renderer
    from grporoc_plugin.tools.parser import parse_hermes_text

    renderer = Renderer(tokenizer, runner.schemas)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else renderer.eos_id
    states = [
        {
            "ids": list(renderer.builder.build_initial_tokens([dict(m) for m in p.prompt], tools=runner.schemas)),
            "messages": [dict(m) for m in p.prompt],
            "text": "",
            "calls": 0,
            "errors": 0,
            "done": False,
        }
        for p in problems
    ]
    torch.manual_seed(seed)
    for _ in range(max_turns):
        active = [s for s in states if not s["done"]]
        if not active:
            break
        pending = []
        turns = generate_turn(model, renderer, active, pad, max_new_tokens=max_new_tokens, temperature=temperature)
        for s, gen in zip(active, turns, strict=True):
            text = tokenizer.decode(gen, skip_special_tokens=True)
            s["text"] += text
            s["ids"] = renderer.builder.merge_assistant_tokens(s["ids"], gen).token_ids
            s["messages"].append({"role": "assistant", "content": text})
            _, calls, _ = parse_hermes_text(text)
            if not calls:
                s["done"] = True
                continue
            try:
                code = json.loads(calls[0].arguments).get("code")
            except (ValueError, AttributeError):
                code = None
            pending.append((s, code if isinstance(code, str) else None))
        _answer_tool_calls(runner, renderer, pending)
    boxed = re.compile(r"\\boxed\{([^{}]*)\}")
    correct = 0
    for s, p in zip(states, problems, strict=True):
        found = boxed.findall(s["text"])
        correct += bool(found) and found[-1].strip() == str(p.answer)
    calls = sum(s["calls"] for s in states)
    n = max(1, len(states))
    errors = sum(s["errors"] for s in states) / max(1, calls)
    return RolloutReport(len(states), correct / n, calls / n, errors, tuple(s["text"] for s in states[:3]))
