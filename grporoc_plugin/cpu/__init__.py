"""Run stock verl 0.9.1 (``python -m verl.trainer.main_ppo``) on a CPU-only machine.

The backend itself lives in :mod:`grporoc_plugin.cpu.backend` (loaded by verl's plugin entry point, active only with
``VERL_PLATFORM=cpu``). This module is import-light: it holds the ONE list of overrides a CPU run needs, shared by
the e2e tests and the demo::

    env = {**os.environ, **cpu_env()}
    cmd = [python, "-m", "verl.trainer.main_ppo", *cpu_overrides(n_gpus=1), "data.train_files=...", ...]
"""

from __future__ import annotations

#: ``rollout.name`` of the CPU backend's rollout (and reward-model) replicas.
ROLLOUT_NAME = "hf"

#: Environment that switches the backend on in every verl process (Ray workers inherit it from the driver).
CPU_ENV: dict[str, str] = {"VERL_PLATFORM": "cpu"}


def cpu_env() -> dict[str, str]:
    """Environment variables a CPU run needs (merge into ``os.environ`` for the trainer subprocess)."""
    return dict(CPU_ENV)


def cpu_overrides(n_gpus: int = 1, num_cpus: int = 16, ray_temp_dir: str | None = None) -> list[str]:
    """Hydra overrides for a CPU run of ``verl.trainer.main_ppo``; later overrides on the command line win.

    ``n_gpus`` fake Ray "GPU"s = FSDP ranks (gloo) = trainer.n_gpus_per_node; ``num_cpus`` is a *logical* Ray CPU
    count (verl's TaskRunner, TransferQueue and agent-loop actors each reserve one; 2 physical cores hang silently).
    """
    if n_gpus < 1:
        raise ValueError(f"cpu_overrides: n_gpus must be >= 1 (trainer.n_gpus_per_node=0 crashes verl), got {n_gpus}")
    overrides = [
        # required: device / placement
        "trainer.device=cpu",
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={n_gpus}",
        f"ray_kwargs.ray_init.num_cpus={num_cpus}",
        f"+ray_kwargs.ray_init.num_gpus={n_gpus}",
        # required: no flash-attn, no vLLM/SGLang, no tensor parallel rollout
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        # every CPU run so far used FSDP2 (FSDP1 is untested on CPU)
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "critic.strategy=fsdp2",
        # cost only: fewer processes, no torch.compile (minutes of CPU compile), padded (not nested) batches
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "data.dataloader_num_workers=0",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]
    if ray_temp_dir:
        overrides.append(f"+ray_kwargs.ray_init._temp_dir={ray_temp_dir}")
    return overrides


def cpu_reward_model_overrides(model_path: str) -> list[str]:
    """Hydra overrides for a colocated discriminative reward model served by the CPU backend's ``hf`` replica.

    Colocated = ``enable_resource_pool`` stays False: the reward model shares the trainer's (fake-GPU) pool and
    scores each batch after sampling. Add ``reward.reward_model.rollout.dtype=float32`` for full-precision scores
    (verl's default is bfloat16, which the CPU runs as well).
    """
    return [
        "reward.reward_model.enable=True",
        f"reward.reward_model.model_path={model_path}",
        f"reward.reward_model.rollout.name={ROLLOUT_NAME}",
        "reward.reward_model.rollout.tensor_model_parallel_size=1",
    ]
