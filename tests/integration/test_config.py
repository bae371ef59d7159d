"""GRPO-RoC settings: parsing, fail-fast validation, hydra composition of grporoc.yaml, verl's replay-buffer wiring."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

import grporoc_plugin
from grporoc_plugin.adapter import RoCStage, Sessions
from grporoc_plugin.config import RoCConfigError, resolve_settings, validate_run_config

CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")


def compose(*overrides: str):
    """Compose grporoc.yaml in-process exactly as ``main_ppo --config-path CONFIG_DIR --config-name grporoc``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="grporoc", overrides=list(overrides))


SMALL = (
    "actor_rollout_ref.rollout.n=4",
    "algorithm.roc.min_pos=1",
    "algorithm.roc.min_neg=1",
    "data.train_batch_size=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "trainer.n_gpus_per_node=2",
    "actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent",
)


def test_yaml_composes_through_main_ppo_cfg_job():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl.trainer.main_ppo",
            "--config-path",
            CONFIG_DIR,
            "--config-name",
            "grporoc",
            "--cfg",
            "job",
            "algorithm.roc.oversample_n=12",
            "actor_rollout_ref.rollout.n=6",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    cfg = OmegaConf.create(out[out.index("actor_rollout_ref:") :] if out.startswith("#") else out)
    settings = resolve_settings(cfg.algorithm.roc, rollout_n=cfg.actor_rollout_ref.rollout.n)
    assert (settings.oversample_n, settings.keep_n) == (12, 6)
    assert cfg.trainer.v1.sampler.custom_sampler.name == "RoCReplayBuffer"
    assert cfg.actor_rollout_ref.rollout.agent.agent_loop_manager_class.endswith("RoCAgentLoopManagerTQ")
    assert cfg.actor_rollout_ref.actor.clip_ratio_high == 0.28


def test_an_agent_loop_without_tool_counters_is_flagged_at_start_up():
    cfg = compose(*SMALL, "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent")
    warnings = validate_run_config(cfg, resolve_settings(cfg.algorithm.roc, rollout_n=4))
    assert len(warnings) == 1 and "default_agent_loop='tool_agent' does not record the tool counters" in warnings[0]
    off = compose(*SMALL, "actor_rollout_ref.rollout.agent.default_agent_loop=tool_agent",
                  "algorithm.roc.use_error_ratio=False", "algorithm.roc.use_answer_format=False")  # fmt: skip
    assert validate_run_config(off, resolve_settings(off.algorithm.roc, rollout_n=4)) == []


def test_sampler_reads_algorithm_roc_of_the_trainer_config():
    """One config source: the sampler takes algorithm.roc from the trainer's config, not from a copy of it."""
    import grporoc_plugin.register  # noqa: F401

    cfg = compose(*SMALL, "algorithm.roc.seed=7")
    assert "roc" not in (cfg.trainer.v1.sampler.get("sampler_kwargs") or {})
    OmegaConf.resolve(cfg)
    assert _trainer_for_replay_buffer(cfg)._build_replay_buffer().settings.seed == 7


def test_defaults_and_group_sizes():
    cfg = compose(*SMALL)
    s = resolve_settings(cfg.algorithm.roc, rollout_n=4)
    assert (s.keep_n, s.oversample_n, s.correct_key) == (4, 8, "acc")
    assert s.roc_config().keep_n == 4 and s.penalty_config().no_tool_p_err == 0.5
    v0 = resolve_settings(cfg.algorithm.roc, rollout_n=8, trainer="v0")
    assert (v0.keep_n, v0.oversample_n) == (4, 8)
    assert validate_run_config(cfg, s) == []


