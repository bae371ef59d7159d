#!/usr/bin/env bash
# GRPO-RoC on one node with Qwen2.5-7B-Instruct on vLLM: the paper's recipe (see qwen3_14b_vllm.sh) scaled down.
#
#   bash example_configs/qwen2.5_7b_single_node.sh              # 8 GPUs: 64 prompts x (2G = 16 -> G = 8)
#   NGPUS=1 bash example_configs/qwen2.5_7b_single_node.sh      # 1 GPU (80 GB): 16 prompts x (16 -> 8), offloaded
#
# Same algorithm as the paper: RoC 2G -> G, clip 0.2/0.28, no KL, no entropy, token-mean, lr 1e-6 constant with
# 20 warm-up steps, temperature 1.0, 10 assistant turns, 8K response budget (STAGE=2 for 12K, like the 14B recipe).
# The paper trained Qwen2.5-32B-Instruct with no SFT stage; an instruct model already emits hermes tool calls.
# Extra hydra overrides are appended verbatim ("$@"), e.g. `--cfg job` to print the composed config and exit.
set -euo pipefail

NGPUS=${NGPUS:-8}
STAGE=${STAGE:-1}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}
TRAIN_FILES=${TRAIN_FILES:-$HOME/data/rstar2_agent/train.parquet}
VAL_FILES=${VAL_FILES:-$HOME/data/rstar2_agent/aime24.parquet}
TOOL_CONFIG=${TOOL_CONFIG:-$HERE/tool_config.yaml}
EXPERIMENT=${EXPERIMENT:-qwen2.5_7b_grporoc_${NGPUS}gpu}
CKPT_DIR=${CKPT_DIR:-$HOME/checkpoints/grporoc/$EXPERIMENT}

case "$STAGE" in
  1) MAX_RESPONSE=8192; TOTAL_STEPS=300 ;;
  2) MAX_RESPONSE=12288; TOTAL_STEPS=385 ;;
  *) echo "STAGE must be 1 or 2, got '$STAGE'" >&2; exit 2 ;;
esac
case "$NGPUS" in
  # prompts/step, vLLM TP, FSDP offload (1 GPU: weights + Adam states live on the host between phases)
  8) TRAIN_BATCH=64; TP=2; OFFLOAD=False; GPU_MEM=0.7 ;;
  1) TRAIN_BATCH=16; TP=1; OFFLOAD=True; GPU_MEM=0.5 ;;
  *) echo "NGPUS must be 8 or 1, got '$NGPUS'" >&2; exit 2 ;;
esac
MAX_PROMPT=2048
MAX_TOKENS_PER_GPU=$(( 2 * (MAX_PROMPT + MAX_RESPONSE) ))
CONFIG_DIR=$("$PYTHON" -c 'import grporoc_plugin, os; print(os.path.join(os.path.dirname(grporoc_plugin.__file__), "config"))')

exec "$PYTHON" -m verl.trainer.main_ppo \
  --config-path="$CONFIG_DIR" --config-name=grporoc \
  algorithm.adv_estimator=grpo_roc \
  algorithm.norm_adv_by_std_in_grpo=True \
  algorithm.use_kl_in_reward=False \
  algorithm.roc.enable=True \
  algorithm.roc.oversample_n=16 \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.train_batch_size=$TRAIN_BATCH \
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
  actor_rollout_ref.actor.ppo_mini_batch_size=$TRAIN_BATCH \
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
  actor_rollout_ref.actor.fsdp_config.param_offload=$OFFLOAD \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload=$OFFLOAD \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.mode=async \
  actor_rollout_ref.rollout.n=8 \
  actor_rollout_ref.rollout.temperature=1.0 \
  actor_rollout_ref.rollout.top_p=1.0 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=$TP \
  actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEM \
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
  actor_rollout_ref.rollout.val_kwargs.n=4 \
  reward.reward_manager.name=grporoc \
  trainer.logger='["console","wandb"]' \
  trainer.project_name=grporoc \
  trainer.experiment_name="$EXPERIMENT" \
  trainer.default_local_dir="$CKPT_DIR" \
  trainer.resume_mode=auto \
  trainer.nnodes=1 \
  trainer.n_gpus_per_node=$NGPUS \
  trainer.total_training_steps=$TOTAL_STEPS \
  trainer.save_freq=25 \
  trainer.test_freq=10 \
  trainer.val_before_train=False \
  "$@"
