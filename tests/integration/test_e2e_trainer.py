"""GRPO-RoC inside stock verl runs on the CPU backend: V1 (``verl.trainer.main_ppo``) and V0, 2 steps each."""

from __future__ import annotations

import pytest
from toy_trainer import toy_trainer_command
from trainer_log import metric as _metric


def _command(tiny_assets, ray_temp_dir, tmp_path, *overrides: str, entry: str = "verl.trainer.main_ppo") -> list[str]:
    return toy_trainer_command(
        tiny_assets, ray_temp_dir, tmp_path, "algorithm.adv_estimator=grpo_roc", *overrides, entry=entry
    )


@pytest.mark.slow
def test_v1_main_ppo_with_roc_sampler_and_oversampling(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    cmd = _command(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "trainer.use_v1=True",
        "actor_rollout_ref.rollout.n=4",
        "algorithm.roc.oversample_n=8",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    )
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
    cmd = _command(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "trainer.use_v1=False",
        # V0 repeats prompts rollout.n times: rollout.n = 2G, keep G = 4; mini-batch = 2 * 8 rows = the kept 16
        "actor_rollout_ref.rollout.n=8",
        "algorithm.roc.keep_n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        entry="grporoc_plugin.v0.main",
    )
    steps, _ = run_trainer(cmd, tmp_path, "e2e roc")
    for step in (1, 2):
        line = steps[step]
        assert _metric(line, "roc/rows_before") == 4 * 8
        kept, groups = _metric(line, "roc/rows_kept"), _metric(line, "roc/groups_kept")
        assert 0 < kept < 32 and kept == 4 * groups
        assert _metric(line, "critic/advantages/max") > 0 > _metric(line, "critic/advantages/min")
        assert _metric(line, "actor/grad_norm") > 0
