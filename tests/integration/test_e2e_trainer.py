"""GRPO-RoC inside stock verl runs on the CPU backend: V1 (``verl.trainer.main_ppo``) and V0, 2 steps each."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from trainer_log import metric as _metric

import grporoc_plugin
from grporoc_plugin.cpu import cpu_overrides

TOY_REWARD = Path(__file__).with_name("roc_toy_reward.py")
CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")


def _common(tiny_assets, ray_temp_dir, tmp_path) -> list[str]:
    return [
        f"--config-path={CONFIG_DIR}",
        "--config-name=grporoc",
        *cpu_overrides(n_gpus=1, ray_temp_dir=ray_temp_dir),
        "algorithm.adv_estimator=grpo_roc",
        "algorithm.roc.min_pos=1",
        "algorithm.roc.min_neg=1",
        f"data.train_files={tiny_assets['train']}",
        f"data.val_files={tiny_assets['test']}",
        "data.train_batch_size=4",
        "data.max_prompt_length=64",
        "data.max_response_length=32",
        f"actor_rollout_ref.model.path={tiny_assets['model']}",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "reward.custom_reward_function.name=compute_score",
        "trainer.logger=console",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.total_training_steps=2",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]


@pytest.mark.slow
def test_v1_main_ppo_with_roc_sampler_and_oversampling(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        *_common(tiny_assets, ray_temp_dir, tmp_path),
        "trainer.use_v1=True",
        "actor_rollout_ref.rollout.n=4",
        "algorithm.roc.oversample_n=8",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    ]
    steps, _ = run_trainer(cmd, tmp_path, "e2e roc")
    for step in (1, 2):
        line = steps[step]
        # the manager generated 8 sessions per prompt; the sampler kept G = 4 per surviving prompt before old-log-prob
        assert _metric(line, "roc/rows_before") == 4 * 8
        kept, groups = _metric(line, "roc/rows_kept"), _metric(line, "roc/groups_kept")
        assert 0 < kept < 32 and kept == 4 * groups  # whole groups of exactly G sessions, none split
        assert _metric(line, "critic/advantages/max") > 0 > _metric(line, "critic/advantages/min")
        assert _metric(line, "actor/grad_norm") > 0, "zero gradient: RoC left no advantage signal"
        # verl's own weight-sync check on the CPU backend: HF rollout server log-probs vs the actor's recomputed ones
        assert _metric(line, "training/rollout_probs_diff_max") < 1e-3, "rollout weights out of sync"


@pytest.mark.slow
def test_v0_main_with_roc_balance_batch(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "grporoc_plugin.v0.main",
        *_common(tiny_assets, ray_temp_dir, tmp_path),
        "trainer.use_v1=False",
        # V0 repeats prompts rollout.n times: rollout.n = 2G, keep G = 4; mini-batch = 2 * 8 rows = the kept 16
        "actor_rollout_ref.rollout.n=8",
        "algorithm.roc.keep_n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    ]
    steps, _ = run_trainer(cmd, tmp_path, "e2e roc")
    for step in (1, 2):
        line = steps[step]
        assert _metric(line, "roc/rows_before") == 4 * 8
        kept, groups = _metric(line, "roc/rows_kept"), _metric(line, "roc/groups_kept")
        assert 0 < kept < 32 and kept == 4 * groups
        assert _metric(line, "critic/advantages/max") > 0 > _metric(line, "critic/advantages/min")
        assert _metric(line, "actor/grad_norm") > 0
