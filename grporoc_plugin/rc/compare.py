"""RC-GRPO vs GRPO (and RoC, RC-GRPO + RoC) in miniature on CPU, from one RCTP warm start.

    python -m grporoc_plugin.rc.compare --out runs/rc_compare [--arms grpo,roc,rc,rc_roc] [--steps 4]

1. warm start (cached in ``OUT/warmstart``): a small Qwen2 (hidden 128, 4 layers) with the reward tokens
   (:mod:`grporoc_plugin.rc.vocab`), fine-tuned on mixed-quality RCTP data (:mod:`grporoc_plugin.rc.compare_task`,
   labelled and conditioned by :mod:`grporoc_plugin.rc.builder`) with a plain torch loop (``--sft torch``,
   default) or verl's own SFT trainer (``--sft verl``: same data and loss, ~8x the CPU time per step on two cores,
   where 600 steps take tens of minutes); its accuracy under each token is measured by sampling (T = 1) and printed;
2. every arm: stock ``python -m verl.trainer.main_ppo`` (V1, CPU backend, plugin config) from that checkpoint, same
   prompts, seeds, optimizer and step count; the arms differ only in ``algorithm.rc`` / ``algorithm.roc``
   (:data:`ARMS`):

   * ``grpo``: every rollout conditioned on the evaluation token (``p_high=1``): GRPO on the RCTP model as one would
     run it without RC-GRPO's mixing;
   * ``roc``: the same, with GRPO-RoC (2G generated, G kept);
   * ``rc``: RC-GRPO, ``exact_split(0.5)`` tokens per group;
   * ``rc_roc``: RC-GRPO + GRPO-RoC with ``stratify_by=rc_token``;
3. ``OUT/summary.json`` and a table: the share of zero-variance groups (``rc/zero_var_group_share``, over the
   sessions the selection stage sees: G per prompt, 2G with RoC), the within-group std, rollout accuracy overall
   and per token, and held-out accuracy under the evaluation token after the last step.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

__all__ = ["ARMS", "CompareConfig", "arm_overrides", "main", "warm_start"]

#: arm -> algorithm overrides (everything else is shared).
ARMS: dict[str, tuple[str, ...]] = {
    "grpo": ("algorithm.rc.p_high=1.0", "algorithm.roc.enable=False"),
    "roc": ("algorithm.rc.p_high=1.0", "algorithm.roc.enable=True"),
    "rc": ("algorithm.rc.p_high=0.5", "algorithm.roc.enable=False"),
    "rc_roc": ("algorithm.rc.p_high=0.5", "algorithm.roc.enable=True", "algorithm.roc.stratify_by=rc_token"),
}
#: Metrics averaged over the steps of an arm, by summary column.
SUMMARY_METRICS = {
    "zero_var_group_share": "rc/zero_var_group_share",
    "group_std_mean": "rc/group_std_mean",
    "rollout_acc": "rollout/acc",
    "acc_high": "rc/acc_high",
    "acc_low": "rc/acc_low",
    "trained_rows": "roc/rows_kept",
}


@dataclass(frozen=True)
class CompareConfig:
    """Everything the comparison depends on (written to ``OUT/config.json``)."""

    out: str = "runs/rc_compare"
    arms: tuple[str, ...] = ("grpo", "roc", "rc", "rc_roc")
    steps: int = 4
    """RL steps per arm."""
    prompts_per_step: int = 8
    group_size: int = 4
    """G: rollouts trained on per prompt (2G generated with RoC)."""
    lr: float = 1e-4
    seed: int = 0
    sft: str = "torch"
    """torch (a plain loop) or verl (verl.trainer.sft_trainer via torchrun, ~8x the CPU time per step): same data."""
    sft_steps: int = 600
    sft_lr: float = 1e-3
    sft_examples: int = 8000
    timeout_min: float = 20.0
    """Hard limit per trainer run."""


# -------------------------------------------------------------------------------------------------- warm start


def _torch_sft(data: str, model_dir: str, out_dir: Path, cfg: CompareConfig) -> Path:
    """The plain-loop alternative to verl's SFT trainer: the same rendered data and loss (assistant turn only),
    AdamW at a constant learning rate after 20 warm-up steps, one thread (the cores are shared with other jobs)."""
    import random

    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.demo.sft import collate

    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    examples = []
    for messages in pd.read_parquet(data)["messages"]:
        messages = [dict(m) for m in messages]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        reply = tokenizer.encode(messages[-1]["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
        examples.append(SimpleNamespace(input_ids=prompt + reply, loss_mask=[0] * len(prompt) + [1] * len(reply)))
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    model.train()
    for step in range(cfg.sft_steps):
        for group in optim.param_groups:
            group["lr"] = cfg.sft_lr * min(1.0, (step + 1) / 20)
        loss = model(**collate(rng.sample(examples, 32), tokenizer.pad_token_id)).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if (step + 1) % 100 == 0:
            print(f"[sft] step {step + 1}/{cfg.sft_steps} loss {float(loss.detach()):.4f}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def token_accuracy(model_dir: str | Path, samples: int = 90, seed: int = 0) -> dict[str, float]:
    """Accuracy of sampled answers (T = 1) under each token, on the prompts the RL rollout sees."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.rc import compare_task
    from grporoc_plugin.rc.inject import inject_token
    from grporoc_plugin.rc.settings import RCSettings

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    digits = [1 + i % 9 for i in range(samples)]
    result = {}
    for label in ("high", "low"):
        token = RCSettings().token_of(label)
        prompts = []
        for n in digits:
            messages = inject_token([{"role": "user", "content": compare_task.question(n)}], token, "system_suffix")
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            prompts.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
        width = max(map(len, prompts))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = (ids != tokenizer.pad_token_id).long()
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=16,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        result[label] = sum(compare_task.is_correct(t, str(n)) for t, n in zip(texts, digits, strict=True)) / samples
    return result


