"""RoCReplayBuffer against a real TransferQueue: selection, cleared keys, whole sessions, val passthrough, metrics."""

from __future__ import annotations

import pytest

from grporoc_plugin.config import RoCConfigError

ROC = {"min_pos": 1, "min_neg": 1, "empty_batch": "keep_one"}


def make_buffer(**roc):
    from grporoc_plugin.v1.sampler import RoCReplayBuffer

    return RoCReplayBuffer(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={"roc": {**ROC, **roc}, "rollout_n": 4},
        poll_interval=0.05,
        refill_fn=None,
    )


def stored_keys(tq, partition="train") -> set[str]:
    return set((tq.kv_list(partition) or {}).get(partition, {}))


def test_train_selection_whole_sessions_and_cleared_keys(transfer_queue, put_group):
    tq = transfer_queue
    # g1: 4 correct (2 of 2 calls failed, 0, 1 of 2, 0: p_err 1, 0, .5, 0) + 4 wrong -> keeps the two clean positives
    # and the first two negatives. Penalties come from the agent loop's counters in extra_fields, not from the reward.
    g1 = [
        {"acc": a, "calls": 2, "errors": e}
        for a, e in zip([1, 1, 1, 1, 0, 0, 0, 0], [2, 0, 1, 0, 0, 0, 0, 0], strict=True)
    ]
    # g2: all correct -> rejected (zero advantage)
    g2 = [{"acc": 1.0, "calls": 1}] * 8
    # g3: multi-output sessions (2 outputs each): 2 correct, 6 wrong; the no-tool positive has the higher penalty
    g3 = [
        {"acc": a, "outputs": 2, "calls": t}
        for a, t in zip([0, 1, 0, 0, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1, 1, 1], strict=True)
    ]
    written = set(put_group(tq, "g1", g1) + put_group(tq, "g2", g2) + put_group(tq, "g3", g3))

    batch, metrics = make_buffer().sample(global_steps=1, partition_id="train", batch_size=3)

    kept = set(batch.keys)
    assert {k for k in kept if k.startswith("g1_")} == {"g1_1_0", "g1_3_0", "g1_4_0", "g1_5_0"}
    assert not any(k.startswith("g2_") for k in kept)
    g3_sessions = {k.rsplit("_", 1)[0] for k in kept if k.startswith("g3_")}
    assert len(g3_sessions) == 4  # G sessions per kept group
    for sess in g3_sessions:  # whole sessions: both outputs of every kept session
        assert {f"{sess}_0", f"{sess}_1"} <= kept
    # 2 pos / 6 neg -> round(2*4/8) = 1 positive (the clean tool user, not the no-tool one) + the first 3 negatives
    assert g3_sessions == {"g3_0", "g3_2", "g3_3", "g3_4"}
    assert len(batch.tags) == len(batch.keys)
    # dropped trajectories are cleared from TransferQueue, kept ones are still there
    remaining = stored_keys(tq)
    assert kept <= remaining
    assert not (written - kept) & remaining
    # metrics: counts and the paper's Fig. 4 quantity (failed calls / calls among positives, before vs after)
    assert metrics["roc/groups_rejected_all_correct"] == 1
    assert metrics["roc/trajectory_rows_before"] == 32 and metrics["roc/trajectory_rows_kept"] == len(kept)
    assert metrics["roc/pos_tool_error_ratio_before"] == pytest.approx(3 / (8 + 8 + 1))
    assert metrics["roc/pos_tool_error_ratio_after"] == 0.0
    assert metrics["roc/pos_no_tool_share_before"] > 0 and metrics["roc/pos_no_tool_share_after"] == 0
    assert metrics["roc/penalty_available"] == 1.0 and metrics["roc/colocated"] == 0.0
    # the policy's behaviour before selection, comparable with and without RoC
    assert metrics["rollout/sessions"] == 24 and metrics["rollout/acc"] == pytest.approx(14 / 24)
    assert metrics["rollout/pos_tool_error_ratio"] == metrics["roc/pos_tool_error_ratio_before"]
    assert metrics["rollout/pos_with_error_share"] == pytest.approx(2 / 14)
    assert metrics["rollout/response_len_all"] > 0 and "rollout/response_len_pos" in metrics
    # accounting: every launched session is kept, dropped by selection, or missing
    assert metrics["roc/sessions_expected"] == 24 and metrics["roc/sessions_missing"] == 0
    assert metrics["rollout/tool_errors_infra"] == 0
    tq.kv_clear(keys=list(kept), partition_id="train")


def test_validation_partition_passes_through(transfer_queue, put_group):
    tq = transfer_queue
    keys = put_group(tq, "v1", [{"acc": 1.0}] * 3, partition="val")  # all-equal: RoC would reject it in train
    batch, metrics = make_buffer().sample(global_steps=1, partition_id="val", batch_size=1)
    assert sorted(batch.keys) == sorted(keys)
    assert not any(k.startswith("roc/") for k in metrics)
    tq.kv_clear(keys=keys, partition_id="val")


