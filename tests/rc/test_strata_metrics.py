"""RoC stratified by the RC token (engine + adapter) and the rc/* metrics of the selection stage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rc_helpers import HIGH, LOW

from grporoc_plugin.adapter import RoCStage, Sessions
from grporoc_plugin.config import resolve_settings
from grporoc_plugin.rc.metrics import rc_metrics
from grporoc_plugin.rc.settings import RCSettings
from grporoc_plugin.roc import RoCConfig, select_rollouts
from grporoc_plugin.rules import stratified_quota


def _group():
    """One group of 16 (keep 8): 10 positives (4 high, 6 low), 6 negatives (3 high, 3 low). The low-token
    positives all have a higher penalty, so RoC's top-k keeps high-token positives first."""
    tokens = np.array([HIGH] * 4 + [LOW] * 6 + [HIGH] * 3 + [LOW] * 3, dtype=object)
    correct = np.array([True] * 10 + [False] * 6)
    penalty = np.array([0.0] * 4 + [0.5] * 6 + [0.0] * 6)
    return ["g"] * 16, correct, penalty, tokens


def test_unstratified_roc_skews_kept_positives_to_the_high_token_and_stratified_keeps_the_mix():
    groups, correct, penalty, tokens = _group()
    cfg = RoCConfig(keep_n=8, min_pos=1, min_neg=1)
    plain, _ = select_rollouts(groups, correct, penalty, config=cfg)
    strat, _ = select_rollouts(groups, correct, penalty, config=cfg, strata=tokens)
    # release_round: 5 positives + 3 negatives either way
    for kept in (plain, strat):
        assert len(kept) == 8 and correct[kept].sum() == 5
    # unstratified: the 4 clean high-token positives, then 1 low -> 80 % high among kept positives (40 % before)
    assert (tokens[plain][correct[plain]] == HIGH).sum() == 4
    # stratified: 5 * 4/10 = 2 high positives; negatives 3 * 3/6 = 1.5 each, the tie goes to the first stratum
    assert (tokens[strat][correct[strat]] == HIGH).sum() == 2
    assert (tokens[strat][~correct[strat]] == HIGH).sum() == 2


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 2)), min_size=1, max_size=60),
    st.integers(1, 6),
    st.integers(0, 10_000),
)
def test_stratification_keeps_the_per_sign_counts_and_splits_them_proportionally(rows, keep_n, seed):
    groups = np.array([g for g, _, _ in rows])
    correct = np.array([c for _, c, _ in rows])
    strata = np.array([f"s{s}" for _, _, s in rows], dtype=object)
    penalty = np.random.default_rng(seed).random(len(rows))
    cfg = RoCConfig(keep_n=keep_n, min_pos=-1, min_neg=-1, positive_mode="uniform", negative_mode="uniform")
    plain, _ = select_rollouts(groups, correct, penalty, config=cfg, seed=seed)
    strat, _ = select_rollouts(groups, correct, penalty, config=cfg, seed=seed, strata=strata)
    for g in np.unique(groups):
        for sign in (True, False):
            block = (groups == g) & (correct == sign)
            assert np.isin(np.flatnonzero(block), plain).sum() == np.isin(np.flatnonzero(block), strat).sum()
            quota = int(np.isin(np.flatnonzero(block), strat).sum())
            for s in np.unique(strata[block]):
                share = quota * (block & (strata == s)).sum() / block.sum()
                kept = np.isin(np.flatnonzero(block & (strata == s)), strat).sum()
                assert np.floor(share) <= kept <= np.ceil(share)


def test_stratified_quota_sums_and_caps():
    block = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    strata = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    sub, quota = stratified_quota(block, np.array([3, 2]), strata)
    per_sub = {int(code): int(quota[code]) for code in np.unique(sub)}
    assert per_sub == {0: 2, 1: 1, 2: 1, 3: 1}  # block 0: 3 * (3/5, 2/5) -> (1.8, 1.2) -> (2, 1); block 1: (1, 1)
    with pytest.raises(ValueError, match="does not support strata"):
        select_rollouts(
            ["g"] * 4,
            [1, 0, 1, 0],
            [0] * 4,
            config=RoCConfig(keep_n=2, rule="pods", min_pos=1, min_neg=1),
            strata=[0] * 4,
        )


