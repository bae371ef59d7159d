"""V0 ``_balance_batch`` selection on a real DataProto, and the V1 oversampling manager's prompt tagging."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from grporoc_plugin.config import RoCConfigError, resolve_settings


def make_batch(acc: list[list[float]], p_err: list[list[float]] | None = None):
    """V0-shaped DataProto: ``uid`` + flattened reward_extra_info columns, rows interleaved per prompt."""
    from verl import DataProto

    uids, accs, errs = [], [], []
    for g, group in enumerate(acc):
        uids += [f"u{g}"] * len(group)
        accs += group
        errs += p_err[g] if p_err else [0.0] * len(group)
    n, t = len(uids), 6
    lengths = torch.arange(n) % 3 + 2
    attention = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return DataProto.from_dict(
        tensors={"attention_mask": attention, "responses": torch.ones(n, t, dtype=torch.long), "row": torch.arange(n)},
        non_tensors={
            "uid": np.array(uids, dtype=object),
            "acc": np.array(accs, dtype=object),
            "p_err": np.array(errs, dtype=object),
        },
    )


def v0_trainer(dp: int, rollout_n: int = 8, **roc):
    """RoCRayPPOTrainer carrying only what ``_balance_batch`` reads (its worker group's DP layout)."""
    from grporoc_plugin.adapter import RoCStage
    from grporoc_plugin.v0.trainer import RoCRayPPOTrainer

    trainer = RoCRayPPOTrainer.__new__(RoCRayPPOTrainer)
    trainer.config = OmegaConf.create({"reward": {"reward_manager": {"name": "grporoc"}}})
    settings = resolve_settings({"min_pos": 1, "min_neg": 1, **roc}, rollout_n=rollout_n, trainer="v0")
    trainer.roc_stage = RoCStage(settings, reward_manager="grporoc")
    trainer.actor_rollout_wg = SimpleNamespace(_dispatch_info={"actor": list(range(dp))})
    trainer.global_steps = 1
    return trainer


def test_v0_balance_batch_selects_in_place_whole_groups():
    acc = [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8, [0, 1, 0, 0, 0, 0, 0, 0]]
    p_err = [[1, 0, 0.5, 0, 0, 0, 0, 0], [0] * 8, [0] * 8]
    batch = make_batch(acc, p_err)
    same = batch
    metrics: dict = {}
    v0_trainer(dp=2)._balance_batch(batch, metrics)
    assert batch is same  # RayPPOTrainer.fit keeps using the same object
    rows = sorted(batch.batch["row"].tolist())
    assert rows == [1, 3, 4, 5, 16, 17, 18, 19]  # g0: clean positives + first negatives; g1 rejected; g2: 1 pos + 3
    uids, counts = np.unique(batch.non_tensor_batch["uid"], return_counts=True)
    assert list(uids) == ["u0", "u2"] and list(counts) == [4, 4]  # no group split, no padding rows
    assert metrics["roc/groups_rejected_all_correct"] == 1 and "global_seqlen/min" in metrics


def test_v0_world_size_alignment_drops_whole_groups():
    batch = make_batch([[1, 0, 0, 0, 0, 0, 0, 0]] * 3)
    metrics: dict = {}
    v0_trainer(dp=8)._balance_batch(batch, metrics)
    assert len(batch) == 8 and metrics["roc/world_size_removed_groups"] == 1
    assert len(set(batch.non_tensor_batch["uid"])) == 2


def test_v0_alignment_that_empties_the_batch_falls_back_to_keep_one():
    """One mixed group (4 kept rows) cannot fill dp=8 and is dropped; the other group is all correct (rejected): the
    fallback trains the first group's sessions up to dp=8 (here all 8 of the mixed group: non-zero advantages), and
    the metrics say so."""
    batch = make_batch([[1, 0, 0, 0, 0, 0, 0, 0], [1] * 8])
    metrics: dict = {}
    v0_trainer(dp=8, empty_batch="keep_one")._balance_batch(batch, metrics)
    assert sorted(batch.batch["row"].tolist()) == list(range(8))
    assert metrics["roc/world_size_removed_groups"] == 1 and metrics["roc/empty_batch_kept_one"] == 1.0
    assert (metrics["roc/rows_kept"], metrics["roc/groups_kept"]) == (8, 1)
    assert (metrics["roc/kept_pos"], metrics["roc/kept_neg"]) == (1, 7)


def test_v0_empty_batch_and_missing_acc():
    batch = make_batch([[1] * 8, [0] * 8], [[0.5, 0, 1, 0, 0.25, 0, 0, 0], [0] * 8])
    metrics: dict = {}
    v0_trainer(dp=2, empty_batch="keep_one")._balance_batch(batch, metrics)
    assert len(batch) == 4 and set(batch.non_tensor_batch["uid"]) == {"u0"}
    assert sorted(batch.batch["row"].tolist()) == [0, 1, 2, 3]
    assert metrics["roc/empty_batch_kept_one"] == 1.0
    # the metrics say what the update trains on: the fallback group (all correct here), not the rule's empty choice
    assert (metrics["roc/rows_kept"], metrics["roc/rows_dropped"]) == (4, 12)
    assert (metrics["roc/groups_kept"], metrics["roc/groups_dropped"]) == (1, 1)
    assert (metrics["roc/kept_pos"], metrics["roc/kept_neg"]) == (4, 0)
    assert metrics["roc/kept_pos_per_group_mean"] == 4
    assert metrics["roc/pos_p_err_mean_after"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)  # rows 0-3
    assert metrics["roc/pos_p_err_mean_before"] == pytest.approx((0.5 + 1 + 0.25) / 8)  # every positive
    assert "roc/pos_penalty_mean_after" in metrics

    # keep_one must respect the data-parallel size too (V0 has no padding rows): G=2 with dp=4 keeps 4 rows
    batch = make_batch([[1] * 4, [0] * 4])
    metrics = {}
    v0_trainer(dp=4, rollout_n=4, empty_batch="keep_one")._balance_batch(batch, metrics)
    assert len(batch) == 4 and metrics["roc/empty_batch_kept_one"] == 1.0

    bad = make_batch([[1, 0] * 4])
    bad.non_tensor_batch.pop("acc")
    with pytest.raises(RoCConfigError, match="reward.reward_manager.name=grporoc"):
        v0_trainer(dp=1)._balance_batch(bad, {})


def test_manager_tags_train_prompts_only():
    from tensordict import NonTensorData, TensorDict

    from grporoc_plugin.v1.manager import add_rollout_n

    train = TensorDict({"input_ids": torch.zeros(3, 4)}, batch_size=[3])
    add_rollout_n(train, 8)
    assert train["__rollout_n__"].tolist() == [8, 8, 8]
    # survives verl's per-worker chunking and per-row indexing (AgentLoopWorkerTQ.generate_sequences)
    chunk = train.chunk(2)[1]
    assert int(chunk["__rollout_n__"][0]) == 8

    val = TensorDict({"input_ids": torch.zeros(2, 4)}, batch_size=[2])
    val.set("validate", NonTensorData(True))
    add_rollout_n(val, 8)
    assert "__rollout_n__" not in val.keys()


def test_manager_refuses_oversampling_without_selection():
    from grporoc_plugin.v1.manager import RoCAgentLoopManagerTQ

    cfg = OmegaConf.create(
        {
            "algorithm": {"roc": {"min_pos": 1, "min_neg": 1}, "adv_estimator": "grpo"},
            "actor_rollout_ref": {"rollout": {"n": 4}, "actor": {"ppo_mini_batch_size": 1}},
            "data": {"train_batch_size": 4},
            "trainer": {"n_gpus_per_node": 1, "nnodes": 1, "v1": {"trainer_mode": "sync", "sampler": {}}},
        }
    )
    with pytest.raises(RoCConfigError, match="custom_sampler"):
        RoCAgentLoopManagerTQ(cfg)