def warm_start(cfg: CompareConfig) -> Path:
    """The RCTP warm-start checkpoint, built once per setting (cached under ``OUT/warmstart/<key>``)."""
    from grporoc_plugin.demo.assets import build_model, build_tokenizer
    from grporoc_plugin.rc import compare_task
    from grporoc_plugin.rc.builder import build_rctp
    from grporoc_plugin.rc.sft import run_sft
    from grporoc_plugin.rc.vocab import add_reward_tokens

    keys = ("sft", "sft_steps", "sft_lr", "sft_examples", "seed")
    key = hashlib.sha256(json.dumps({k: getattr(cfg, k) for k in keys}).encode()).hexdigest()[:10]
    root = Path(cfg.out) / "warmstart" / key
    done = root / "model"
    if (done / "config.json").exists():
        return done
    base = root / "base"
    build_model(
        str(base),
        build_tokenizer(str(base)),
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        seed=cfg.seed,
    )
    add_reward_tokens(str(base), str(root / "vocab"), seed=cfg.seed)
    report = build_rctp(compare_task.rctp_trajectories(cfg.sft_examples, cfg.seed), root / "rctp.parquet")
    print(f"[warm start] RCTP data: {report.rows} trajectories, high share {report.high_share:.2f}", flush=True)
    started = time.perf_counter()
    if cfg.sft == "verl":
        checkpoint = run_sft(
            str(root / "rctp.parquet"),
            str(root / "vocab"),
            str(root / "sft"),
            steps=cfg.sft_steps,
            batch_size=32,
            lr=cfg.sft_lr,
            max_length=64,
            log_path=root / "sft.log",
        )
        shutil.copytree(checkpoint, done)
    else:
        _torch_sft(str(root / "rctp.parquet"), str(root / "vocab"), done, cfg)
    accuracy = token_accuracy(done)
    (root / "warmstart.json").write_text(json.dumps({"sft_s": time.perf_counter() - started, "acc": accuracy}))
    print(
        f"[warm start] {cfg.sft} SFT {time.perf_counter() - started:.0f}s; sampled accuracy under each token: "
        f"high {accuracy['high']:.2f}, low {accuracy['low']:.2f}",
        flush=True,
    )
    return done


# --------------------------------------------------------------------------------------------------------- arms