@pytest.mark.parametrize(
    ("roc", "rollout_n", "trainer", "key"),
    [
        ({"bogus": 1}, 4, "v1", "algorithm.roc.bogus"),
        ({"oversample_n": 3}, 4, "v1", "algorithm.roc.oversample_n"),
        ({"keep_n": 2}, 4, "v1", "algorithm.roc.keep_n"),
        ({"oversample_n": 16}, 8, "v0", "algorithm.roc.oversample_n"),
        ({"min_pos": 5, "min_neg": 1}, 4, "v1", "min_pos"),
        ({"min_pos": 3, "min_neg": 3}, 4, "v1", "algorithm.roc.min_neg must be <= keep_n"),
        ({"empty_batch": "skip"}, 4, "v1", "algorithm.roc.empty_batch"),
        ({"correct_threshold": "x"}, 4, "v1", "algorithm.roc.correct_threshold"),
        ({"positive_mode": "best", "min_pos": 1, "min_neg": 1}, 4, "v1", "positive_mode"),
        ({"world_size": 2}, 4, "v1", "algorithm.roc.world_size"),
    ],
)
def test_bad_settings_fail_naming_the_key(roc, rollout_n, trainer, key):
    with pytest.raises(RoCConfigError, match=key.replace(".", r"\.")):
        resolve_settings(roc, rollout_n=rollout_n, trainer=trainer)


@pytest.mark.parametrize(
    ("overrides", "trainer", "key"),
    [
        (("data.train_batch_size=3",), "v1", "ppo_mini_batch_size"),  # 12 rows vs lcm(2, 8)
        (("algorithm.adv_estimator=not_registered",), "v1", "algorithm.adv_estimator"),
        (("trainer.v1.trainer_mode=colocate_async",), "v1", "trainer.v1.trainer_mode"),
        (("reward.reward_model.enable=True",), "v1", "grporoc_sync"),
        (("algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=null"), "v1", "filter_groups.metric"),
        (("trainer.balance_batch=False",), "v0", "trainer.balance_batch"),
        (("algorithm.filter_groups.enable=True",), "v0", "algorithm.filter_groups.enable"),
        (("actor_rollout_ref.actor.ppo_mini_batch_size=4",), "v0", "ppo_mini_batch_size"),
    ],
)
def test_bad_run_config_fails_naming_the_key(overrides, trainer, key):
    import grporoc_plugin.register  # noqa: F401 - the entry point, as in every verl process

    cfg = compose(*SMALL, *overrides)
    n = cfg.actor_rollout_ref.rollout.n * (2 if trainer == "v0" else 1)
    with open_dict(cfg):
        cfg.actor_rollout_ref.rollout.n = n
    settings = resolve_settings(cfg.algorithm.roc, rollout_n=n, trainer=trainer)
    with pytest.raises(RoCConfigError, match=key.replace(".", r"\.")):
        validate_run_config(cfg, settings, trainer=trainer)


def test_v0_mini_batch_rule_accepts_kept_batch_sizing():
    import grporoc_plugin.register  # noqa: F401

    # V0: rollout.n = 8 (2G), G = 4; kept rows 4*4 = 16 = 2 updates of ppo_mini_batch_size(1) * rollout.n(8)
    cfg = compose(*SMALL, "actor_rollout_ref.rollout.n=8", "actor_rollout_ref.actor.ppo_mini_batch_size=1")
    settings = resolve_settings(cfg.algorithm.roc, rollout_n=8, trainer="v0")
    assert validate_run_config(cfg, settings, trainer="v0") == []


