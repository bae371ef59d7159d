"""The experiment's task and its cached SFT warm start, calibrated on the pre-RL criteria only.

Task: the demo's arithmetic problems (``demo.assets.make_problem``: 2-3 integer operands, ``+ - *``) answered with
the sandboxed python tool and a final ``<answer>\\boxed{N}</answer>``. The warm start is the demo's SFT
(``demo.trajectories`` + ``demo.sft``: trajectories whose tool responses come from really executing the code) with an
experiment-specific mix of three behaviours the policy then *chooses* between at rollout time:

* ``clean``: one correct call, then the answer;
* ``fix``: a failing first call (NameError, SyntaxError, ZeroDivisionError, TypeError), the real error, a corrected
  call, then the answer: success does not depend on having erred, so only *which successes are reinforced* can
  teach the policy to stop erring (the decision GRPO-RoC targets);
* ``no_tool``: an answer without the tool, which a tiny model mostly gets wrong (the source of failures that makes
  groups mixed).

Before RL, the warm start must give (a) rollout accuracy of about 30-70 % and (b) >= ~30 % of successful
trajectories with a failed call followed by a recovery; :func:`build_warm_start` measures both on fresh problems
(:mod:`grporoc_plugin.experiments.rollouts`) and stores them next to the model. The model directory is cached under
a key of every setting, so all arms and seeds start from the identical checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TaskConfig", "WarmStart", "WarmStartConfig", "build_task", "build_warm_start"]

#: Bump when the recipe changes in a way the settings do not capture (invalidates cached warm starts).
RECIPE_VERSION = 1


@dataclass(frozen=True)
class TaskConfig:
    """RL prompts and held-out prompts (verl parquet, the demo's format and generator)."""

    n_train: int = 512
    """Train prompts (the dataloader reshuffles them each epoch)."""
    n_val: int = 64
    """Held-out prompts for verl's validation."""
    data_seed: int = 1
    """Seed of the problem generator."""
    max_tool_response_chars: int = 300
    """Tool output cap (``max_output_chars`` of the code tool)."""


@dataclass(frozen=True)
class WarmStartConfig:
    """The tiny policy and its SFT warm start."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    sft_examples: int = 2048
    """Synthetic executed trajectories."""
    sft_steps: int = 600
    """Optimizer steps."""
    sft_batch_size: int = 16
    sft_lr: float = 3e-3
    mix: tuple[tuple[str, float], ...] = (("clean", 0.4), ("fix", 0.4), ("no_tool", 0.2))
    """Share of each behaviour in the SFT set (``demo.trajectories.KINDS``)."""
    seed: int = 0
    """Model init, SFT data and batch order."""
    calib_problems: int = 64
    """Fresh problems for the pre-RL calibration ..."""
    calib_samples: int = 4
    """... sampled this many times each (temperature 1, like the rollouts)."""
    response_budget: int = 384
    """Response tokens (model + tool) of a calibration rollout; matches the RL run's ``data.max_response_length``."""
    init_model: str | None = None
    """Start from this tokenizer + model directory (the demo's assets layout) instead of building a fresh one."""
    threads: int = 1
    """torch threads for SFT: on a shared 2-core machine one thread is faster than two (measured 0.5 vs 1.2 s/step)."""

    def key(self, extra: str = "") -> str:
        blob = json.dumps({"recipe": RECIPE_VERSION, "extra": extra, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class WarmStart:
    """A built (or cached) warm start."""

    model_dir: str
    calibration: dict[str, float] = field(default_factory=dict)
    sft_losses: tuple[float, float] = (float("nan"), float("nan"))
    """First and last-25-step mean SFT loss."""
    build_s: float = 0.0
    cached: bool = False


def build_task(out_dir: str | Path, cfg: TaskConfig = TaskConfig()) -> dict[str, str]:
    """Write train/val parquet and the tool config; return their paths (``train``, ``val``, ``tool_config``)."""
    from grporoc_plugin.demo.run import write_tool_config
    from grporoc_plugin.experiments.task import write_dataset

    out_dir = Path(out_dir)
    train, val = write_dataset(out_dir / "data", n_train=cfg.n_train, n_val=cfg.n_val, seed=cfg.data_seed)
    tool_config = write_tool_config(out_dir / "tool_config.yaml", max_output_chars=cfg.max_tool_response_chars)
    return {"train": train, "val": val, "tool_config": str(tool_config)}


def held_out_expressions(val_file: str) -> frozenset[str]:
    """Expressions of the held-out prompts (kept out of the SFT set)."""
    import pandas as pd

    questions = pd.read_parquet(val_file)["extra_info"].map(lambda info: info["question"])
    return frozenset(q.removeprefix("What is ").split("?")[0] for q in questions)


def _load_cached(path: Path) -> WarmStart | None:
    meta = path / "warm_start.json"
    if not (meta.exists() and (path / "model" / "config.json").exists()):
        return None
    data = json.loads(meta.read_text())
    return WarmStart(
        model_dir=str(path / "model"),
        calibration=data["calibration"],
        sft_losses=tuple(data["sft_losses"]),
        build_s=data["build_s"],
        cached=True,
    )


def _policy(cfg: WarmStartConfig, model_dir: Path):
    """(tokenizer, model): a fresh tiny Qwen2 + the demo tokenizer, or ``cfg.init_model``; compact chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.demo import assets
    from grporoc_plugin.experiments.task import compact_chat_template

    if cfg.init_model:
        source = cfg.init_model
    else:
        source = str(model_dir)
        fresh = assets.build_tokenizer(source, seed=cfg.seed)
        assets.build_model(
            source,
            fresh,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            seed=cfg.seed,
        )
    # Tokenize exactly as verl will: reloaded from a directory that holds the model config (AutoTokenizer then
    # resolves to Qwen2Tokenizer, which splits digits one by one, unlike the in-memory object build_tokenizer returns).
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.chat_template = compact_chat_template()
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return tokenizer, model


def _check_reload(model_dir: Path, tokenizer: Any, trajectory: Any, schemas: list) -> None:
    """The saved directory must tokenize a training trajectory exactly as SFT did (what verl will load)."""
    from transformers import AutoTokenizer

    from grporoc_plugin.demo.trajectories import Renderer

    reloaded = AutoTokenizer.from_pretrained(str(model_dir))
    ids, _, _ = Renderer(reloaded, schemas).render(trajectory.messages)
    if ids != trajectory.input_ids:
        raise RuntimeError(f"{model_dir}: the saved tokenizer renders SFT trajectories differently from SFT")


def build_warm_start(
    cfg: WarmStartConfig,
    tool_config: str,
    cache_root: str | Path,
    *,
    exclude: frozenset[str] = frozenset(),
    log: Callable[[str], None] = lambda text: print(text, flush=True),
) -> WarmStart:
    """SFT the tiny policy (or reuse the cached one with the same settings) and measure the pre-RL criteria.

    ``exclude``: expressions (the held-out prompts) that never appear in the SFT set.
    """
    import torch

    from grporoc_plugin.demo.sft import SFTConfig, train_sft
    from grporoc_plugin.demo.trajectories import ToolRunner, build_trajectories
    from grporoc_plugin.experiments.rollouts import calibrate, sample_trajectories
    from grporoc_plugin.experiments.task import make_problems

    exclude_key = hashlib.sha256("\n".join(sorted(exclude)).encode()).hexdigest()[:8]
    path = Path(cache_root) / f"warm_start-{cfg.key(exclude_key)}"
    cached = _load_cached(path)
    if cached is not None:
        log(f"[warm-start] cached: {cached.model_dir}")
        return cached
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    model_dir = path / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer, model = _policy(cfg, model_dir)
    runner = ToolRunner(tool_config, max_tool_response_length=256)
    try:
        pool = make_problems(cfg.sft_examples + len(exclude), seed=10_000 + cfg.seed)
        problems = [p for p in pool if p.expression not in exclude][: cfg.sft_examples]
        trajectories = build_trajectories(problems, tokenizer, runner, mix=dict(cfg.mix), seed=cfg.seed)
        built_s = time.perf_counter() - t0
        log(f"[warm-start] {len(trajectories)} SFT trajectories executed in the sandbox ({built_s:.0f}s)")
        sft = SFTConfig(steps=cfg.sft_steps, batch_size=cfg.sft_batch_size, lr=cfg.sft_lr, seed=cfg.seed, log_every=100)
        losses = train_sft(model, trajectories, tokenizer.pad_token_id, sft, log=log) if cfg.sft_steps else []
        records = sample_trajectories(
            model,
            tokenizer,
            make_problems(cfg.calib_problems, seed=20_000 + cfg.seed),
            runner,
            samples_per_problem=cfg.calib_samples,
            response_budget=cfg.response_budget,
            seed=cfg.seed,
        )
    finally:
        close = getattr(runner.tools[runner.tool_name].executor(), "close", None)
        if close is not None:
            close()
    calibration = calibrate(records)
    log(calibration.line())
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _check_reload(model_dir, tokenizer, trajectories[0], runner.schemas)
    tail = losses[-25:]
    result = WarmStart(
        model_dir=str(model_dir),
        calibration=dataclasses.asdict(calibration),
        sft_losses=(losses[0] if losses else float("nan"), sum(tail) / len(tail) if tail else float("nan")),
        build_s=time.perf_counter() - t0,
    )
    meta: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "calibration": result.calibration,
        "sft_losses": list(result.sft_losses),
        "build_s": result.build_s,
        "examples": [r.text for r in records[:6]],
    }
    (path / "warm_start.json").write_text(json.dumps(meta, indent=2))
    return result