def arm_overrides(arm: str, cfg: CompareConfig, model: Path, data: tuple[str, str], out: Path) -> list[str]:
    """Hydra overrides of one arm's ``main_ppo`` run (plugin config ``grporoc``; the CPU backend's are added later)."""
    from grporoc_plugin.rc import compare_task

    g, prompts = cfg.group_size, cfg.prompts_per_step
    return [
        "algorithm.adv_estimator=grpo_roc",
        "algorithm.rc.enable=True",
        "algorithm.roc.min_pos=1",
        "algorithm.roc.min_neg=1",
        f"algorithm.roc.seed={cfg.seed}",
        f"algorithm.rc.seed={cfg.seed}",
        f"data.train_files={data[0]}",
        f"data.val_files={data[1]}",
        f"data.train_batch_size={prompts}",
        "data.max_prompt_length=32",
        "data.max_response_length=16",
        f"data.seed={cfg.seed}",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.actor.optim.lr={cfg.lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={prompts * g}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={prompts * g}",
        f"actor_rollout_ref.rollout.n={g}",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.n=2",
        f"reward.custom_reward_function.path={compare_task.__file__}",
        "reward.custom_reward_function.name=compute_score",
        'trainer.logger=["console","file"]',
        "trainer.val_before_train=False",
        f"trainer.test_freq={cfg.steps}",
        "trainer.save_freq=-1",
        f"trainer.total_training_steps={cfg.steps}",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        *ARMS[arm],
    ]


def run_arm(arm: str, cfg: CompareConfig, model: Path, data: tuple[str, str]) -> list[dict[str, float]]:
    """One arm's trainer run (cleaned up whatever happens); returns its per-step metrics."""
    from grporoc_plugin.cpu import cpu_env, cpu_overrides
    from grporoc_plugin.demo.run import PLUGIN_CONFIG_DIR, new_ray_temp_dir, run_trainer
    from grporoc_plugin.demo.summary import load_metrics

    out = Path(cfg.out) / "arms" / arm
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    ray_dir = new_ray_temp_dir()
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={PLUGIN_CONFIG_DIR}",
        "--config-name=grporoc",
        *arm_overrides(arm, cfg, model, data, out),
        *cpu_overrides(n_gpus=1, ray_temp_dir=ray_dir),
    ]
    env = {**os.environ, **cpu_env(), "VERL_FILE_LOGGER_PATH": str(metrics), "TOKENIZERS_PARALLELISM": "false"}
    try:
        rc = run_trainer(
            cmd,
            out / "trainer.log",
            env=env,
            echo=lambda line: None,
            timeout_s=cfg.timeout_min * 60,
            ray_temp_dir=ray_dir,
        )
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    if rc != 0:
        raise RuntimeError(f"arm {arm}: trainer exited {rc}; see {out / 'trainer.log'}")
    return load_metrics(metrics)


def summarize(steps: list[dict[str, float]]) -> dict[str, float | None]:
    """Step means of :data:`SUMMARY_METRICS` and the held-out accuracy of the last validation."""
    row: dict[str, float | None] = {}
    for column, key in SUMMARY_METRICS.items():
        values = [s[key] for s in steps if key in s]
        row[column] = sum(values) / len(values) if values else None
    vals = [v for s in steps for k, v in s.items() if k.startswith("val-core/") and "/acc/mean@" in k]
    row["val_acc_eval_token"] = vals[-1] if vals else None
    return row


def _table(rows: dict[str, dict[str, float | None]]) -> str:
    columns = [*SUMMARY_METRICS, "val_acc_eval_token"]
    lines = ["| arm | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for arm, row in rows.items():
        cells = ["-" if row[c] is None else f"{row[c]:.3f}" for c in columns]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.rc.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=CompareConfig.out)
    parser.add_argument("--arms", default=",".join(CompareConfig.arms), help=f"comma-separated, from {list(ARMS)}")
    parser.add_argument("--steps", type=int, default=CompareConfig.steps)
    parser.add_argument("--sft", choices=("verl", "torch"), default=CompareConfig.sft)
    parser.add_argument("--sft-steps", type=int, default=CompareConfig.sft_steps)
    parser.add_argument("--seed", type=int, default=CompareConfig.seed)
    args = parser.parse_args(argv)
    arms = tuple(a for a in args.arms.split(",") if a)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {list(ARMS)}")
    cfg = CompareConfig(
        out=args.out, arms=arms, steps=args.steps, sft=args.sft, sft_steps=args.sft_steps, seed=args.seed
    )
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    from grporoc_plugin.rc import compare_task

    model = warm_start(cfg)
    data = compare_task.write_rl_data(Path(cfg.out) / "data", seed=cfg.seed + 1)
    rows = {}
    for arm in cfg.arms:
        started = time.perf_counter()
        rows[arm] = summarize(run_arm(arm, cfg, model, data))
        print(f"[{arm}] {cfg.steps} steps in {time.perf_counter() - started:.0f}s: {rows[arm]}", flush=True)
    warm = json.loads((model.parent / "warmstart.json").read_text())
    summary = {"config": dataclasses.asdict(cfg), "warm_start": warm, "arms": rows}
    (Path(cfg.out) / "summary.json").write_text(json.dumps(summary, indent=2))
    print(_table(rows))
    return summary


if __name__ == "__main__":
    main()