def _sessions(tokens, correct, in_prompt=True):
    counters = [{"rc_token": t, "rc_token_in_prompt": in_prompt} for t in tokens]
    groups = [f"g{i // 4}" for i in range(len(tokens))]
    return Sessions(groups, np.asarray(correct, dtype=float), counters)


def test_rc_metrics_by_hand():
    # g0 mixed tokens and outcomes; g1 all correct (zero variance), tokens mixed; g2 all wrong, all high
    tokens = [HIGH, HIGH, LOW, LOW, HIGH, LOW, HIGH, LOW, HIGH, HIGH, HIGH, HIGH]
    correct = [1, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    s = _sessions(tokens, correct)
    values = np.asarray(correct, dtype=float)
    m = rc_metrics(s.group_ids, values, values > 0.5, s.counters, np.array([0, 2, 3]), RCSettings())
    assert m["rc/zero_var_group_share"] == pytest.approx(2 / 3)
    assert m["rc/group_std_mean"] == pytest.approx(np.std([1, 1, 0, 1]) / 3)
    assert m["rc/high_share"] == pytest.approx(8 / 12) and m["rc/groups_mixed_tokens_share"] == pytest.approx(2 / 3)
    assert m["rc/acc_high"] == pytest.approx(4 / 8) and m["rc/acc_low"] == pytest.approx(3 / 4)
    assert m["rc/pos_high_share_before"] == pytest.approx(4 / 7) and m["rc/neg_high_share_before"] == pytest.approx(
        4 / 5
    )
    assert m["rc/kept_pos_high_share"] == pytest.approx(1 / 2) and m["rc/kept_neg_high_share"] == 0.0
    assert m["rc/token_in_prompt_share"] == 1.0
    plain = rc_metrics(s.group_ids, values, values > 0.5, [{}] * 12, np.arange(12), RCSettings())
    assert set(plain) == {"rc/zero_var_group_share", "rc/group_std_mean"}  # no tokens: no token metrics


def test_stage_reports_rc_metrics_and_stratifies_on_the_sessions_tokens():
    """The adapter layer every trainer uses: rc/* metrics, and stratify_by=rc_token reaching the engine."""
    rng = np.random.default_rng(0)
    tokens = [HIGH if i % 2 else LOW for i in range(32)]  # 4 groups of 8 (2G), G = 4
    correct = (rng.random(32) < 0.5).astype(float)
    groups = [f"g{i // 8}" for i in range(32)]
    counters = [{"rc_token": t, "rc_token_in_prompt": True} for t in tokens]
    sessions = Sessions(groups, correct, counters)
    base = {"min_pos": 1, "min_neg": 1, "positive_mode": "uniform", "negative_mode": "uniform"}
    for stratify in (None, "rc_token"):
        stage = RoCStage(resolve_settings({**base, "stratify_by": stratify}, rollout_n=4), rc=RCSettings(enable=True))
        kept, metrics = stage.select(sessions, step=1)
        assert metrics["rc/high_share"] == 0.5 and metrics["rc/groups_mixed_tokens_share"] == 1.0
        assert "rc/kept_pos_high_share" in metrics or "rc/kept_neg_high_share" in metrics
        if stratify:
            t, c = np.array(tokens)[kept], correct[kept] > 0.5
            for g in {groups[i] for i in kept}:
                in_g = np.array([groups[i] == g for i in kept])
                for sign in (True, False):
                    block = in_g & (c == sign)
                    all_block = np.array([groups[i] == g and (correct[i] > 0.5) == sign for i in range(32)])
                    share = block.sum() * (np.array(tokens)[all_block] == HIGH).mean() if all_block.any() else 0
                    assert np.floor(share) <= (t[block] == HIGH).sum() <= np.ceil(share)
