"""RC-GRPO + RoC (stratified by token) + DAPO filter_groups in one stock ``verl.trainer.main_ppo`` V1 run (CPU).

The tiny demo model gets the reward tokens from the vocab tool; the manager (the plugin's RoC oversampling manager)
draws exact_split(0.5) tokens over the 8 sessions of every prompt, the workers put them into ``prompt_ids``, RoC keeps
G = 4 per group with the token mix of each sign, and the selection stage reports ``rc/*``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from trainer_log import metric as _metric

import grporoc_plugin
from grporoc_plugin.cpu import cpu_overrides

TOY_REWARD = Path(__file__).resolve().parents[1] / "integration" / "roc_toy_reward.py"
CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")
PROMPTS, G, OVERSAMPLE = 4, 4, 8


@pytest.mark.slow
def test_v1_main_ppo_with_rc_grpo_and_stratified_roc(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    from grporoc_plugin.rc.vocab import add_reward_tokens

    model = tmp_path / "tiny_rc"
    add_reward_tokens(tiny_assets["model"], str(model))
    cmd = [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={CONFIG_DIR}",
        "--config-name=grporoc",
        *cpu_overrides(n_gpus=1, ray_temp_dir=ray_temp_dir),
        "algorithm.rc.enable=True",
        "algorithm.rc.p_high=0.5",
        "algorithm.roc.stratify_by=rc_token",
        "algorithm.roc.min_pos=1",
        "algorithm.roc.min_neg=1",
        f"algorithm.roc.oversample_n={OVERSAMPLE}",
        "algorithm.filter_groups.enable=True",
        "algorithm.filter_groups.metric=acc",
        f"actor_rollout_ref.rollout.n={G}",
        f"data.train_files={tiny_assets['train']}",
        f"data.val_files={tiny_assets['test']}",
        f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=96",
        "data.max_response_length=32",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={PROMPTS * G}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={PROMPTS * G}",
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
    steps, output = run_trainer(cmd, tmp_path, "e2e rc-grpo")
    assert "RC-GRPO: the token" not in output  # no token lost to prompt truncation
    for step in (1, 2):
        line = steps[step]
        # every rollout's prompt_ids (rollout and log-prob recomputation) holds its token; every group has both
        assert _metric(line, "rc/token_in_prompt_share") == 1.0
        assert _metric(line, "rc/groups_mixed_tokens_share") == 1.0
        assert _metric(line, "rc/high_share") == 0.5  # exact_split(0.5): 4 + 4 of every 8 sessions
        for key in ("rc/acc_high", "rc/acc_low", "rc/zero_var_group_share", "rc/group_std_mean"):
            assert 0.0 <= _metric(line, key) <= 1.0
        # the kept token mix per sign after RoC is reported
        assert 0.0 <= _metric(line, "rc/kept_pos_high_share") <= 1.0
        assert 0.0 <= _metric(line, "rc/kept_neg_high_share") <= 1.0
        # RoC cut the 8 sessions of each of DAPO's mixed groups to G = 4, whole groups
        assert _metric(line, "roc/rows_before") == PROMPTS * OVERSAMPLE
        assert _metric(line, "roc/rows_kept") == G * _metric(line, "roc/groups_kept") > 0
        # the rollout's log-probs equal the actor's recomputation on the same (conditioned) prompt_ids
        assert _metric(line, "training/rollout_probs_diff_max") < 1e-3
        assert _metric(line, "actor/grad_norm") > 0
