"""RoC selection engine: exact parity with the public release, count tables, paper modes, floors, edge cases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from grporoc_plugin.reference import release_down_sample
from grporoc_plugin.roc import (
    METRIC_KEYS,
    RoCConfig,
    align_groups_to_world_size,
    factorize_groups,
    select_rollouts,
)
from grporoc_plugin.rules import paper_half, release_round

RELEASE = {"positive_mode": "topk", "negative_mode": "first_k", "count_rule": "release_round", "tie_break": "index"}


def release_reference(uids, correct, penalties, n, min_zero, min_non_zero, reject_equal):
    """The release's reject_equal_reward + resample_of_correct (grporoc_plugin.reference); (kept, asserted uids)."""
    return release_down_sample(
        uids, np.asarray(correct, dtype=np.float64), n, min_zero, min_non_zero, penalty=np.asarray(penalties),
        reject_equal=reject_equal, on_assert="record",
    )  # fmt: skip


def _compositions(big_n: int, rng: np.random.Generator, reps: int = 3):
    """One group per (pos count, repetition): shuffled outcomes, discrete penalties with many ties or continuous."""
    uids, correct, penalties = [], [], []
    for n_pos in range(big_n + 1):
        for rep in range(reps):
            outcome = np.zeros(big_n, dtype=bool)
            outcome[:n_pos] = True
            rng.shuffle(outcome)
            if rep % 3 == 2:
                pen = rng.random(big_n)
            else:
                pen = rng.choice([0.0, 0.5, 1.0, 1.5], size=big_n)
            uids += [f"g{big_n}-{n_pos}-{rep}"] * big_n
            correct.append(outcome)
            penalties.append(pen)
    return np.array(uids, dtype=object), np.concatenate(correct), np.concatenate(penalties)


def _interleave(uids, correct, penalties, rng):
    perm = rng.permutation(len(uids))
    return uids[perm], correct[perm], penalties[perm]


@pytest.mark.parametrize("big_n,n", [(32, 16), (8, 4), (24, 16), (33, 16), (16, 16), (12, 16)])
@pytest.mark.parametrize("floor", [-1, 2])
@pytest.mark.parametrize("reject_equal", [False, True])
@pytest.mark.parametrize("interleaved", [False, True])
def test_release_parity_exhaustive(big_n, n, floor, reject_equal, interleaved):
    rng = np.random.default_rng(big_n * 100 + n + floor)
    uids, correct, pen = _compositions(big_n, rng)
    if interleaved:
        uids, correct, pen = _interleave(uids, correct, pen, rng)
    expected, asserted = release_reference(uids, correct, pen, n, floor, floor, reject_equal)
    assert not asserted  # even keep_n: no half-to-even double rounding
    cfg = RoCConfig(keep_n=n, min_pos=floor, min_neg=floor, reject_equal_reward=reject_equal, **RELEASE)
    kept, metrics = select_rollouts(uids, correct, pen, cfg, seed=123)
    np.testing.assert_array_equal(kept, expected)
    assert metrics["roc/rows_kept"] == expected.size
    assert metrics["roc/groups_count_repaired"] == 0


@pytest.mark.parametrize("big_n,n", [(6, 3), (10, 5), (14, 7), (9, 5)])
@pytest.mark.parametrize("floor", [-1, 1])
def test_release_parity_odd_keep_n_repairs_the_release_assert(big_n, n, floor):
    """Odd keep_n: where the release asserts we keep exactly n rows; everywhere else we match it."""
    rng = np.random.default_rng(7)
    uids, correct, pen = _compositions(big_n, rng)
    expected, asserted = release_reference(uids, correct, pen, n, floor, floor, reject_equal=False)
    cfg = RoCConfig(keep_n=n, min_pos=floor, min_neg=floor, reject_equal_reward=False, **RELEASE)
    kept, metrics = select_rollouts(uids, correct, pen, cfg)
    in_asserted = np.isin(uids[kept], list(asserted))
    np.testing.assert_array_equal(kept[~in_asserted], expected)
    assert metrics["roc/groups_count_repaired"] == len(asserted)
    if big_n == 6 and floor == -1:
        assert asserted  # 3 pos / 3 neg -> round(1.5) + round(1.5) = 4 != 3: the release crashes here
    for uid in asserted:
        assert np.sum(uids[kept] == uid) == n


