"""RC-GRPO + RoC (stratified by token) + DAPO filter_groups in one stock ``verl.trainer.main_ppo`` V1 run (CPU).

The tiny demo model gets the reward tokens from the vocab tool; the manager (the plugin's RoC oversampling manager)
draws exact_split(0.5) tokens over the 8 sessions of every prompt, the workers put them into ``prompt_ids``, RoC keeps
G = 4 per group with the token mix of each sign, and the selection stage reports ``rc/*``.
"""

from __future__ import annotations

import pytest
from toy_trainer import toy_trainer_command
from trainer_log import metric as _metric

PROMPTS, G, OVERSAMPLE = 4, 4, 8


@pytest.mark.slow
def test_v1_main_ppo_with_rc_grpo_and_stratified_roc(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    from grporoc_plugin.rc.vocab import add_reward_tokens

    model = tmp_path / "tiny_rc"
    add_reward_tokens(tiny_assets["model"], str(model))
    cmd = toy_trainer_command(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "algorithm.rc.enable=True",
        "algorithm.rc.p_high=0.5",
        "algorithm.roc.stratify_by=rc_token",
        f"algorithm.roc.oversample_n={OVERSAMPLE}",
        "algorithm.filter_groups.enable=True",
        "algorithm.filter_groups.metric=acc",
        f"actor_rollout_ref.rollout.n={G}",
        f"data.train_batch_size={PROMPTS}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS}",
        model=str(model),
        max_prompt_length=96,
        micro_batch=PROMPTS * G,
    )
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