def test_empty_batch_keep_one_and_error(transfer_queue, put_group):
    tq = transfer_queue
    put_group(tq, "e1", [{"acc": 0.0}] * 8)
    put_group(tq, "e2", [{"acc": 1.0}] * 8)
    batch, metrics = make_buffer().sample(global_steps=2, partition_id="train", batch_size=2)
    assert metrics["roc/empty_batch_kept_one"] == 1.0
    assert len(batch.keys) == 4 and len({k.split("_")[0] for k in batch.keys}) == 1
    kept_pos = 4.0 if batch.keys[0].startswith("e2") else 0.0  # the first group in rollout order: all wrong or right
    assert (metrics["roc/rows_kept"], metrics["roc/rows_dropped"], metrics["roc/groups_kept"]) == (4, 12, 1)
    assert (metrics["roc/kept_pos"], metrics["roc/kept_neg"]) == (kept_pos, 4 - kept_pos)
    assert metrics["roc/trajectory_rows_kept"] == 4
    assert metrics["roc/rows_kept"] + metrics["roc/rows_dropped"] + metrics["roc/sessions_missing"] == 16
    assert stored_keys(tq) == set(batch.keys)
    tq.kv_clear(keys=list(batch.keys), partition_id="train")

    put_group(tq, "e3", [{"acc": 1.0}] * 8)
    with pytest.raises(RuntimeError, match="empty_batch=error"):
        make_buffer(empty_batch="error").sample(global_steps=3, partition_id="train", batch_size=1)
    assert not stored_keys(tq)


def test_missing_correct_key_names_reward_manager(transfer_queue, put_group):
    tq = transfer_queue
    keys = put_group(tq, "m1", [{"score": 1.0}, {"score": 0.0}] * 4)  # reward without "acc"
    with pytest.raises(RoCConfigError, match="reward.reward_manager.name"):
        make_buffer().sample(global_steps=4, partition_id="train", batch_size=1)
    tq.kv_clear(keys=keys, partition_id="train")


def test_penalties_fall_back_to_the_reward_then_report_unavailable(transfer_queue, put_group, caplog):
    """No agent-loop counters: a reward reporting p_err is used; with neither, RoC ranks by 0 and says so loudly."""
    tq = transfer_queue
    # the reward reports p_err: the clean positive (p_err 0) wins over the first one
    put_group(tq, "f1", [{"acc": 1.0, "p_err": 1.0}, {"acc": 1.0, "p_err": 0.0}] + [{"acc": 0.0}] * 6)
    batch, metrics = make_buffer(min_pos=1, min_neg=2).sample(global_steps=6, partition_id="train", batch_size=1)
    assert "f1_1_0" in batch.keys and "f1_0_0" not in batch.keys
    assert metrics["roc/penalty_available"] == pytest.approx(2 / 8)
    tq.kv_clear(keys=list(batch.keys), partition_id="train")
    # nothing at all: penalty 0 everywhere, logged as an error once, reported as 0
    put_group(tq, "f2", [{"acc": 1.0}, {"acc": 0.0}] * 4)
    with caplog.at_level("ERROR", logger="grporoc_plugin.adapter"):
        batch, metrics = make_buffer().sample(global_steps=7, partition_id="train", batch_size=1)
    assert metrics["roc/penalty_available"] == 0.0
    assert "pos_tool_error_ratio" not in " ".join(metrics)  # no tool counters: no Fig. 4 ratio, never a fake 0
    tq.kv_clear(keys=list(batch.keys), partition_id="train")


def test_every_session_is_accounted_for_when_rollouts_fail(transfer_queue, put_group):
    """A group whose rollouts partly failed arrives short (verl keeps failed groups sampleable): it is counted as
    missing sessions, and kept + dropped + missing = launched; infra tool errors are reported, not penalised."""
    tq = transfer_queue
    full = [{"acc": a, "calls": 1} for a in [1, 0] * 4]
    short = [{"acc": a, "calls": 1} for a in [1, 0, 1]]  # 5 of 8 sessions failed
    put_group(tq, "h1", full)
    put_group(tq, "h2", short)
    batch, metrics = make_buffer().sample(global_steps=8, partition_id="train", batch_size=2)
    assert metrics["roc/sessions_expected"] == 16 and metrics["roc/sessions_missing"] == 5
    assert metrics["roc/rows_kept"] + metrics["roc/rows_dropped"] + metrics["roc/sessions_missing"] == 16
    assert metrics["roc/small_groups_dropped"] == 1
    tq.kv_clear(keys=list(batch.keys), partition_id="train")


def test_reward_metric_classifies_on_scalar_reward(transfer_queue, put_group):
    tq = transfer_queue
    keys = put_group(tq, "r1", [{"score": 1.0}, {"score": 0.0}] * 4)
    batch, metrics = make_buffer(correct_key="reward").sample(global_steps=5, partition_id="train", batch_size=1)
    assert len(batch.keys) == 4 and metrics["roc/kept_pos"] == 2
    tq.kv_clear(keys=keys, partition_id="train")