def _kept_counts(kept, correct, uids, uid):
    rows = kept[uids[kept] == uid]
    return int(correct[rows].sum()), int((~correct[rows]).sum())


# spec §1.5 table, 32 -> 16: release (floors 2) vs paper (no floors)
RELEASE_TABLE_32_16 = {
    2: (2, 14),
    5: (2, 14),
    9: (4, 12),
    17: (8, 8),
    25: (12, 4),
    29: (14, 2),
    30: (14, 2),
    31: (15, 1),
}
PAPER_TABLE_32_16 = {2: (1, 15), 5: (3, 13), 17: (9, 7), 29: (15, 1), 30: (15, 1), 31: (16, 0)}


def test_count_table_32_to_16():
    n_pos = np.arange(1, 32)
    n_neg = 32 - n_pos
    r_pos, r_neg, _, keep_all, repaired = release_round(n_pos, n_neg, 16, 2, 2)
    p_pos, p_neg, *_ = paper_half(n_pos, n_neg, 16, -1, -1)
    assert not keep_all.any() and not repaired.any()
    assert np.all(r_pos + r_neg == 16) and np.all(p_pos + p_neg == 16)
    for pos, counts in RELEASE_TABLE_32_16.items():
        assert (r_pos[pos - 1], r_neg[pos - 1]) == counts, pos
    for pos, counts in PAPER_TABLE_32_16.items():
        assert (p_pos[pos - 1], p_neg[pos - 1]) == counts, pos
    # paper rule for 2G -> G without floors is (ceil(pos/2), floor(neg/2)) everywhere
    np.testing.assert_array_equal(p_pos, -(-n_pos // 2))
    np.testing.assert_array_equal(p_neg, n_neg // 2)
    # the release differs from the paper rule exactly on the rows the spec lists
    differ = {int(p) for p in n_pos[(r_pos != -(-n_pos // 2))]}
    assert differ == {2, 5, 9, 13, 17, 21, 25, 29, 30, 31}
    # without floors the release leaves a 31/1 group with zero advantage (16/0); paper with floors keeps the 1
    no_floor_pos, no_floor_neg, *_ = release_round(np.array([31]), np.array([1]), 16, -1, -1)
    assert (no_floor_pos[0], no_floor_neg[0]) == (16, 0)
    floor_pos, floor_neg, *_ = paper_half(np.array([31, 2]), np.array([1, 30]), 16, 2, 2)
    assert list(zip(floor_pos.tolist(), floor_neg.tolist(), strict=True)) == [(15, 1), (2, 14)]


@pytest.mark.parametrize(
    "count_rule,floor,table", [("release_round", 2, RELEASE_TABLE_32_16), ("paper_half", -1, PAPER_TABLE_32_16)]
)
def test_count_table_through_select(count_rule, floor, table):
    uids, correct = [], []
    for pos in table:
        uids += [f"p{pos}"] * 32
        correct += [True] * pos + [False] * (32 - pos)
    uids, correct = np.array(uids, dtype=object), np.array(correct)
    pen = np.zeros(len(uids))
    cfg = RoCConfig(keep_n=16, min_pos=floor, min_neg=floor, count_rule=count_rule)
    kept, metrics = select_rollouts(uids, correct, pen, cfg)
    for pos, counts in table.items():
        assert _kept_counts(kept, correct, uids, f"p{pos}") == counts
    assert metrics["roc/groups_selected"] == len(table)


def test_release_keep_all_branch_is_reproduced_and_reported():
    """The release's "keep all N" branch: both rounded counts below their floors (needs min_pos+min_neg > n)."""
    # 3/3 -> 4 with floors 3/3: both counts round to 2 < 3 -> the release keeps all 6 rows
    keep_all = release_round(np.array([3, 5]), np.array([3, 1]), 4, 3, 3).keep_all
    assert keep_all.tolist() == [True, False]
    # It needs min_pos + min_neg > keep_n (round(x) + round(n - x) >= n - 1), which RoCConfig forbids (the
    # release asserts it at start-up too), so select_rollouts never reaches it with a valid config.
    with pytest.raises(ValueError, match="min_pos"):
        RoCConfig(keep_n=4, min_pos=3, min_neg=3)
    n_pos = np.arange(0, 41)
    for n in range(1, 21):
        for lo in range(-1, n + 1):
            hi = min(n - max(lo, 0), n)
            keep_all = release_round(n_pos, 40 - n_pos, n, lo, hi).keep_all
            assert not keep_all.any()


def test_topk_prefers_low_penalty_ties_by_index_and_first_k_negatives():
    # 20 pos / 12 neg -> 10 pos / 6 neg (spec §1.5 worked example)
    correct = np.array([True] * 20 + [False] * 12)
    pen = np.array([1.5] * 6 + [0.0] * 14 + [0.0] * 12)
    kept, _ = select_rollouts(["u"] * 32, correct, pen, RoCConfig(keep_n=16))
    np.testing.assert_array_equal(kept, list(range(6, 16)) + list(range(20, 26)))
    # random tie-break: still only p = 0 positives, but not always the lowest indices
    picks = set()
    for seed in range(20):
        kept, _ = select_rollouts(["u"] * 32, correct, pen, RoCConfig(keep_n=16, tie_break="random"), seed=seed)
        pos_kept = kept[kept < 20]
        assert pos_kept.size == 10 and np.all(pen[pos_kept] == 0.0)
        picks.add(tuple(pos_kept))
    assert len(picks) > 1


def test_inverse_penalty_prefers_low_penalty_but_still_samples_high():
    correct = np.array([True] * 20 + [False] * 12)
    pen = np.array([0.0] * 10 + [1.5] * 10 + [0.0] * 12)
    cfg = RoCConfig(keep_n=16, positive_mode="inverse_penalty", count_rule="paper_half")
    freq = np.zeros(32)
    trials = 400
    for seed in range(trials):
        kept, _ = select_rollouts(["u"] * 32, correct, pen, cfg, seed=seed)
        assert np.sum(correct[kept]) == 10
        freq[kept] += 1
    low, high = freq[:10] / trials, freq[10:20] / trials
    assert low.min() > high.max()  # every clean positive beats every penalised one
    assert 0.0 < high.mean() < 0.2  # weights 1/0.1 vs 1/1.6: rare but present (topk would never pick them)
    assert np.all(high > 0)


def test_uniform_negatives_cover_all_rows_evenly():
    correct = np.array([True] * 20 + [False] * 12)
    cfg = RoCConfig(keep_n=16, negative_mode="uniform")
    freq = np.zeros(32)
    trials = 400
    for seed in range(trials):
        kept, _ = select_rollouts(["u"] * 32, correct, np.zeros(32), cfg, seed=seed)
        freq[kept] += 1
    neg_freq = freq[20:] / trials
    assert np.all(np.abs(neg_freq - 0.5) < 0.1)  # 6 of 12 each time
    first_k = select_rollouts(["u"] * 32, correct, np.zeros(32), RoCConfig(keep_n=16))[0]
    np.testing.assert_array_equal(first_k[first_k >= 20], np.arange(20, 26))


@pytest.mark.parametrize("count_rule", ["release_round", "paper_half"])
def test_floors_keep_the_minority(count_rule):
    correct = np.array([True] * 31 + [False])
    with_floor, m1 = select_rollouts(["u"] * 32, correct, np.zeros(32), RoCConfig(keep_n=16, count_rule=count_rule))
    assert (~correct[with_floor]).sum() == 1 and with_floor.size == 16
    assert m1["roc/groups_floor_applied"] == 1
    cfg = RoCConfig(keep_n=16, count_rule=count_rule, min_pos=-1, min_neg=-1)
    no_floor, m2 = select_rollouts(["u"] * 32, correct, np.zeros(32), cfg)
    assert (~correct[no_floor]).sum() == 0  # zero-advantage group
    assert m2["roc/groups_floor_applied"] == 0
    # positive minority, floor 2 with 3 available
    correct = np.array([True] * 3 + [False] * 29)
    cfg = RoCConfig(keep_n=16, count_rule=count_rule, min_pos=3, min_neg=2)
    kept, _ = select_rollouts(["u"] * 32, correct, np.zeros(32), cfg)
    assert correct[kept].sum() == 3


def test_small_groups_drop_or_keep():
    uids = ["a"] * 10 + ["b"] * 16 + ["c"] * 20
    correct = np.array([True, False] * 5 + [True, False] * 8 + [True, False] * 10)
    kept, m = select_rollouts(uids, correct, np.zeros(46), RoCConfig(keep_n=16))
    assert set(np.asarray(uids)[kept]) == {"b", "c"} and kept.size == 32
    assert m["roc/small_groups_dropped"] == 1 and m["roc/small_groups_kept"] == 0 and m["roc/groups_exact_size"] == 1
    kept, m = select_rollouts(uids, correct, np.zeros(46), RoCConfig(keep_n=16, small_group="keep"))
    assert kept.size == 42 and np.all(kept[:10] == np.arange(10))
    assert m["roc/small_groups_kept"] == 1 and m["roc/small_groups_dropped"] == 0


def test_reject_equal_reward_uses_tolerance_and_reports_both_kinds():
    uids = ["ok"] * 32 + ["allc"] * 32 + ["allw"] * 32 + ["near"] * 32
    correct = np.array([True, False] * 16 + [True] * 32 + [False] * 32 + [True] * 32)
    scores = correct.astype(np.float64)
    scores[96:112] += 1e-9  # 1.0 and 1.0 + 1e-9 are "equal"
    kept, m = select_rollouts(uids, correct, np.zeros(128), RoCConfig(keep_n=16), scores=scores)
    assert set(np.asarray(uids)[kept]) == {"ok"}
    assert m["roc/groups_rejected_all_correct"] == 2 and m["roc/groups_rejected_all_wrong"] == 1
    assert m["roc/groups_equal_reward"] == 3
    # shaped scores that differ beyond the tolerance keep the group (selection still classifies on `correct`)
    scores[96:112] += 1e-3
    kept, m = select_rollouts(uids, correct, np.zeros(128), RoCConfig(keep_n=16), scores=scores)
    assert set(np.asarray(uids)[kept]) == {"ok", "near"}
    # disabled: all-equal groups go through selection (top-n positives / first n negatives), still counted
    kept, m = select_rollouts(uids, correct, np.zeros(128), RoCConfig(keep_n=16, reject_equal_reward=False))
    assert kept.size == 64 and m["roc/groups_equal_reward"] == 3 and m["roc/groups_rejected_all_correct"] == 0
    # equal scores with mixed acc (e.g. shaped score) are rejected and reported separately
    kept, m = select_rollouts(
        ["x"] * 4, [True, False, True, False], np.zeros(4), RoCConfig(keep_n=2, min_pos=1, min_neg=1), scores=[1] * 4
    )
    assert kept.size == 0 and m["roc/groups_rejected_equal_mixed"] == 1


def test_world_size_alignment_drops_whole_groups_lowest_information_first():
    # three kept groups of 16 (information: balanced, 15/1, all-negative) with world size 32 -> drop one group
    uids = np.repeat(np.array(["bal", "skew", "flat"], dtype=object), 16)
    correct = np.concatenate([np.arange(16) % 2 == 0, np.arange(16) < 15, np.zeros(16, dtype=bool)])
    kept, removed = align_groups_to_world_size(uids, np.arange(48), 32, correct=correct)
    assert removed == 16 and set(uids[kept]) == {"bal", "skew"}
    # without outcome info: the group appearing last goes (like the release's tail truncation, but whole)
    kept, removed = align_groups_to_world_size(uids, np.arange(48), 32)
    assert removed == 16 and set(uids[kept]) == {"bal", "skew"}
    # mixed sizes 16,16,16,5,3,7 and world size 8 -> drop the 7-row group only (fewest groups, then rows)
    sizes = [16, 16, 16, 5, 3, 7]
    uids = np.repeat(np.arange(len(sizes)), sizes)
    kept, removed = align_groups_to_world_size(uids, np.arange(uids.size), 8)
    assert removed == 7 and set(uids[kept]) == {0, 1, 2, 3, 4}
    # world size larger than everything: nothing fits, empty selection (the trainer skips the step)
    kept, removed = align_groups_to_world_size(uids, np.arange(uids.size), 128)
    assert kept.size == 0 and removed == uids.size
    kept, removed = align_groups_to_world_size(uids, np.arange(uids.size), 8, mode="none")
    assert kept.size == uids.size and removed == 0


def test_world_size_alignment_through_config_never_splits_groups():
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 40, size=60)
    uids = np.repeat(np.array([f"u{i}" for i in range(60)], dtype=object), sizes)
    correct = rng.random(uids.size) < 0.5
    pen = rng.random(uids.size)
    base_cfg = RoCConfig(keep_n=8, small_group="keep", reject_equal_reward=False)
    base, _ = select_rollouts(uids, correct, pen, base_cfg)
    for ws in (3, 8, 24, 64):
        cfg = RoCConfig(keep_n=8, small_group="keep", reject_equal_reward=False, world_size=ws)
        kept, m = select_rollouts(uids, correct, pen, cfg)
        assert kept.size % ws == 0
        assert set(kept) <= set(base)
        assert m["roc/world_size_removed_rows"] == base.size - kept.size
        for uid in set(uids[base]):
            n_kept = np.sum(uids[kept] == uid)
            assert n_kept in (0, np.sum(uids[base] == uid))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"keep_n": 0}, "keep_n"),
        ({"keep_n": 2.5}, "keep_n"),
        ({"keep_n": True}, "keep_n"),
        ({"positive_mode": "sample"}, "positive_mode"),
        ({"negative_mode": "sorted"}, "negative_mode"),
        ({"count_rule": "floor"}, "count_rule"),
        ({"min_pos": -2}, "min_pos"),
        ({"min_neg": 17}, "min_neg"),
        ({"min_pos": 9, "min_neg": 8}, "min_pos + RoCConfig.min_neg"),
        ({"reject_equal_reward": "yes"}, "reject_equal_reward"),
        ({"equal_reward_tol": -1.0}, "equal_reward_tol"),
        ({"equal_reward_tol": float("nan")}, "equal_reward_tol"),
        ({"small_group": "pad"}, "small_group"),
        ({"penalty_eps": 0.0}, "penalty_eps"),
        ({"tie_break": "length"}, "tie_break"),
        ({"tie_break": "random", "positive_mode": "inverse_penalty"}, "tie_break"),
        ({"world_size": 0}, "world_size"),
        ({"world_size_align": "truncate_rows"}, "world_size_align"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=re.escape(f"RoCConfig.{field}")):
        RoCConfig(**kwargs)


def test_from_mapping_rejects_unknown_keys():
    assert RoCConfig.from_mapping({"keep_n": 8, "rule": "pods"}).rule == "pods"
    with pytest.raises(ValueError, match="keepn"):
        RoCConfig.from_mapping({"keepn": 8})
    # select_rollouts accepts a mapping of the fields too (e.g. an OmegaConf node converted to a dict)
    kept, _ = select_rollouts(["u"] * 8, [True, False] * 4, np.zeros(8), {"keep_n": 4, "min_pos": 1, "min_neg": 1})
    assert kept.size == 4
    with pytest.raises(ValueError, match="RoCConfig.keep_n"):
        select_rollouts(["u"] * 8, [True, False] * 4, np.zeros(8), {"keep_n": 0})


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="penalty"):
        select_rollouts(["a", "a"], [True, False], [0.0], RoCConfig())
    with pytest.raises(ValueError, match="hashable"):
        factorize_groups([[1], [2]])


def test_nonfinite_penalties_rank_last_and_are_counted():
    correct = np.array([True] * 4 + [False] * 4)
    pen = np.array([np.nan, 0.0, np.inf, 1.0, 0, 0, 0, 0])
    kept, m = select_rollouts(["u"] * 8, correct, pen, RoCConfig(keep_n=4, min_pos=-1, min_neg=-1))
    np.testing.assert_array_equal(kept, [1, 3, 4, 5])
    assert m["roc/nonfinite_penalty_rows"] == 2


def test_empty_input_gives_empty_result_zero_counts_and_no_means():
    empty = {"p_err": [], "no_tool": [], "p_format": [], "tool_calls": [], "tool_errors": []}
    kept, m = select_rollouts([], [], [], RoCConfig(), stats=empty)
    assert kept.dtype == np.int64 and kept.size == 0
    rule_counters = {"roc/groups_floor_applied", "roc/groups_release_keep_all", "roc/groups_count_repaired"}
    assert set(m) == set(METRIC_KEYS) | rule_counters  # an empty set has no mean: absent, never 0
    assert all(v == 0 for v in m.values())
    kept, m = select_rollouts(
        np.array([], dtype=object), np.array([], dtype=bool), np.array([]), RoCConfig(world_size=8)
    )
    assert kept.size == 0


def test_fig4_tool_error_ratio_is_failed_calls_over_calls_among_positives():
    """Paper Fig. 4: share of failed tool calls among the tool calls of positive trajectories (not a penalty mean)."""
    # positives: 10 clean users of 2 calls, 4 with 1 failed of 4 calls, 6 without tools; negatives: 12 x 3 of 3 failed
    correct = np.array([True] * 20 + [False] * 12)
    calls = np.array([2] * 10 + [4] * 4 + [0] * 6 + [3] * 12)
    errors = np.array([0] * 10 + [1] * 4 + [0] * 6 + [3] * 12)
    p_err = np.where(calls > 0, errors / np.maximum(calls, 1), 0.5)
    p_format = np.array([0.0] * 14 + [1.0] * 6 + [0.0] * 12)
    stats = {"tool_calls": calls, "tool_errors": errors, "p_err": p_err, "p_format": p_format, "no_tool": calls == 0}
    kept, m = select_rollouts(["u"] * 32, correct, p_err + p_format, RoCConfig(keep_n=16), stats=stats)
    assert m["roc/pos_tool_error_ratio_before"] == pytest.approx(4 / (20 + 16))  # 4 failed of 36 calls
    assert m["roc/pos_tool_error_ratio_after"] == 0.0  # the 10 kept positives are the clean ones
    # the penalty mean keeps its own name: a no-tool positive counts 0.5 there, nothing in the Fig. 4 ratio
    assert m["roc/pos_p_err_mean_before"] == pytest.approx((4 * 0.25 + 6 * 0.5) / 20)
    assert m["roc/pos_no_tool_share_before"] == pytest.approx(6 / 20) and m["roc/pos_no_tool_share_after"] == 0.0
    assert m["roc/pos_format_penalty_mean_after"] == 0.0
    assert m["roc/pos_penalty_mean_before"] > m["roc/pos_penalty_mean_after"] == 0.0
    assert m["roc/kept_pos"] == 10 and m["roc/kept_neg"] == 6


def test_fig4_ratio_is_absent_without_tool_calls_or_positives():
    correct = np.array([True] * 4 + [False] * 4)
    stats = {"tool_calls": [0] * 4 + [2] * 4, "tool_errors": [0] * 4 + [1] * 4}
    _, m = select_rollouts(["u"] * 8, correct, np.zeros(8), RoCConfig(keep_n=4, min_pos=1, min_neg=1), stats=stats)
    assert "roc/pos_tool_error_ratio_before" not in m and "roc/pos_tool_error_ratio_after" not in m
    _, m = select_rollouts(["u"] * 8, [False] * 8, np.zeros(8), RoCConfig(keep_n=4), stats=stats)
    assert "roc/pos_tool_error_ratio_before" not in m and "roc/pos_penalty_mean_before" not in m


def test_determinism_and_seed_dependence_only_in_sampling_modes():
    rng = np.random.default_rng(3)
    uids = np.repeat(np.arange(64), 32)
    correct = rng.random(uids.size) < 0.5
    pen = rng.choice([0.0, 0.5, 1.0], size=uids.size)
    sampling = RoCConfig(positive_mode="inverse_penalty", negative_mode="uniform", count_rule="paper_half")
    a, _ = select_rollouts(uids, correct, pen, sampling, seed=5)
    b, _ = select_rollouts(uids, correct, pen, sampling, seed=5)
    c, _ = select_rollouts(uids, correct, pen, sampling, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    r1, _ = select_rollouts(uids, correct, pen, RoCConfig(), seed=5)
    r2, _ = select_rollouts(uids, correct, pen, RoCConfig(), seed=6)
    np.testing.assert_array_equal(r1, r2)
