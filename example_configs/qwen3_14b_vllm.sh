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
G=16; TRAIN_BATCH=512; TP=4; GPU_MEM=0.8; OFFLOAD=False; VAL_N=16
source "$HERE/paper_recipe.sh"

exec "$PYTHON" -m verl.trainer.main_ppo --config-path="$CONFIG_DIR" --config-name=grporoc "${PAPER_RECIPE[@]}" "$@"