def test_grporoc_sync_trainer_selects_in_balance_batch(transfer_queue, put_group):
    """Colocated-RM mode: verl's own sampler, then RoC inside ``_balance_batch`` before verl's balancing."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    from grporoc_plugin.adapter import RoCStage
    from grporoc_plugin.config import resolve_settings
    from grporoc_plugin.v1.trainer import RoCTrainerSync

    tq = transfer_queue
    put_group(tq, "s1", [{"acc": a} for a in [1, 0, 1, 0, 1, 0, 1, 0]])
    put_group(tq, "s2", [{"acc": 0.0}] * 8)
    put_group(tq, "s3", [{"acc": a} for a in [0, 0, 0, 1, 0, 0, 0, 0]])
    batch, _ = ReplayBuffer("sync", {}, None, "drop", {}, poll_interval=0.05).sample(1, "train", 3)
    assert len(batch.keys) == 24

    trainer = RoCTrainerSync.__new__(RoCTrainerSync)
    trainer.config = OmegaConf.create(
        {
            "reward": {"reward_manager": {"name": "naive"}},
            "actor_rollout_ref": {"rollout": {"n": 4}, "actor": {"ppo_mini_batch_size": 1}},
            "trainer": {"critic_warmup": 0},
        }
    )
    trainer.roc_stage = RoCStage(resolve_settings({"min_pos": 1, "min_neg": 1}, rollout_n=4))
    trainer.reward_loop_manager = SimpleNamespace(reward_loop_worker_handles=["streaming"])
    trainer.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": [0, 1]})
    trainer.tokenizer = SimpleNamespace(eos_token_id=2)
    trainer.use_critic = False
    trainer.global_steps = 1
    metrics: dict = {}
    out = trainer._balance_batch(batch, metrics)

    assert sorted(out.keys) == sorted(["s1_0_0", "s1_1_0", "s1_2_0", "s1_3_0", "s3_0_0", "s3_1_0", "s3_2_0", "s3_3_0"])
    assert not any(tag.get("is_padding") for tag in out.tags)  # 8 rows = lcm(dp 2, mini 1 * G 4) * 2: no padding
    assert metrics["roc/groups_rejected_all_wrong"] == 1 and "global_seqlen/min" in metrics
    assert stored_keys(tq) == set(out.keys)
    tq.kv_clear(keys=list(out.keys), partition_id="train")

    # every group rejected (a drifted reward model can score all alike): one zero-advantage group is trained on,
    # and the counts say so
    put_group(tq, "s4", [{"acc": 1.0}] * 8)
    put_group(tq, "s5", [{"acc": 0.0}] * 8)
    batch, _ = ReplayBuffer("sync", {}, None, "drop", {}, poll_interval=0.05).sample(2, "train", 2)
    trainer.global_steps = 2
    metrics = {}
    out = trainer._balance_batch(batch, metrics)
    assert sorted(out.keys) == [f"s4_{i}_0" for i in range(4)] and metrics["roc/empty_batch_kept_one"] == 1
    assert (metrics["roc/rows_kept"], metrics["roc/rows_dropped"], metrics["roc/groups_kept"]) == (4, 12, 1)
    assert (metrics["roc/kept_pos"], metrics["roc/kept_neg"]) == (4, 0)
    assert stored_keys(tq) == set(out.keys)
    tq.kv_clear(keys=list(out.keys), partition_id="train")


def test_first_k_negatives_follow_rollout_index_not_arrival_order(transfer_queue, put_group):
    """Async rollouts reach TransferQueue in completion order; first_k must still mean the lowest session indices."""
    from transfer_queue import KVBatchMeta

    from grporoc_plugin.adapter import RoCStage
    from grporoc_plugin.config import resolve_settings
    from grporoc_plugin.v1.sampler import select_kv_batch

    tq = transfer_queue
    # 2 positives (sessions 0, 1) + 6 negatives (sessions 2..7): keep 1 positive + the 3 lowest-index negatives
    keys = put_group(tq, "a1", [{"acc": 1.0}, {"acc": 1.0}] + [{"acc": 0.0}] * 6)
    arrival = list(reversed(keys))  # the slowest (lowest-index) sessions arrive last
    batch = KVBatchMeta(partition_id="train", keys=arrival, tags=[{"status": "success"}] * len(arrival))
    stage = RoCStage(resolve_settings({**ROC, "negative_mode": "first_k"}, rollout_n=4, trainer="v1"))

    kept, dropped, _ = select_kv_batch(batch, stage, step=1)

    assert {k for k in kept.keys if k not in ("a1_0_0", "a1_1_0")} == {"a1_2_0", "a1_3_0", "a1_4_0"}
    assert set(kept.keys) | set(dropped) == set(keys)
    tq.kv_clear(keys=keys, partition_id="train")
