"""The tiny trainer run shared by the end-to-end tests that need no tool calls: ``grporoc.yaml`` on verl's CPU backend,
the tiny random model and arithmetic data (``tiny_assets``), the toy coin reward (``integration/roc_toy_reward.py``:
mixed groups whatever the policy says), console metrics, 2 steps, no validation and no checkpoints. Each test adds
what it is about; a later override of the same key wins (Hydra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grporoc_plugin
from grporoc_plugin.cpu import cpu_overrides

TOY_REWARD = Path(__file__).resolve().parent / "integration" / "roc_toy_reward.py"
CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")


def toy_trainer_command(
    tiny_assets: dict,
    ray_temp_dir: str,
    tmp_path: Path,
    *overrides: str,
    entry: str = "verl.trainer.main_ppo",
    model: str | None = None,
    reward: Path = TOY_REWARD,
    max_prompt_length: int = 64,
    micro_batch: int = 16,
) -> list[str]:
    """``python -m <entry>`` with the shared overrides, then ``overrides``; ``micro_batch`` rows per micro-batch for
    the actor update and the log-prob recomputation."""
    return [
        sys.executable, "-m", entry, f"--config-path={CONFIG_DIR}", "--config-name=grporoc",
        *cpu_overrides(n_gpus=1, ray_temp_dir=ray_temp_dir),
        "algorithm.roc.min_pos=1", "algorithm.roc.min_neg=1",
        f"data.train_files={tiny_assets['train']}", f"data.val_files={tiny_assets['test']}",
        "data.train_batch_size=4", f"data.max_prompt_length={max_prompt_length}", "data.max_response_length=32",
        f"actor_rollout_ref.model.path={model or tiny_assets['model']}", "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch}",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        f"reward.custom_reward_function.path={reward}", "reward.custom_reward_function.name=compute_score",
        "trainer.logger=console", "trainer.val_before_train=False", "trainer.test_freq=-1", "trainer.save_freq=-1",
        "trainer.total_training_steps=2", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        *overrides,
    ]  # fmt: skip
