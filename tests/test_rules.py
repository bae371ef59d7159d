"""Selection-rule registries: PODS optimality by brute force, the uniform rule, the void-turn pre-filter, third-party
registration, and properties shared by every rule (determinism, whole groups, kept count)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grporoc_plugin import rules
from grporoc_plugin.roc import RoCConfig, select_rollouts


def _variance(values) -> float:
    return float(np.var(np.asarray(values, dtype=np.float64)))


@settings(max_examples=300, deadline=None)
@given(
    rewards=st.lists(
        st.one_of(st.integers(-3, 3).map(float), st.floats(-5, 5, allow_nan=False, width=32)), min_size=2, max_size=9
    ),
    data=st.data(),
)
def test_pods_keeps_a_max_variance_subset_brute_force(rewards, data):
    """For every n <= 9 and m < n: the kept subset's reward variance equals the maximum over all C(n, m) subsets."""
    n = len(rewards)
    m = data.draw(st.integers(1, n - 1))
    cfg = RoCConfig(keep_n=m, rule="pods", reject_equal_reward=False, min_pos=-1, min_neg=-1)
    kept, metrics = select_rollouts(["g"] * n, np.array(rewards) > 0, np.zeros(n), cfg, scores=rewards)
    assert kept.size == m and metrics["roc/groups_selected"] == 1
    best = max(_variance([rewards[i] for i in subset]) for subset in itertools.combinations(range(n), m))
    assert _variance([rewards[i] for i in kept]) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_pods_on_binary_rewards_balances_the_signs():
    # 12 correct / 4 wrong -> 8: max variance keeps every wrong one and 4 correct (closest to half/half)
    correct = np.array([True] * 12 + [False] * 4)
    kept, _ = select_rollouts(["u"] * 16, correct, np.zeros(16), RoCConfig(keep_n=8, rule="pods"))
    assert correct[kept].sum() == 4 and (~correct[kept]).sum() == 4
    # ties by rollout order: the first 4 correct rows (stable sort, top block taken from the end of each tie run)
    assert set(np.flatnonzero(~correct)) <= set(kept.tolist())


def test_pods_works_per_group_on_interleaved_groups():
    rng = np.random.default_rng(0)
    uids = np.repeat(np.arange(20), 10)
    rng.shuffle(uids)
    scores = rng.normal(size=uids.size)
    cfg = RoCConfig(keep_n=4, rule="pods", reject_equal_reward=False)
    kept, _ = select_rollouts(uids, scores > 0, np.zeros(uids.size), cfg, scores=scores)
    for g in range(20):
        rows = np.flatnonzero(uids == g)
        got = _variance(scores[np.intersect1d(rows, kept)])
        best = max(_variance(scores[list(s)]) for s in itertools.combinations(rows, 4))
        assert got == pytest.approx(best)


def test_uniform_rule_ignores_outcome_and_penalty_and_depends_on_seed():
    correct = np.array([True] * 8 + [False] * 8)
    pen = np.arange(16, dtype=float)
    cfg = RoCConfig(keep_n=8, rule="uniform")
    seen = np.zeros(16)
    for seed in range(400):
        kept, _ = select_rollouts(["u"] * 16, correct, pen, cfg, seed=seed)
        assert kept.size == 8
        seen[kept] += 1
    # every row kept about half of the time (binomial(400, 0.5): mean 200, sd 10)
    assert np.all(np.abs(seen - 200) < 60), seen


def test_uniform_positive_mode_is_the_control_of_roc_counts():
    """positive_mode=uniform keeps RoC's per-sign counts but ignores penalties (issue 8's `random` arm)."""
    correct = np.array([True] * 20 + [False] * 12)
    pen = np.array([2.0] * 10 + [0.0] * 10 + [0.0] * 12)
    roc, _ = select_rollouts(["u"] * 32, correct, pen, RoCConfig(keep_n=16))
    assert set(roc[:10].tolist()) == set(range(10, 20))  # RoC keeps the clean ones
    high = 0
    for seed in range(200):
        kept, m = select_rollouts(
            ["u"] * 32, correct, pen, RoCConfig(keep_n=16, positive_mode="uniform", negative_mode="uniform"), seed=seed
        )
        assert (m["roc/kept_pos"], m["roc/kept_neg"]) == (10, 6)  # same counts as RoC
        high += int(np.sum(kept < 10))
    assert 0.4 < high / (200 * 10) < 0.6  # half of the kept positives come from the high-penalty half