def _trainer_for_replay_buffer(cfg):
    """A PPOTrainerSync carrying only its config, as verl's own V1 CPU tests build it (``__new__``)."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    trainer = PPOTrainerSync.__new__(PPOTrainerSync)
    trainer.config = cfg
    trainer.trainer_mode = cfg.trainer.v1.trainer_mode
    return trainer


def test_verl_builds_the_sampler_and_wires_dapo_filter_groups():
    import grporoc_plugin.register  # noqa: F401
    from grporoc_plugin.v1.sampler import RoCReplayBuffer

    cfg = compose(*SMALL, "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc")
    OmegaConf.resolve(cfg)  # TaskRunnerV1.run resolves before building the trainer
    buffer = _trainer_for_replay_buffer(cfg)._build_replay_buffer()
    assert isinstance(buffer, RoCReplayBuffer)
    assert (buffer.filter_groups_metric, buffer.gen_batch_size, buffer.train_batch_size) == ("acc", 1, 4)
    assert buffer.settings.keep_n == 4 and buffer.stage.reward_manager == "naive"

    plain = compose(*SMALL)
    OmegaConf.resolve(plain)
    assert _trainer_for_replay_buffer(plain)._build_replay_buffer().filter_groups_metric is None


def test_plain_verl_config_with_plus_overrides():
    """The same switches as ``+`` overrides on verl's own ppo_trainer.yaml (no plugin yaml)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import grporoc_plugin.register  # noqa: F401

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        cfg = hydra_compose(
            config_name="ppo_trainer",
            overrides=[
                "actor_rollout_ref.rollout.n=4",
                "data.train_batch_size=4",
                "actor_rollout_ref.actor.ppo_mini_batch_size=2",
                "algorithm.adv_estimator=grpo",
                "+algorithm.roc.enable=true",
                "+algorithm.roc.oversample_n=8",
                "+algorithm.roc.min_pos=1",
                "+algorithm.roc.min_neg=1",
                "trainer.v1.sampler.custom_sampler.path=pkg://grporoc_plugin.v1.sampler",
                "trainer.v1.sampler.custom_sampler.name=RoCReplayBuffer",
                "+actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                "grporoc_plugin.v1.manager.RoCAgentLoopManagerTQ",
            ],
        )
    buffer = _trainer_for_replay_buffer(cfg)._build_replay_buffer()
    assert (buffer.settings.oversample_n, buffer.settings.keep_n) == (8, 4)


def test_grporoc_sync_trainer_registers_lazily():
    code = (
        "import sys, verl;"
        "assert 'grporoc_plugin.v1.trainer' not in sys.modules;"
        "from verl.trainer.ppo.v1 import get_trainer_cls; print(get_trainer_cls('grporoc_sync').__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().endswith("RoCTrainerSync")


def test_bad_roc_setting_fails_in_the_driver_before_ray_starts(tmp_path):
    """grporoc.yaml's Hydra callback checks algorithm.roc before main_ppo starts Ray (issue 10.3)."""
    from grporoc_plugin.demo.run import PLUGIN_CONFIG_DIR

    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={PLUGIN_CONFIG_DIR}", "--config-name=grporoc",
           "algorithm.roc.min_pos=99", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode != 0
    assert "grporoc: invalid configuration: algorithm.roc.min_pos must be <= keep_n (16), got 99" in out.stderr
    assert "Ray" not in out.stdout + out.stderr.replace("ray actor", "")  # no ray.init, no Ray cluster started


def test_importing_the_sampler_first_still_registers_grporoc_sync():
    """Issue 7.6: sampler -> verl's V1 package -> the plugin's import hook -> v1/trainer.py must not need the
    half-loaded sampler module (it once did, so grporoc_sync was never registered: a warning only)."""
    code = (
        "import grporoc_plugin.v1.sampler;"
        "from verl.trainer.ppo.v1 import get_trainer_cls; print(get_trainer_cls('grporoc_sync').__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("RoCTrainerSync")
    assert "could not register trainer mode" not in out.stderr


def test_disabled_roc_keeps_everything_and_reports_what_it_would_do():
    groups = ["a"] * 8 + ["b"] * 8
    correct = [1, 1, 0, 0, 0, 0, 0, 0] + [1] * 8
    on = RoCStage(resolve_settings({"min_pos": 1, "min_neg": 1}, rollout_n=4, trainer="v1"))
    off = RoCStage(resolve_settings({"enable": False, "min_pos": 1, "min_neg": 1}, rollout_n=4, trainer="v1"))

    def sessions():
        return Sessions(groups, np.array(correct, dtype=float), [{}] * 16)

    kept_on, m_on = on.select(sessions(), step=0)
    kept_off, m_off = off.select(sessions(), step=0)

    assert len(kept_on) == 4 and list(kept_off) == list(range(16))
    assert m_off["roc/rows_kept"] == 16 and m_off["roc/rows_dropped"] == 0
    assert m_off["roc/if_enabled/rows_kept"] == m_on["roc/rows_kept"] == 4
