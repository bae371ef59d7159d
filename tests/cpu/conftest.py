"""Fixtures for the CPU backend's server tests: a private local Ray and a tiny random reward model."""

from __future__ import annotations

import shutil
import tempfile

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray (own short temp dir; the plugin stays inert in its workers: no VERL_PLATFORM)."""
    ray = pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="grr_", dir="/tmp")  # Unix socket paths must stay < 108 chars
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_assets, tmp_path_factory) -> str:
    """A random ``Qwen2ForSequenceClassification`` (1 label) with the demo tokenizer, saved to a directory."""
    from transformers import AutoTokenizer

    from grporoc_plugin.demo.assets import build_reward_model

    out = str(tmp_path_factory.mktemp("tiny_rm"))
    build_reward_model(out, AutoTokenizer.from_pretrained(tiny_assets["model"]))
    return out
