"""RC-GRPO (reward-conditioned GRPO, arXiv 2602.03025) for verl, composable with GRPO-RoC. See docs/rc-grpo.md.

* :mod:`~grporoc_plugin.rc.settings`: ``algorithm.rc`` (typed, validated; start-up checks against the tokenizer);
* :mod:`~grporoc_plugin.rc.vocab`: add the reward tokens to a checkpoint (tokenizer + embedding rows);
* :mod:`~grporoc_plugin.rc.builder`: RCTP data (trajectories with outcomes -> conditioned verl SFT data);
* :mod:`~grporoc_plugin.rc.sft`: run verl's own SFT trainer on it (GPU or the CPU backend);
* :mod:`~grporoc_plugin.rc.schedule` / :mod:`~grporoc_plugin.rc.inject`: which token each replica gets, and where;
* :mod:`~grporoc_plugin.rc.manager` / :mod:`~grporoc_plugin.rc.worker`: the pre-rollout hook in verl's agent loop
  (V1 and V0, any agent loop);
* :mod:`~grporoc_plugin.rc.metrics`: ``rc/*`` metrics, computed by the selection stage;
* :mod:`~grporoc_plugin.rc.compare`: RC-GRPO vs GRPO (and RoC) in miniature on CPU.

Import-light: importing this package imports nothing from verl, torch or Ray.
"""
