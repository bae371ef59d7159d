"""The GPU recipes in example_configs/ (and the CPU demo's overrides) compose with verl's schema and validate.

Each recipe script runs for real (its stage / GPU-count switches included) with ``$PYTHON`` pointed at a recorder that
captures the ``-m verl.trainer.main_ppo`` command line; that command is then composed in-process with hydra's compose
API (same config dir, config name and overrides) and checked with verl's own GPU-free validation
(``validate_config``, ``omega_conf_to_dataclass`` of the actor/rollout sections), the plugin's own
(``resolve_settings`` + ``validate_run_config``) and verl's tool loader on the referenced tool config. One test runs
the real ``python -m verl.trainer.main_ppo ... --cfg job`` end to end. ~40 s in all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.tools.tool_registry import initialize_tools_from_config
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.workers.config import FSDPActorConfig, RolloutConfig

from grporoc_plugin.config import resolve_settings, roc_section, validate_run_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "example_configs"


def record_main_ppo_argv(script: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run a recipe script with a ``$PYTHON`` that records the main_ppo argv (other python calls run for real)."""
    argv_file = tmp_path / "argv"
    recorder = tmp_path / "python"
    recorder.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = "-m" ]; then printf "%s\\0" "$@" > "$ARGV_FILE"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    recorder.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(RECIPES / script)],
        env={**os.environ, "PYTHON": str(recorder), "ARGV_FILE": str(argv_file), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    argv = argv_file.read_text().split("\0")[:-1]
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"], argv[:2]
    return argv[2:]


def compose_main_ppo_args(args: list[str]):
    """Compose ``main_ppo`` command-line arguments the way its ``@hydra.main`` would, in this process."""
    config_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--config-path="))
    config_name = next(a.split("=", 1)[1] for a in args if a.startswith("--config-name="))
    overrides = [a for a in args if not a.startswith("--")]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def compose_script(script: str, env: dict[str, str], tmp_path: Path):
    return compose_main_ppo_args(record_main_ppo_argv(script, env, tmp_path))


def validate_everything(cfg) -> None:
    """What main_ppo validates on the driver plus the sections workers convert, plus the plugin's checks."""
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert isinstance(omega_conf_to_dataclass(cfg.actor_rollout_ref.actor), FSDPActorConfig)
    assert isinstance(omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout), RolloutConfig)
    settings = resolve_settings(roc_section(cfg), rollout_n=cfg.actor_rollout_ref.rollout.n)
    assert validate_run_config(cfg, settings) == []
    tools = initialize_tools_from_config(cfg.actor_rollout_ref.rollout.multi_turn.tool_config_path)
    assert [t.name for t in tools] == ["python_code_with_standard_io"]
    assert not need_reference_policy(cfg) and not need_critic(cfg)  # no KL -> no reference model; GRPO -> no critic


def assert_paper_algorithm(cfg) -> None:
    """GRPO-RoC as in the paper: loss, optimizer, sampling, tools, reward, RoC wiring."""
    actor, rollout, algo = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout, cfg.algorithm
    assert algo.adv_estimator == "grpo_roc" and algo.roc.enable is True
    assert algo.use_kl_in_reward is False and actor.use_kl_loss is False and actor.kl_loss_coef == 0
    assert actor.entropy_coeff == 0 and actor.loss_agg_mode == "token-mean"
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (0.2, 0.28)
    assert actor.optim.lr == 1e-6 and actor.optim.lr_warmup_steps == 20
    assert actor.optim.lr_scheduler_type == "constant" and actor.ppo_epochs == 1
    assert rollout.name == "vllm" and rollout.temperature == 1.0
    assert algo.roc.oversample_n == 2 * rollout.n
    assert rollout.multi_turn.enable and rollout.multi_turn.max_assistant_turns == 10
    assert rollout.multi_turn.format == "grporoc_hermes"
    assert rollout.agent.default_agent_loop == "grporoc_tool_agent"
    assert rollout.agent.agent_loop_manager_class == "grporoc_plugin.v1.manager.RoCAgentLoopManagerTQ"
    assert cfg.trainer.v1.sampler.custom_sampler.name == "RoCReplayBuffer"
    assert cfg.reward.reward_manager.name == "grporoc"
    # one optimizer step per RL step (on-policy), as in the release
    assert actor.ppo_mini_batch_size == cfg.data.train_batch_size


@pytest.mark.parametrize(("stage", "response_length", "steps"), [("1", 8192, 300), ("2", 12288, 385)])
def test_qwen3_14b_paper_recipe(stage, response_length, steps, tmp_path):
    cfg = compose_script("qwen3_14b_vllm.sh", {"STAGE": stage}, tmp_path)
    validate_everything(cfg)
    assert_paper_algorithm(cfg)
    assert cfg.data.train_batch_size == 512
    assert (cfg.actor_rollout_ref.rollout.n, cfg.algorithm.roc.oversample_n) == (16, 32)
    assert cfg.data.max_response_length == response_length
    assert cfg.trainer.total_training_steps == steps and cfg.trainer.resume_mode == "auto"
    assert cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node == 64
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu >= cfg.data.max_prompt_length + response_length


@pytest.mark.parametrize(("ngpus", "prompts"), [("8", 64), ("1", 16)])
def test_qwen25_7b_single_node_recipe(ngpus, prompts, tmp_path):
    cfg = compose_script("qwen2.5_7b_single_node.sh", {"NGPUS": ngpus}, tmp_path)
    validate_everything(cfg)
    assert_paper_algorithm(cfg)
    assert cfg.trainer.nnodes == 1 and cfg.trainer.n_gpus_per_node == int(ngpus)
    assert cfg.data.train_batch_size == prompts
    assert (cfg.actor_rollout_ref.rollout.n, cfg.algorithm.roc.oversample_n) == (8, 16)
    assert cfg.actor_rollout_ref.actor.fsdp_config.param_offload is (ngpus == "1")


def test_bad_stage_is_rejected():
    proc = subprocess.run(
        ["bash", str(RECIPES / "qwen3_14b_vllm.sh"), "--cfg", "job"],
        env={**os.environ, "PYTHON": sys.executable, "STAGE": "3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "STAGE must be 1 or 2" in proc.stderr


def test_recipe_through_real_main_ppo():
    """The stock entry point itself composes the 14B recipe (``--cfg job`` prints it and exits before Ray)."""
    proc = subprocess.run(
        ["bash", str(RECIPES / "qwen3_14b_vllm.sh"), "--cfg", "job"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = OmegaConf.create(proc.stdout)
    validate_everything(cfg)
    assert_paper_algorithm(cfg)


def test_cpu_demo_overrides_compose(tmp_path):
    """The demo's own main_ppo command composes and validates the same way (no Ray, no model needed)."""
    from grporoc_plugin.demo.run import GrpoDemoConfig, build_command

    demo = GrpoDemoConfig(
        model_path=str(tmp_path / "model"),
        train_file=str(tmp_path / "train.parquet"),
        val_file=str(tmp_path / "val.parquet"),
        tool_config=str(RECIPES / "tool_config.yaml"),
        out_dir=str(tmp_path / "run"),
    )
    cmd = build_command(demo, ray_temp_dir="/tmp/ray_x")
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    cfg = compose_main_ppo_args(cmd[3:])
    validate_everything(cfg)
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert (cfg.actor_rollout_ref.rollout.n, cfg.algorithm.roc.oversample_n) == (demo.group_size, demo.oversample_n)
    assert cfg.trainer.total_training_steps == demo.steps
