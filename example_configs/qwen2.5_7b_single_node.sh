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
G=8; NNODES=1; GPUS_PER_NODE=$NGPUS; VAL_N=4
source "$HERE/paper_recipe.sh"

exec "$PYTHON" -m verl.trainer.main_ppo --config-path="$CONFIG_DIR" --config-name=grporoc "${PAPER_RECIPE[@]}" "$@"
