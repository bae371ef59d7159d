"""GRPO-RoC composed with other verl features in one stock ``verl.trainer.main_ppo`` V1 run on the CPU backend.

``test_roc_with_dapo_rloo_gspo``: the RoC sampler + oversampling manager, DAPO ``algorithm.filter_groups`` (metric
``acc``, refilling evicted groups), the RLOO estimator and the GSPO policy loss with clip-higher, 2 steps.
``test_grporoc_sync_trainer_mode``: selection in ``RoCTrainerSync._balance_batch`` instead of the sampler, 2 steps.

Reward: the toy coin of ``roc_toy_reward.py`` (mixed groups), except that odd-index prompts are "too hard" (every
session wrong). Those groups are all-equal on ``acc``: DAPO must evict and refill them before RoC sees the batch.
"""

from __future__ import annotations

import pytest
from toy_trainer import CONFIG_DIR, TOY_REWARD, toy_trainer_command
from trainer_log import metric as _metric

PROMPTS, G, OVERSAMPLE = 4, 4, 8

HARD_ODD_REWARD = f'''"""roc_toy_reward, but odd-index prompts are never solved (all-equal groups for DAPO to evict)."""
import importlib.util

_spec = importlib.util.spec_from_file_location("roc_toy_reward", {str(TOY_REWARD)!r})
_toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_toy)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    out = _toy.compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    if int(extra_info["index"]) % 2:
        out = {{**out, "score": 0.0, "acc": 0.0}}
    return out
'''


def _cmd(tiny_assets, ray_temp_dir, tmp_path, *overrides: str, mini: int = PROMPTS) -> list[str]:
    """main_ppo on grporoc.yaml, CPU backend, RoC with oversampling; ``mini`` = ppo_mini_batch_size (prompts)."""
    reward = tmp_path / "hard_odd_reward.py"
    reward.write_text(HARD_ODD_REWARD)
    return toy_trainer_command(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "trainer.use_v1=True",
        f"algorithm.roc.oversample_n={OVERSAMPLE}",
        f"actor_rollout_ref.rollout.n={G}",
        f"data.train_batch_size={PROMPTS}",
        "data.shuffle=False",  # prompts 0, 1, 2, ... in order: which groups are all-wrong is known
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        *overrides,
        reward=reward,
        micro_batch=mini * G,  # one micro-batch per mini-batch
    )


@pytest.mark.slow
def test_roc_with_dapo_rloo_gspo(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    cmd = _cmd(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "algorithm.adv_estimator=rloo",
        "algorithm.filter_groups.enable=True",
        "algorithm.filter_groups.metric=acc",
        "actor_rollout_ref.actor.policy_loss.loss_mode=gspo",
        "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",  # GSPO's sequence-level aggregation
        "actor_rollout_ref.actor.clip_ratio_low=0.2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
    )
    steps, output = run_trainer(cmd, tmp_path, "e2e composition")
    assert "grporoc: RoC sampler active" in output
    # the resolved config verl printed: GSPO with its sequence-level aggregation reached the actor
    assert "'loss_mode': 'gspo'" in output and "'loss_agg_mode': 'seq-mean-token-mean'" in output
    for step in (1, 2):
        line = steps[step]
        # DAPO evicts the step's 2 odd (all-wrong) prompts and refills 2k; how many refilled odd prompts it also
        # evicts before 4 good groups are in depends on completion order, so only the lower bound is exact
        assert _metric(line, "training/filter_groups/evicted_samples") >= 2
        # RoC then sees only DAPO's 4 mixed groups of 8 sessions and cuts each to G = 4 before old-log-prob
        assert _metric(line, "roc/rows_before") == PROMPTS * OVERSAMPLE
        assert _metric(line, "roc/groups_rejected_all_wrong") == 0
        assert _metric(line, "roc/groups_kept") == PROMPTS
        assert _metric(line, "roc/rows_kept") == PROMPTS * G
        # RLOO on binary rewards in groups of G = 4: every advantage is a multiple of 1/3 in [-1, 1] (GRPO's
        # std-normalised values, e.g. 1.5 / 0.866 / 0.5, never are), and a mixed group has a positive and a negative
        for key, sign in (("critic/advantages/max", 1), ("critic/advantages/min", -1)):
            value = sign * _metric(line, key)
            assert 0 < value <= 1 + 1e-5 and abs(3 * value - round(3 * value)) < 1e-4, f"{key}={value}: not RLOO"
        assert _metric(line, "actor/grad_norm") > 0, "zero gradient: no advantage signal reached GSPO"


@pytest.mark.slow
def test_grporoc_sync_trainer_mode(tiny_assets, ray_temp_dir, run_trainer, tmp_path):
    cmd = _cmd(
        tiny_assets,
        ray_temp_dir,
        tmp_path,
        "algorithm.adv_estimator=grpo_roc",
        "trainer.v1.trainer_mode=grporoc_sync",
        "trainer.v1.sampler.custom_sampler.path=null",  # verl's own sampler; RoC runs in _balance_batch
        "trainer.v1.sampler.custom_sampler.name=null",
        "algorithm.roc.empty_batch=keep_one",
        mini=2,  # the 2 kept groups = 8 rows = one mini-batch of 2 * G: no padding rows
    )
    steps, output = run_trainer(cmd, tmp_path, "e2e composition")
    assert "grporoc: RoC sampler active" not in output
    both_mixed = 0
    for step in (1, 2):
        line = steps[step]
        # The 2 odd groups are all wrong (no DAPO here): RoC drops them whole and keeps G of each mixed group. The
        # even groups are mixed by a coin per response: all 8 alike happens (~1 % per group; seen once in CI), and
        # such a group is dropped too.
        assert _metric(line, "roc/rows_before") == PROMPTS * OVERSAMPLE
        wrong, right = _metric(line, "roc/groups_rejected_all_wrong"), _metric(line, "roc/groups_rejected_all_correct")
        assert wrong >= 2
        mixed = PROMPTS - wrong - right
        if mixed:
            assert _metric(line, "roc/groups_kept") == mixed and _metric(line, "roc/rows_kept") == mixed * G
            assert _metric(line, "actor/grad_norm") > 0
        else:  # every group rejected: one zero-advantage group, counted as what is trained on
            assert _metric(line, "roc/empty_batch_kept_one") == 1 and _metric(line, "roc/rows_kept") == G
        both_mixed += mixed == 2
    assert both_mixed, "no step with both even groups mixed (by chance only if both steps were unlucky)"


def test_micro_batch_that_kept_rows_cannot_fill_fails_at_start_up():
    """The first version of the run above (mini 2 * G = 8 kept rows, micro 16) crashed mid-run; now it is refused."""
    from hydra import compose, initialize_config_dir

    from grporoc_plugin.config import RoCConfigError, resolve_settings, validate_run_config

    def check(micro: int) -> None:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose(
                config_name="grporoc",
                overrides=[
                    f"actor_rollout_ref.rollout.n={G}",
                    f"data.train_batch_size={PROMPTS}",
                    "trainer.n_gpus_per_node=1",
                    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
                    f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
                    "algorithm.roc.min_pos=1",
                    "algorithm.roc.min_neg=1",
                ],
            )
        validate_run_config(cfg, resolve_settings(cfg.algorithm.roc, rollout_n=G), trainer="v1")

    check(8)  # divides the 8-row unit: fine
    with pytest.raises(RoCConfigError, match=r"actor_rollout_ref\.rollout\.log_prob_micro_batch_size_per_gpu=16"):
        check(16)  # a full batch (16 rows) would fit, a step that keeps 2 of 4 groups would not
