"""``grpo_roc`` through verl's own ``compute_advantage`` on real ``DataProto`` batches, and estimator independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.config import AlgoConfig
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

from grporoc_plugin.algos import compute_grpo_roc_outcome_advantage
from grporoc_plugin.roc import RoCConfig, select_rollouts

RESP_LEN = 12


def make_batch(n_groups: int = 24, group_size: int = 32, seed: int = 0) -> tuple[DataProto, np.ndarray, np.ndarray]:
    """A rollout batch like the trainer's: uid per row, 0/1 outcome at the last valid token, tool tokens masked."""
    rng = np.random.default_rng(seed)
    bs = n_groups * group_size
    uids = np.repeat(np.array([f"uid-{i}" for i in range(n_groups)], dtype=object), group_size)
    rates = np.repeat(rng.choice([0.0, 1.0, 0.1, 0.5, 0.9, 1 / 32, 31 / 32], size=n_groups), group_size)
    correct = rng.random(bs) < rates
    lengths = rng.integers(3, RESP_LEN + 1, size=bs)
    positions = np.arange(RESP_LEN)[None, :]
    response_mask = torch.from_numpy((positions < lengths[:, None]).astype(np.float32))
    response_mask[:, 1] = 0.0  # a tool-response token inside every response
    rewards = torch.zeros(bs, RESP_LEN)
    rewards[torch.arange(bs), torch.from_numpy(lengths - 1)] = torch.from_numpy(correct.astype(np.float32))
    penalty = rng.choice([0.0, 0.5, 1.0, 1.5], size=bs)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": response_mask},
        non_tensors={"uid": uids},
    )
    return data, correct, penalty


def kept_batch(cfg: RoCConfig | None = None, seed: int = 0) -> tuple[DataProto, np.ndarray]:
    cfg = cfg if cfg is not None else RoCConfig()
    data, correct, penalty = make_batch(seed=seed)
    kept, metrics = select_rollouts(data.non_tensor_batch["uid"], correct, penalty, cfg, seed=seed)
    assert metrics["roc/groups_kept"] > 0 and kept.size % cfg.keep_n == 0
    return data.select_idxs(kept), correct[kept]


def _adv(data: DataProto, estimator: str, **kwargs) -> torch.Tensor:
    out = compute_advantage(data.select_idxs(np.arange(len(data))), estimator, **kwargs)
    return out.batch["advantages"]


def test_registered_through_the_package_import():
    assert ADV_ESTIMATOR_REGISTRY["grpo_roc"] is compute_grpo_roc_outcome_advantage
    assert get_adv_estimator_fn("grpo_roc") is compute_grpo_roc_outcome_advantage


@pytest.mark.parametrize("norm", [True, False], ids=["grpo", "dr_grpo"])
@pytest.mark.parametrize("config_kind", ["dictconfig", "algoconfig"])
def test_grpo_roc_equals_builtin_grpo_through_compute_advantage(norm, config_kind):
    data, _ = kept_batch()
    if config_kind == "dictconfig":  # what the V1/V0 trainers pass (config.algorithm)
        config = OmegaConf.create({"adv_estimator": "grpo_roc", "norm_adv_by_std_in_grpo": norm, "gamma": 1.0})
    else:
        config = AlgoConfig(adv_estimator="grpo_roc", norm_adv_by_std_in_grpo=norm)
    ours = _adv(data, "grpo_roc", config=config)
    builtin = _adv(data, "grpo", norm_adv_by_std_in_grpo=norm, config=config)
    torch.testing.assert_close(ours, builtin)  # float32 tolerances: group statistics are summed in float64
    assert torch.count_nonzero(ours) > 0
    # also on the full, unselected batch (including all-equal and singleton-free groups)
    full, _, _ = make_batch(seed=1)
    torch.testing.assert_close(_adv(full, "grpo_roc", config=config), _adv(full, "grpo", norm_adv_by_std_in_grpo=norm))


def test_known_values_and_masking():
    """15 positives / 1 negative kept -> A+ = +0.25, A- = -3.75 (spec §2); tool tokens get no advantage."""
    correct = np.array([True] * 31 + [False])
    uids = np.array(["u"] * 32, dtype=object)
    kept, _ = select_rollouts(uids, correct, np.zeros(32), RoCConfig(keep_n=16))
    rewards = torch.zeros(32, 4)
    rewards[:, -1] = torch.from_numpy(correct.astype(np.float32))
    mask = torch.ones(32, 4)
    mask[:, 1] = 0
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask}, non_tensors={"uid": uids}
    )
    adv = _adv(data.select_idxs(kept), "grpo_roc", config=OmegaConf.create({"norm_adv_by_std_in_grpo": True}))
    scalar = adv[:, 0]
    kept_correct = torch.from_numpy(correct[kept])
    torch.testing.assert_close(scalar[kept_correct], torch.full((15,), 0.25), atol=1e-4, rtol=0)
    torch.testing.assert_close(scalar[~kept_correct], torch.full((1,), -3.75), atol=1e-4, rtol=0)
    assert torch.all(adv[:, 1] == 0)


