"""The miniature comparison's pieces: its reward, its data, and every arm's config against the plugin's checks."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import grporoc_plugin
from grporoc_plugin.rc import compare_task
from grporoc_plugin.rc.compare import ARMS, CompareConfig, arm_overrides

CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")


def test_reward_reads_the_last_boxed_answer():
    assert compare_task.compute_score("s", "<answer>\\boxed{7}</answer>", "7") == {"score": 1.0, "acc": 1.0}
    assert compare_task.compute_score("s", "\\boxed{7} then \\boxed{3}", "7")["acc"] == 0.0
    assert compare_task.compute_score("s", "seven", "7")["acc"] == 0.0


def test_rctp_trajectories_are_mixed_quality_with_the_right_labels():
    rows = compare_task.rctp_trajectories(400, seed=0)
    assert 0.4 < sum(r["reward"] for r in rows) / 400 < 0.6
    for row in rows:
        asked = row["messages"][0]["content"].split()[-1].rstrip("?")
        assert compare_task.is_correct(row["messages"][1]["content"], asked) == (row["reward"] == 1.0)


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_is_a_valid_run_config(arm, tmp_path):
    from hydra import compose, initialize_config_dir

    from grporoc_plugin.config import resolve_settings, validate_run_config
    from grporoc_plugin.cpu import cpu_overrides

    data = compare_task.write_rl_data(tmp_path, n_train=8, n_val=4)
    assert len(pd.read_parquet(data[0])) == 8
    cfg = CompareConfig()
    overrides = [*arm_overrides(arm, cfg, Path("/m"), data, tmp_path), *cpu_overrides(n_gpus=1)]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        config = compose(config_name="grporoc", overrides=[o for o in overrides if not o.startswith("+ray")])
    settings = resolve_settings(config.algorithm.roc, rollout_n=cfg.group_size)
    validate_run_config(config, settings, trainer="v1")
    assert config.algorithm.rc.enable and settings.enable == ("roc" in arm)
    assert config.algorithm.rc.p_high == (0.5 if arm.startswith("rc") else 1.0)
