#!/usr/bin/env bash
# GRPO-RoC: the rStar2-Agent paper's RL recipe (arXiv 2508.20722 §4.3, §5.1) for Qwen3-14B on vLLM.
#
#   STAGE=1 bash example_configs/qwen3_14b_vllm.sh   # steps   1-300, 8K response budget  (all 42K problems)
#   STAGE=2 bash example_configs/qwen3_14b_vllm.sh   # steps 301-385, 12K response budget (resumes stage 1)
#
# 64 GPUs (8 nodes x 8; the paper used 64 MI300X). Start from a non-reasoning SFT checkpoint, as the paper does
# (Qwen3-14B-Base + tool-use / instruction SFT; not released): MODEL_PATH=/path/to/sft_ckpt.
# Per step: 512 prompts x 2G = 32 rollouts -> RoC keeps G = 16 per prompt; GRPO advantages over the kept 16.
# Loss (paper Eq. 6): token-mean PPO clip with Clip-Higher 0.2/0.28, no KL (no reference model), no entropy term.
# Optimizer: AdamW, lr 1e-6 constant after 20 linear warm-up steps. Sampling temperature 1.0.
# Tools: the sandboxed Python tool (example_configs/tool_config.yaml), at most 10 assistant turns per rollout.
# Reward: grporoc reward manager (binary answer accuracy; truncated rollouts are failures).
# Extra hydra overrides are appended verbatim ("$@"), e.g. `--cfg job` to print the composed config and exit.
set -euo pipefail

STAGE=${STAGE:-1}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-14B-Base}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/rstar2_agent/train.parquet}  # data_source / prompt / reward_model.ground_truth
VAL_FILES=${VAL_FILES:-$HOME/data/rstar2_agent/aime24.parquet}
TOOL_CONFIG=${TOOL_CONFIG:-$HERE/tool_config.yaml}
NNODES=${NNODES:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
EXPERIMENT=${EXPERIMENT:-qwen3_14b_grporoc}
CKPT_DIR=${CKPT_DIR:-$HOME/checkpoints/grporoc/$EXPERIMENT}

case "$STAGE" in
  # stage 2 raises the budget once the clip ratio settles near 10 % and reward plateaus; it continues the same run
  # (same checkpoint dir, resume_mode=auto picks up global_step_300, optimizer state kept).
  1) MAX_RESPONSE=8192; TOTAL_STEPS=300 ;;
  2) MAX_RESPONSE=12288; TOTAL_STEPS=385 ;;
  *) echo "STAGE must be 1 or 2, got '$STAGE'" >&2; exit 2 ;;
esac
MAX_PROMPT=2048
# dynamic batching: room for two full-length sequences per micro-batch
MAX_TOKENS_PER_GPU=$(( 2 * (MAX_PROMPT + MAX_RESPONSE) ))
CONFIG_DIR=$("$PYTHON" -c 'import grporoc_plugin, os; print(os.path.join(os.path.dirname(grporoc_plugin.__file__), "config"))')

exec "$PYTHON" -m verl.trainer.main_ppo \
  --config-path="$CONFIG_DIR" --config-name=grporoc \
  algorithm.adv_estimator=grpo_roc \
  algorithm.norm_adv_by_std_in_grpo=True \
  algorithm.use_kl_in_reward=False \
  algorithm.roc.enable=True \
  algorithm.roc.oversample_n=32 \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.train_batch_size=512 \
  data.max_prompt_length=$MAX_PROMPT \
  data.max_response_length=$MAX_RESPONSE \
  data.filter_overlong_prompts=True \
  data.truncation=error \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.model.use_remove_padding=True \
  actor_rollout_ref.model.enable_gradient_checkpointing=True \
  actor_rollout_ref.actor.strategy=fsdp2 \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.optim.lr_warmup_steps=20 \
  actor_rollout_ref.actor.optim.lr_scheduler_type=constant \
  actor_rollout_ref.actor.optim.weight_decay=0.01 \
  actor_rollout_ref.actor.ppo_mini_batch_size=512 \
  actor_rollout_ref.actor.ppo_epochs=1 \
  actor_rollout_ref.actor.use_dynamic_bsz=True \
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$MAX_TOKENS_PER_GPU \
  actor_rollout_ref.actor.clip_ratio_low=0.2 \
  actor_rollout_ref.actor.clip_ratio_high=0.28 \
  actor_rollout_ref.actor.loss_agg_mode=token-mean \
  actor_rollout_ref.actor.entropy_coeff=0 \
  actor_rollout_ref.actor.use_kl_loss=False \
  actor_rollout_ref.actor.kl_loss_coef=0 \
  actor_rollout_ref.actor.grad_clip=1.0 \
  actor_rollout_ref.actor.fsdp_config.param_offload=False \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.mode=async \
  actor_rollout_ref.rollout.n=16 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.top_p=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.8 \
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$MAX_TOKENS_PER_GPU \
  actor_rollout_ref.rollout.multi_turn.enable=True \
  actor_rollout_ref.rollout.multi_turn.max_assistant_turns=10 \
  actor_rollout_ref.rollout.multi_turn.max_parallel_calls=1 \
  actor_rollout_ref.rollout.multi_turn.max_tool_response_length=1024 \
  actor_rollout_ref.rollout.multi_turn.format=grporoc_hermes \
  actor_rollout_ref.rollout.multi_turn.tool_config_path="$TOOL_CONFIG" \
  actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent \
  actor_rollout_ref.rollout.val_kwargs.do_sample=True \
  actor_rollout_ref.rollout.val_kwargs.temperature=0.6 \
  actor_rollout_ref.rollout.val_kwargs.top_p=0.95 \
  actor_rollout_ref.rollout.val_kwargs.n=16 \
  reward.reward_manager.name=grporoc \
  trainer.logger='["console","wandb"]' \
  trainer.project_name=grporoc \
  trainer.experiment_name="$EXPERIMENT" \
  trainer.default_local_dir="$CKPT_DIR" \
  trainer.resume_mode=auto \
  trainer.nnodes=$NNODES \
  trainer.n_gpus_per_node=$GPUS_PER_NODE \
  trainer.total_training_steps=$TOTAL_STEPS \
  trainer.save_freq=25 \
  trainer.test_freq=10 \
  trainer.val_before_train=False \
  "$@"
