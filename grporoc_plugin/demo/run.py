"""Launch stock ``python -m verl.trainer.main_ppo`` (V1 trainer) for the CPU demo and always clean up after it.

The trainer runs in its own session (process group). Its console output is teed to ``<out>/grpo.log`` and echoed
through a filter (per-step metrics, errors). On exit, normal or not, every process of that session and every
process started under this run's private Ray temp dir is ended by pid, so no Ray daemon outlives the demo.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from grporoc_plugin.cpu import cpu_env, cpu_overrides

#: The plugin's hydra config (extends verl's ppo_trainer and declares ``algorithm.roc``).
PLUGIN_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
PLUGIN_CONFIG_NAME = "grporoc"


@dataclass(frozen=True)
class GrpoDemoConfig:
    """What the demo's GRPO-RoC run trains on and how big it is."""

    model_path: str
    """HF model directory (the SFT warm-start)."""
    train_file: str
    """verl parquet (prompt / reward_model.ground_truth / data_source)."""
    val_file: str
    """Validation parquet (unused unless ``test_freq`` > 0)."""
    tool_config: str
    """tool_config yaml with the code tool."""
    out_dir: str
    """Run directory: logs, metrics.jsonl."""
    steps: int = 8
    """GRPO steps (trainer.total_training_steps)."""
    prompts_per_step: int = 4
    """data.train_batch_size."""
    group_size: int = 4
    """G: trajectories kept per prompt (actor_rollout_ref.rollout.n)."""
    oversample_n: int = 8
    """2G: trajectories generated per prompt before RoC selection."""
    roc: bool = True
    """RoC selection on; False trains on every generated rollout (``algorithm.roc.enable=False``, baseline)."""
    max_prompt_length: int = 384
    """data.max_prompt_length (tokens)."""
    max_response_length: int = 256
    """data.max_response_length (tokens, model and tool tokens together)."""
    max_assistant_turns: int = 4
    """multi_turn.max_assistant_turns."""
    lr: float = 2e-4
    """Actor learning rate (a tiny SFT'd model moves visibly in a few steps)."""
    temperature: float = 1.0
    """Rollout sampling temperature (the paper's)."""
    seed: int = 0
    """Data shuffle / rollout seed."""
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)
    """Appended verbatim (hydra syntax), last wins."""

    @property
    def metrics_path(self) -> Path:
        return Path(self.out_dir) / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return Path(self.out_dir) / "grpo.log"


def write_tool_config(path: str | Path, *, timeout_s: float = 5.0, max_output_chars: int = 300) -> Path:
    """The demo's tool_config yaml: the plugin's code tool with the demo tokenizer's tool schema.

    Same tool as ``example_configs/tool_config.yaml`` (local sandbox), with the schema the demo tokenizer was
    trained on (``assets.TOOL_SCHEMA``) and the ``concise`` response format (bare stdout / short error), which keeps
    a tiny model's contexts short.
    """
    import yaml

    from grporoc_plugin.demo.assets import TOOL_SCHEMA

    config = {
        "tools": [
            {
                "class_name": "grporoc_plugin.tools.code_tool.CodeExecTool",
                "config": {
                    "type": "native",
                    "timeout_s": timeout_s,
                    "memory_mb": 1024,
                    "max_output_chars": max_output_chars,
                    "backend": "local",
                    "response_format": "concise",
                },
                "tool_schema": TOOL_SCHEMA,
            }
        ]
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_overrides(cfg: GrpoDemoConfig, ray_temp_dir: str | None = None) -> list[str]:
    """Hydra overrides of the demo run (on top of the plugin config ``grporoc``)."""
    rows = cfg.prompts_per_step * cfg.group_size
    overrides = [
        # --- algorithm: GRPO-RoC ---
        "algorithm.adv_estimator=grpo_roc",
        "algorithm.use_kl_in_reward=False",
        f"algorithm.roc.enable={cfg.roc}",
        f"algorithm.roc.oversample_n={cfg.oversample_n}",
        # --- data ---
        f"data.train_files={cfg.train_file}",
        f"data.val_files={cfg.val_file}",
        f"data.train_batch_size={cfg.prompts_per_step}",
        f"data.max_prompt_length={cfg.max_prompt_length}",
        f"data.max_response_length={cfg.max_response_length}",
        "data.filter_overlong_prompts=False",
        f"data.seed={cfg.seed}",
        # --- actor: the paper's loss settings, one optimizer step per RL step ---
        f"actor_rollout_ref.model.path={cfg.model_path}",
        f"actor_rollout_ref.actor.optim.lr={cfg.lr}",
        "actor_rollout_ref.actor.optim.lr_warmup_steps=0",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={cfg.prompts_per_step}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rows}",
        "actor_rollout_ref.actor.clip_ratio_low=0.2",
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.use_kl_loss=False",
        # --- rollout: multi-turn with the sandboxed code tool ---
        f"actor_rollout_ref.rollout.n={cfg.group_size}",
        f"actor_rollout_ref.rollout.temperature={cfg.temperature}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rows}",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        f"actor_rollout_ref.rollout.multi_turn.max_assistant_turns={cfg.max_assistant_turns}",
        "actor_rollout_ref.rollout.multi_turn.max_parallel_calls=1",
        "actor_rollout_ref.rollout.multi_turn.max_tool_response_length=256",
        "actor_rollout_ref.rollout.multi_turn.format=grporoc_hermes",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={cfg.tool_config}",
        "actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent",
        # --- reward worker ---
        "reward.reward_manager.name=grporoc",
        # --- trainer / logging ---
        'trainer.logger=["console","file"]',
        "trainer.project_name=grporoc_demo",
        "trainer.experiment_name=cpu_demo",
        f"trainer.default_local_dir={Path(cfg.out_dir) / 'checkpoints'}",
        f"trainer.total_training_steps={cfg.steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
    ]
    # the CPU backend's list goes last but before the caller's extras: its values are requirements, not tuning
    overrides += cpu_overrides(n_gpus=1, ray_temp_dir=ray_temp_dir)
    overrides += list(cfg.extra_overrides)
    return overrides


