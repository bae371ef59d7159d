# Sourced by the GPU recipes (qwen3_14b_vllm.sh, qwen2.5_7b_single_node.sh): the rStar2-Agent paper's RL settings as
# verl overrides, in one place. Fills the array PAPER_RECIPE from the variables the recipe sets first:
#   MODEL_PATH TRAIN_FILES VAL_FILES TOOL_CONFIG EXPERIMENT CKPT_DIR   paths and names
#   MAX_PROMPT MAX_RESPONSE TOTAL_STEPS                                 budget and length of the stage
#   TRAIN_BATCH G TP GPU_MEM OFFLOAD NNODES GPUS_PER_NODE VAL_N          scale
# Loss (paper Eq. 6): token-mean PPO clip with Clip-Higher 0.2/0.28, no KL (no reference model), no entropy term.
# Optimizer: AdamW, lr 1e-6 constant after 20 linear warm-up steps. Sampling temperature 1.0, 10 assistant turns.
# RoC: 2G rollouts per prompt, G kept (algorithm.roc.*: the plugin's release defaults).

# dynamic batching: room for two full-length sequences per micro-batch
MAX_TOKENS_PER_GPU=$(( 2 * (MAX_PROMPT + MAX_RESPONSE) ))

PAPER_RECIPE=(
  algorithm.adv_estimator=grpo_roc
  algorithm.norm_adv_by_std_in_grpo=True
  algorithm.use_kl_in_reward=False
  algorithm.roc.enable=True
  "algorithm.roc.oversample_n=$(( 2 * G ))"
  "data.train_files=$TRAIN_FILES"
  "data.val_files=$VAL_FILES"
  "data.train_batch_size=$TRAIN_BATCH"
  "data.max_prompt_length=$MAX_PROMPT"
  "data.max_response_length=$MAX_RESPONSE"
  data.filter_overlong_prompts=True
  data.truncation=error
  "actor_rollout_ref.model.path=$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=True
  actor_rollout_ref.model.enable_gradient_checkpointing=True
  actor_rollout_ref.actor.strategy=fsdp2
  actor_rollout_ref.actor.optim.lr=1e-6
  actor_rollout_ref.actor.optim.lr_warmup_steps=20
  actor_rollout_ref.actor.optim.lr_scheduler_type=constant
  actor_rollout_ref.actor.optim.weight_decay=0.01
  "actor_rollout_ref.actor.ppo_mini_batch_size=$TRAIN_BATCH"
  actor_rollout_ref.actor.ppo_epochs=1
  actor_rollout_ref.actor.use_dynamic_bsz=True
  "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.actor.clip_ratio_low=0.2
  actor_rollout_ref.actor.clip_ratio_high=0.28
  actor_rollout_ref.actor.loss_agg_mode=token-mean
  actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.actor.use_kl_loss=False
  actor_rollout_ref.actor.kl_loss_coef=0
  actor_rollout_ref.actor.grad_clip=1.0
  "actor_rollout_ref.actor.fsdp_config.param_offload=$OFFLOAD"
  "actor_rollout_ref.actor.fsdp_config.optimizer_offload=$OFFLOAD"
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.mode=async
  "actor_rollout_ref.rollout.n=$G"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=1.0
  "actor_rollout_ref.rollout.tensor_model_parallel_size=$TP"
  "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEM"
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
  "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=$MAX_TOKENS_PER_GPU"
  actor_rollout_ref.rollout.multi_turn.enable=True
  actor_rollout_ref.rollout.multi_turn.max_assistant_turns=10
  actor_rollout_ref.rollout.multi_turn.max_parallel_calls=1
  actor_rollout_ref.rollout.multi_turn.max_tool_response_length=1024
  actor_rollout_ref.rollout.multi_turn.format=grporoc_hermes
  "actor_rollout_ref.rollout.multi_turn.tool_config_path=$TOOL_CONFIG"
  actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent
  actor_rollout_ref.rollout.val_kwargs.do_sample=True
  actor_rollout_ref.rollout.val_kwargs.temperature=0.6
  actor_rollout_ref.rollout.val_kwargs.top_p=0.95
  "actor_rollout_ref.rollout.val_kwargs.n=$VAL_N"
  reward.reward_manager.name=grporoc
  'trainer.logger=["console","wandb"]'
  trainer.project_name=grporoc
  "trainer.experiment_name=$EXPERIMENT"
  "trainer.default_local_dir=$CKPT_DIR"
  trainer.resume_mode=auto
  "trainer.nnodes=$NNODES"
  "trainer.n_gpus_per_node=$GPUS_PER_NODE"
  "trainer.total_training_steps=$TOTAL_STEPS"
  trainer.save_freq=25
  trainer.test_freq=10
  trainer.val_before_train=False
)
CONFIG_DIR=$("$PYTHON" -c 'import grporoc_plugin, os; print(os.path.join(os.path.dirname(grporoc_plugin.__file__), "config"))')