def test_void_turn_prefilter_drops_trajectories_then_groups_shrink():
    correct = np.array([True, False] * 8)
    void = np.zeros(16, dtype=int)
    void[[0, 1, 2]] = 1
    cfg = RoCConfig(keep_n=8, prefilters=["void_turn"], min_pos=1, min_neg=1)
    kept, m = select_rollouts(["u"] * 16, correct, np.zeros(16), cfg, stats={"void_turns": void})
    assert not set(kept.tolist()) & {0, 1, 2} and kept.size == 8
    assert m["roc/rows_prefiltered"] == 3 and m["roc/rows_before"] == 16 and m["roc/rows_dropped"] == 8
    # a group that falls under keep_n after filtering follows small_group
    void[:10] = 1
    kept, m = select_rollouts(["u"] * 16, correct, np.zeros(16), cfg, stats={"void_turns": void})
    assert kept.size == 0 and m["roc/small_groups_dropped"] == 1
    with pytest.raises(ValueError, match="void_turns"):
        select_rollouts(["u"] * 16, correct, np.zeros(16), cfg)
    # off by default
    kept, m = select_rollouts(["u"] * 16, correct, np.zeros(16), RoCConfig(keep_n=8), stats={"void_turns": void})
    assert m["roc/rows_prefiltered"] == 0


def test_third_party_rules_register_with_the_same_decorators():
    name = "test_lowest_index"

    @rules.register_selection_rule(name)
    def lowest_index(rows, config, rngs):
        quota = np.full(rows.n_groups, config.keep_n)
        return rules.RuleResult(
            rules._first_per_block(rows.codes, quota, np.arange(rows.codes.size)), {"custom": rows.selectable}
        )

    @rules.register_positive_ranker("test_longest")
    def longest(rows, rng, config):
        return -rows.penalty

    try:
        cfg = RoCConfig(keep_n=3, rule=name, min_pos=1, min_neg=1)
        kept, m = select_rollouts(["u"] * 6, [True, False] * 3, np.zeros(6), cfg)
        assert kept.tolist() == [0, 1, 2] and m["roc/groups_custom"] == 1
        cfg = RoCConfig(keep_n=2, positive_mode="test_longest", min_pos=1, min_neg=1)
        kept, _ = select_rollouts(["u"] * 4, [True, True, False, False], np.array([0.0, 1.0, 0, 0]), cfg)
        assert kept.tolist() == [1, 2]
        assert name in rules.registered_components()["selection rule"]
        with pytest.raises(ValueError, match="already registered"):
            rules.register_selection_rule(name)(lambda *a: None)
    finally:
        del rules.SELECTION_RULE_REGISTRY[name], rules.POSITIVE_RANKER_REGISTRY["test_longest"]
    with pytest.raises(ValueError, match=re.escape("RoCConfig.rule must be one of the registered names")):
        RoCConfig(rule=name)
    with pytest.raises(ValueError, match="unknown selection rule 'nope'; registered: "):
        rules.get_selection_rule("nope")


@pytest.mark.parametrize("rule", sorted(rules.SELECTION_RULE_REGISTRY))
def test_every_rule_keeps_whole_groups_of_keep_n_deterministically(rule):
    rng = np.random.default_rng(1)
    uids = np.repeat(np.arange(30), 12)
    correct = rng.random(uids.size) < 0.5
    scores = correct + rng.normal(scale=0.1, size=uids.size)
    cfg = RoCConfig(keep_n=6, rule=rule, world_size=4)
    kept, m = select_rollouts(uids, correct, rng.random(uids.size), cfg, seed=3, scores=scores)
    again, _ = select_rollouts(uids, correct, rng.random(uids.size) * 0 + 0, cfg, seed=3, scores=scores)
    if rule != "roc":  # roc reads the penalties (changed above); the others must not
        np.testing.assert_array_equal(kept, again)
    counts = np.bincount(uids[kept], minlength=30)
    assert set(counts[counts > 0].tolist()) == {6} and kept.size % 4 == 0
    assert m["roc/rows_kept"] == kept.size