def build_command(cfg: GrpoDemoConfig, ray_temp_dir: str | None = None) -> list[str]:
    """The full ``python -m verl.trainer.main_ppo`` command line."""
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={PLUGIN_CONFIG_DIR}",
        f"--config-name={PLUGIN_CONFIG_NAME}",
        *build_overrides(cfg, ray_temp_dir),
    ]


def _processes_under(path: str) -> list[psutil.Process]:
    """Live processes whose command line or working files name ``path`` (this run's private Ray temp dir)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(path in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def terminate_tree(root_pid: int, ray_temp_dir: str | None = None, grace_s: float = 5.0) -> int:
    """End the trainer's session and every process under this run's Ray temp dir, by pid; return how many."""
    targets: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(root_pid)
        targets[root.pid] = root
        targets.update({p.pid: p for p in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    if ray_temp_dir:
        targets.update({p.pid: p for p in _processes_under(ray_temp_dir)})
    targets.pop(os.getpid(), None)
    procs = list(targets.values())
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)


def run_trainer(
    cmd: Sequence[str],
    log_path: str | Path,
    *,
    env: dict[str, str] | None = None,
    echo: Callable[[str], str | None] | None = None,
    timeout_s: float | None = None,
    ray_temp_dir: str | None = None,
) -> int:
    """Run ``cmd`` in its own session, tee its output to ``log_path``, echo ``echo(line)`` when not None.

    Returns the exit code (124 on timeout). Whatever happens (error, Ctrl-C, timeout) the process tree is ended.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
        text=True,
        errors="replace",
        bufsize=1,
    )
    rc: int | None = None
    try:
        with log_path.open("w", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                shown = echo(line) if echo is not None else line
                if shown is not None:
                    print(shown, end="" if shown.endswith("\n") else "\n", flush=True)
                if deadline is not None and time.monotonic() > deadline:
                    rc = 124
                    break
        if rc is None:
            rc = proc.wait()
    finally:
        terminate_tree(proc.pid, ray_temp_dir)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        # Ray workers killed at shutdown could not close their code-tool sandbox pools: reclaim cgroups/temp dirs.
        from grporoc_plugin.sandbox.pool import sweep_stale

        sweep_stale()
    return rc


def new_ray_temp_dir() -> str:
    """A short, private Ray temp dir (Ray's socket paths must stay under ~100 characters)."""
    return tempfile.mkdtemp(prefix="ray_grporoc_", dir="/tmp")


def run_grpo(
    cfg: GrpoDemoConfig,
    *,
    echo: Callable[[str], str | None] | None = None,
    timeout_s: float | None = None,
) -> int:
    """Run the demo's GRPO-RoC training; metrics land in ``cfg.metrics_path`` (verl's file logger)."""
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    ray_temp_dir = new_ray_temp_dir()
    env = dict(os.environ)
    env.update(cpu_env())
    env["VERL_FILE_LOGGER_PATH"] = str(cfg.metrics_path)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    if cfg.metrics_path.exists():
        cfg.metrics_path.unlink()
    try:
        return run_trainer(
            build_command(cfg, ray_temp_dir),
            cfg.log_path,
            env=env,
            echo=echo,
            timeout_s=timeout_s,
            ray_temp_dir=ray_temp_dir,
        )
    finally:
        shutil.rmtree(ray_temp_dir, ignore_errors=True)