def test_singleton_and_equal_groups_like_verl():
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.7], [0.0, 0.7], [0.0, 0.0]])
    mask = torch.ones(4, 2)
    index = np.array(["solo", "same", "same", "other"], dtype=object)
    adv, ret = compute_grpo_roc_outcome_advantage(rewards, mask, index=index, config=None)
    assert adv[0, 0].item() == pytest.approx(1.0)  # singleton: mean 0, std 1 -> raw score
    assert torch.all(adv[1:3] == 0)  # identical scores -> zero advantage
    assert adv[3, 0].item() == 0.0
    assert adv is ret
    ref, _ = get_adv_estimator_fn("grpo")(rewards.clone(), mask, index=index)
    torch.testing.assert_close(adv, ref)


def test_epsilon_and_extra_kwargs_from_config():
    rewards = torch.tensor([[1.0], [0.0]])
    mask = torch.ones(2, 1)
    index = np.array([7, 7])
    cfg = OmegaConf.create({"norm_adv_by_std_in_grpo": True, "roc": {"adv_epsilon": 0.5}})
    adv, _ = compute_grpo_roc_outcome_advantage(rewards, mask, index=index, config=cfg, non_tensor_batch={}, batch=None)
    std = float(np.std([1.0, 0.0], ddof=1))
    assert adv[0, 0].item() == pytest.approx(0.5 / (std + 0.5))
    tensor_index, _ = compute_grpo_roc_outcome_advantage(rewards, mask, index=torch.tensor([3, 3]), config=None)
    assert tensor_index[0, 0].item() == pytest.approx(0.5 / (std + 1e-6), rel=1e-5)


@pytest.mark.parametrize(
    "config,key",
    [
        ({"roc": {"adv_epsilon": -1.0}}, "algorithm.roc.adv_epsilon"),
        ({"roc": {"adv_epsilon": "small"}}, "algorithm.roc.adv_epsilon"),
        ({"norm_adv_by_std_in_grpo": "yes"}, "algorithm.norm_adv_by_std_in_grpo"),
    ],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        compute_grpo_roc_outcome_advantage(torch.ones(2, 1), torch.ones(2, 1), index=np.array([0, 0]), config=config)


def test_missing_uid_is_an_error():
    with pytest.raises(ValueError, match="uid"):
        compute_grpo_roc_outcome_advantage(torch.ones(2, 1), torch.ones(2, 1), index=None, config=None)


@pytest.mark.parametrize(
    "estimator,kwargs",
    [
        ("grpo", {"norm_adv_by_std_in_grpo": True}),
        ("grpo", {"norm_adv_by_std_in_grpo": False}),  # Dr.GRPO
        ("rloo", {}),
        ("reinforce_plus_plus", {}),
        ("grpo_roc", {}),
    ],
)
@pytest.mark.parametrize("roc_mode", ["release", "paper"])
def test_selection_is_independent_of_the_estimator(estimator, kwargs, roc_mode):
    """The kept batch (select_rollouts -> DataProto.select_idxs) works with any verl estimator."""
    cfg = (
        RoCConfig()
        if roc_mode == "release"
        else RoCConfig(positive_mode="inverse_penalty", negative_mode="uniform", count_rule="paper_half")
    )
    data, kept_correct = kept_batch(cfg)
    config = AlgoConfig(adv_estimator=estimator, norm_adv_by_std_in_grpo=kwargs.get("norm_adv_by_std_in_grpo", True))
    adv = _adv(data, estimator, config=config, **kwargs)
    assert adv.shape == data.batch["response_mask"].shape
    assert torch.isfinite(adv).all()
    mask = data.batch["response_mask"].bool()
    assert torch.all(adv[~mask] == 0)
    uids = data.non_tensor_batch["uid"]
    for uid in np.unique(uids):
        rows = torch.from_numpy(uids == uid)
        group_correct = kept_correct[rows.numpy()]
        if 0 < group_correct.sum() < group_correct.size:  # mixed group: every row carries signal
            assert torch.all(adv[rows][mask[rows]] != 0), uid
            if estimator != "reinforce_plus_plus":  # group baselines: positives above negatives
                pos = adv[rows][torch.from_numpy(group_correct)][:, 0]
                neg = adv[rows][torch.from_numpy(~group_correct)][:, 0]
                assert pos.min() > 0 > neg.max()
