"""``cpu_overrides()`` composes with verl's own ``ppo_trainer`` config (every key exists, values land)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from grporoc_plugin.cpu import cpu_env, cpu_overrides


def test_cpu_overrides_compose_with_ppo_trainer():
    overrides = cpu_overrides(n_gpus=2, num_cpus=12, ray_temp_dir="/tmp/grr_x")
    with initialize_config_module("verl.trainer.config", version_base=None):
        config = compose("ppo_trainer", overrides=overrides)  # raises on any unknown/renamed key
    assert config.trainer.device == "cpu" and config.trainer.n_gpus_per_node == 2
    assert config.ray_kwargs.ray_init.num_gpus == 2 and config.ray_kwargs.ray_init.num_cpus == 12
    assert config.ray_kwargs.ray_init._temp_dir == "/tmp/grr_x"
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert cpu_env() == {"VERL_PLATFORM": "cpu"}


def test_zero_fake_gpus_is_rejected():
    with pytest.raises(ValueError, match="n_gpus"):
        cpu_overrides(n_gpus=0)
