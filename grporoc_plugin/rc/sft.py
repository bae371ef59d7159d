"""Run verl's own SFT trainer (``verl.trainer.sft_trainer``, torchrun) on RCTP data, on GPU or on the CPU backend.

    cmd = sft_command(train_file, model_dir, out_dir, steps=..., cpu=True)   # torchrun ... -m verl.trainer.sft_trainer
    hf_dir = run_sft(...)                                                    # -> out_dir/global_step_N/huggingface

verl's SFT trainer needs on CPU only the plugin's CPU backend (``VERL_PLATFORM=cpu``; its internal 8 gives the
torchrun process group a valid gloo backend) and the overrides of :func:`cpu_sft_overrides`: sdpa attention (no
flash-attn), padded inputs (``use_remove_padding=False``; the engine still takes ``pad_mode=no_padding``), FSDP2, no
torch.compile. ``checkpoint.save_contents`` includes ``hf_model``, so the last step's ``huggingface/`` directory is a
complete Hugging Face checkpoint (weights, config, tokenizer with the reward tokens, chat template) that
``actor_rollout_ref.model.path`` loads unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["cpu_sft_overrides", "hf_checkpoint", "run_sft", "sft_command"]


def cpu_sft_overrides() -> list[str]:
    """Hydra overrides ``verl.trainer.sft_trainer`` needs on the CPU backend."""
    return [
        "trainer.device=cpu",
        "+model.override_config.attn_implementation=sdpa",
        "model.use_remove_padding=False",
        "model.enable_gradient_checkpointing=False",
        "engine.strategy=fsdp2",
        "engine.use_torch_compile=False",
        "data.num_workers=0",
    ]


def sft_command(
    train_file: str,
    model_dir: str,
    out_dir: str,
    *,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_length: int = 512,
    cpu: bool = True,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """``torchrun --standalone --nproc_per_node=1 -m verl.trainer.sft_trainer`` with the RCTP data and an HF save."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=1",
        "-m",
        "verl.trainer.sft_trainer",
        f"data.train_files={train_file}",
        "data.val_files=null",
        f"data.train_batch_size={batch_size}",
        f"data.micro_batch_size_per_gpu={batch_size}",
        "data.use_dynamic_bsz=False",
        f"data.max_length={max_length}",
        "data.truncation=error",
        f"model.path={model_dir}",
        f"optim.lr={lr}",
        "optim.lr_warmup_steps_ratio=0.0",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1000",
        "trainer.logger=console",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        "trainer.resume_mode=disable",
        f"trainer.default_local_dir={out_dir}",
        "checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        *(cpu_sft_overrides() if cpu else []),
        *extra,
    ]


def hf_checkpoint(out_dir: str | Path, steps: int) -> Path:
    """The complete Hugging Face checkpoint verl's SFT trainer saved at its last step."""
    return Path(out_dir) / f"global_step_{steps}" / "huggingface"


def run_sft(
    train_file: str,
    model_dir: str,
    out_dir: str,
    *,
    steps: int,
    log_path: str | Path | None = None,
    timeout_s: float = 1800,
    **kwargs,
) -> Path:
    """Run :func:`sft_command` on the CPU backend; return the saved HF checkpoint (raise with the log tail on error)."""
    env = {**os.environ, "VERL_PLATFORM": "cpu", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun would warn and set it anyway
    result = subprocess.run(
        sft_command(train_file, model_dir, out_dir, steps=steps, **kwargs),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = result.stdout + result.stderr
    if log_path is not None:
        Path(log_path).write_text(output)
    checkpoint = hf_checkpoint(out_dir, steps)
    if result.returncode != 0 or not (checkpoint / "config.json").exists():
        raise RuntimeError(f"verl SFT trainer failed (exit {result.returncode}):\n{output[-4000:]}")
    return checkpoint
