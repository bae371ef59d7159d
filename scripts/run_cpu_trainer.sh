#!/usr/bin/env bash
# Stock verl GRPO on the CPU backend with the tiny offline assets (2 steps by default). Extra args = hydra overrides.
#   scripts/run_cpu_trainer.sh [ASSETS_DIR] [override ...]     (ASSETS_DIR is built if missing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
ASSETS=${1:-${ASSETS:-/tmp/grporoc_cpu_assets}}
[[ $# -gt 0 ]] && shift
[[ -f $ASSETS/tiny_qwen2/config.json ]] || "$PY" -m grporoc_plugin.demo.assets "$ASSETS"
mapfile -t CPU_ARGS < <("$PY" -c "from grporoc_plugin.cpu import cpu_overrides; print('\n'.join(cpu_overrides()))")
export VERL_PLATFORM=cpu
exec "$PY" -m verl.trainer.main_ppo "${CPU_ARGS[@]}" \
  algorithm.adv_estimator=grpo algorithm.use_kl_in_reward=False \
  data.train_files="$ASSETS/data/train.parquet" data.val_files="$ASSETS/data/test.parquet" \
  data.train_batch_size=4 data.max_prompt_length=64 data.max_response_length=32 data.filter_overlong_prompts=False \
  actor_rollout_ref.model.path="$ASSETS/tiny_qwen2" \
  actor_rollout_ref.actor.optim.lr=1e-3 actor_rollout_ref.actor.ppo_mini_batch_size=4 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 actor_rollout_ref.actor.use_kl_loss=False \
  actor_rollout_ref.rollout.n=4 actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8 \
  actor_rollout_ref.rollout.calculate_log_probs=True \
  reward.custom_reward_function.path="$ROOT/tests/cpu/toy_reward.py" reward.custom_reward_function.name=compute_score \
  trainer.logger=console trainer.val_before_train=False trainer.test_freq=-1 trainer.save_freq=-1 \
  trainer.total_training_steps=2 trainer.project_name=grporoc_cpu trainer.experiment_name=smoke \
  "$@"
