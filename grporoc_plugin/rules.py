"""Registries of the selection engine: count rules, rankers, selection rules and pre-filters (pure numpy).

Written like verl's ``core_algos.py``: each kind of component is a dict, a ``register_*`` decorator and a ``get_*``
getter whose error lists the known names. Third-party packages add their own with the same decorators; every name
registered by the time a config is validated is accepted there (``python -m grporoc_plugin doctor`` lists them).

Kinds and their signatures (``m`` rows, ``G`` groups, all arrays numpy):

* count rule ``(n_pos (G,), n_neg (G,), keep_n, min_pos, min_neg) -> Quota``: per-sign counts of a group that has
  more than ``keep_n`` rows;
* positive / negative ranker ``(rows: GroupedRows, rng, config) -> key (m,) float64``: lower keys are kept first
  within a (group, sign) block; only the rows of the ranker's sign are read;
* selection rule ``(rows: GroupedRows, config, rngs: RuleRngs) -> RuleResult``: which rows of the groups that have
  more than ``keep_n`` rows (``rows.selectable``) to keep, exactly ``keep_n`` per such group unless documented;
* pre-filter ``(stats: Mapping[str, (m,) array], config) -> keep (m,) bool``: drops trajectories before anything
  else (their group may then become smaller than ``keep_n``).

Group rejection (``reject_equal_reward``), groups of exactly ``keep_n`` rows, small groups and world-size alignment
are the same for every rule and live in :func:`grporoc_plugin.roc.select_rollouts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "COUNT_RULE_REGISTRY",
    "NEGATIVE_RANKER_REGISTRY",
    "POSITIVE_RANKER_REGISTRY",
    "PREFILTER_REGISTRY",
    "SELECTION_RULE_REGISTRY",
    "GroupedRows",
    "Quota",
    "RuleResult",
    "RuleRngs",
    "get_count_rule",
    "get_negative_ranker",
    "get_positive_ranker",
    "get_prefilter",
    "get_selection_rule",
    "registered_components",
    "stratified_quota",
    "register_count_rule",
    "register_negative_ranker",
    "register_positive_ranker",
    "register_prefilter",
    "register_selection_rule",
]


class Quota(NamedTuple):
    """Per-group kept counts of a count rule, arrays of length G."""

    pos: np.ndarray
    """Positives kept (never more than the group has)."""
    neg: np.ndarray
    """Negatives kept (never more than the group has)."""
    floors_applied: np.ndarray
    """bool: the per-sign floors (``min_pos``/``min_neg``) changed the rule's raw counts."""
    keep_all: np.ndarray
    """bool: keep the whole group (the release's branch for both rounded counts under their floors)."""
    repaired: np.ndarray
    """bool: the raw counts did not sum to keep_n (the release would fail its assert) and were repaired."""


class GroupedRows(NamedTuple):
    """The engine's view of one batch: m trajectories in rollout order, G groups numbered by first appearance."""

    codes: np.ndarray
    """(m,) int64 group code of each row."""
    n_groups: int
    """G."""
    is_pos: np.ndarray
    """(m,) bool: the trajectory is correct."""
    penalty: np.ndarray
    """(m,) float64 quality penalty (lower is better; +inf for non-finite inputs)."""
    rewards: np.ndarray
    """(m,) float64 scalar reward (``scores`` when given, else ``is_pos`` as 0/1): what PODS spreads."""
    size: np.ndarray
    """(G,) int64 rows per group."""
    n_pos: np.ndarray
    """(G,) int64 positives per group."""
    selectable: np.ndarray
    """(G,) bool: groups with more than keep_n rows that were not rejected, where the rule chooses."""
    strata: np.ndarray | None = None
    """(m,) int64 stratum code per row (e.g. the RC-GRPO token), or None; rules that read it set ``supports_strata``."""


class RuleRngs(NamedTuple):
    """Independent generators, so that one choice's randomness never shifts another's."""

    positive: np.random.Generator
    negative: np.random.Generator
    tie: np.random.Generator
    rule: np.random.Generator


class RuleResult(NamedTuple):
    """Outcome of a selection rule."""

    kept: np.ndarray
    """(m,) bool: rows kept inside ``selectable`` groups (other rows are ignored)."""
    group_flags: Mapping[str, np.ndarray]
    """Per-group (G,) bool arrays the rule reports as ``roc/groups_<name>`` metrics (counted inside selectable)."""


CountRule = Callable[[np.ndarray, np.ndarray, int, int, int], Quota]
Ranker = Callable[[GroupedRows, np.random.Generator, Any], np.ndarray]
SelectionRule = Callable[[GroupedRows, Any, RuleRngs], RuleResult]
Prefilter = Callable[[Mapping[str, np.ndarray], Any], np.ndarray]

COUNT_RULE_REGISTRY: dict[str, CountRule] = {}
POSITIVE_RANKER_REGISTRY: dict[str, Ranker] = {}
NEGATIVE_RANKER_REGISTRY: dict[str, Ranker] = {}
SELECTION_RULE_REGISTRY: dict[str, SelectionRule] = {}
PREFILTER_REGISTRY: dict[str, Prefilter] = {}
_KINDS: dict[str, dict[str, Callable]] = {
    "count rule": COUNT_RULE_REGISTRY,
    "positive ranker": POSITIVE_RANKER_REGISTRY,
    "negative ranker": NEGATIVE_RANKER_REGISTRY,
    "selection rule": SELECTION_RULE_REGISTRY,
    "prefilter": PREFILTER_REGISTRY,
}


def _register(kind: str, name: str) -> Callable[[Callable], Callable]:
    registry = _KINDS[kind]

    def decorator(fn: Callable) -> Callable:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} name must be a non-empty string, got {name!r}")
        if name in registry and registry[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered by {registry[name].__module__}")
        registry[name] = fn
        return fn

    return decorator


def _get(kind: str, name: str) -> Callable:
    registry = _KINDS[kind]
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; registered: {sorted(registry)}")
    return registry[name]


def register_count_rule(name: str) -> Callable[[CountRule], CountRule]:
    """Register a count rule ``(n_pos, n_neg, keep_n, min_pos, min_neg) -> Quota``."""
    return _register("count rule", name)


def register_positive_ranker(name: str) -> Callable[[Ranker], Ranker]:
    """Register a positive ranker ``(rows, rng, config) -> key``; a group's positives with the lowest keys are kept."""
    return _register("positive ranker", name)


def register_negative_ranker(name: str) -> Callable[[Ranker], Ranker]:
    """Register a negative ranker ``(rows, rng, config) -> key``; a group's negatives with the lowest keys are kept."""
    return _register("negative ranker", name)


def register_selection_rule(name: str) -> Callable[[SelectionRule], SelectionRule]:
    """Register a selection rule ``(rows, config, rngs) -> RuleResult`` (``algorithm.roc.rule``)."""
    return _register("selection rule", name)


def register_prefilter(name: str) -> Callable[[Prefilter], Prefilter]:
    """Register a pre-filter ``(stats, config) -> keep mask`` (``algorithm.roc.prefilters``)."""
    return _register("prefilter", name)


def get_count_rule(name: str) -> CountRule:
    return _get("count rule", name)


def get_positive_ranker(name: str) -> Ranker:
    return _get("positive ranker", name)


def get_negative_ranker(name: str) -> Ranker:
    return _get("negative ranker", name)


def get_selection_rule(name: str) -> SelectionRule:
    return _get("selection rule", name)


def get_prefilter(name: str) -> Prefilter:
    return _get("prefilter", name)


def registered_components() -> dict[str, list[str]]:
    """Every registered name by kind (for ``doctor`` and error messages)."""
    return {kind: sorted(registry) for kind, registry in _KINDS.items()}


# --------------------------------------------------------------------------------------------------- count rules


@register_count_rule("release_round")
def release_round(n_pos: np.ndarray, n_neg: np.ndarray, keep_n: int, min_pos: int, min_neg: int) -> Quota:
    """The release's per-group counts for groups with N > keep_n (rstar2_agent/down_sample/roc.py), vectorised.

    k = half-to-even round(share * keep_n / N) per sign, then the floors: negatives first, then positives. The
    release's "keep all N" branch (both rounded counts under their floors) is reported in ``keep_all``; it is
    unreachable when min_pos + min_neg <= keep_n, which RoCConfig enforces. Where the release would slice a number of
    rows other than keep_n and fail its assert (half-to-even ties with odd keep_n), positives keep the release's count
    and negatives fill up to keep_n (``repaired``).
    """
    size = n_pos + n_neg
    # same IEEE float64 quotient as Python's int*int/int; np.rint rounds half to even like Python's round()
    raw_neg = np.rint(n_neg * keep_n / size).astype(np.int64)
    raw_pos = np.rint(n_pos * keep_n / size).astype(np.int64)
    keep_all = (raw_neg < min_neg) & (raw_pos < min_pos)
    floor_neg = np.minimum(min_neg, n_neg)
    c1 = raw_neg <= floor_neg
    k_neg = np.where(c1, floor_neg, raw_neg)
    k_pos = np.where(c1, keep_n - k_neg, raw_pos)
    floor_pos = np.minimum(min_pos, n_pos)
    c2 = k_pos <= floor_pos
    k_pos = np.where(c2, floor_pos, k_pos)
    k_neg = np.where(c2, keep_n - k_pos, k_neg)
    floors_applied = ~keep_all & ((k_pos != raw_pos) | (k_neg != raw_neg))
    # the release slices pos[:k_pos] + neg[:k_neg]; counts are never negative here (min_* <= keep_n)
    eff_pos = np.clip(k_pos, 0, n_pos)
    eff_neg = np.clip(k_neg, 0, n_neg)
    repaired = ~keep_all & (eff_pos + eff_neg != keep_n)
    fix_neg = np.clip(keep_n - eff_pos, 0, n_neg)
    eff_neg = np.where(repaired, fix_neg, eff_neg)
    eff_pos = np.where(repaired, keep_n - fix_neg, eff_pos)
    return Quota(eff_pos, eff_neg, floors_applied, keep_all, repaired)


@register_count_rule("paper_half")
def paper_half(n_pos: np.ndarray, n_neg: np.ndarray, keep_n: int, min_pos: int, min_neg: int) -> Quota:
    """The paper's counts generalised to N -> keep_n: k_neg = floor(neg * keep_n / N), k_pos = keep_n - k_neg.

    For N = 2 keep_n this is (ceil(pos/2), floor(neg/2)). Floors (``min_* = -1`` off) then move rows between the
    signs; the counts always sum to keep_n within availability (N > keep_n).
    """
    size = n_pos + n_neg
    raw_neg = (n_neg * keep_n) // size
    k_neg = raw_neg
    k_pos = keep_n - k_neg
    raw_pos = k_pos
    if min_neg >= 0:
        k_neg = np.maximum(k_neg, np.minimum(min_neg, n_neg))
        k_pos = keep_n - k_neg
    if min_pos >= 0:
        k_pos = np.maximum(k_pos, np.minimum(min_pos, n_pos))
        k_neg = keep_n - k_pos
    none = np.zeros(size.shape, dtype=bool)
    return Quota(k_pos, k_neg, (k_pos != raw_pos) | (k_neg != raw_neg), none, none)


# ------------------------------------------------------------------------------------------------------- rankers


@register_positive_ranker("topk")
def topk(rows: GroupedRows, rng: np.random.Generator, config: Any) -> np.ndarray:
    """Release: lowest penalty first (ties by rollout order, or by ``tie_break="random"``)."""
    return rows.penalty


@register_positive_ranker("inverse_penalty")
def inverse_penalty(rows: GroupedRows, rng: np.random.Generator, config: Any) -> np.ndarray:
    """Paper: sampled without replacement with weight 1 / (p + penalty_eps) (Efraimidis-Spirakis keys).

    key = u^(1/w) largest first <=> -log(u) * (p + eps) smallest first; negative penalties count as 0.
    """
    u = 1.0 - rng.random(rows.codes.size)  # (0, 1]
    return -np.log(u) * (np.maximum(rows.penalty, 0.0) + config.penalty_eps)


@register_positive_ranker("uniform")
@register_negative_ranker("uniform")
def uniform(rows: GroupedRows, rng: np.random.Generator, config: Any) -> np.ndarray:
    """Uniform sample without replacement (paper negatives; the control arm's positives): penalty ignored."""
    return rng.random(rows.codes.size)


@register_negative_ranker("first_k")
def first_k(rows: GroupedRows, rng: np.random.Generator, config: Any) -> np.ndarray:
    """Release: first in rollout order."""
    return np.arange(rows.codes.size, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ block helpers


def _rank_within_blocks(block: np.ndarray, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank): rows sorted by (block, *keys) with a stable sort, and each sorted row's 0-based rank in its
    block. ``keys`` are given most significant first; equal keys keep rollout order."""
    order = np.lexsort((*reversed(keys), block)) if keys else np.argsort(block, kind="stable")
    sorted_block = block[order]
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = sorted_block[1:] != sorted_block[:-1]
    positions = np.arange(order.size)
    rank = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    return order, rank


def _first_per_block(block: np.ndarray, quota_of_block: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """(m,) bool: in each block keep the ``quota_of_block[block]`` rows with the lowest keys."""
    order, rank = _rank_within_blocks(block, *keys)
    kept = np.zeros(block.size, dtype=bool)
    kept[order[rank < quota_of_block[block[order]]]] = True
    return kept


def stratified_quota(
    block: np.ndarray, quota_of_block: np.ndarray, strata: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split each block's quota across the strata of its rows in proportion to their counts (largest remainder).

    Returns (sub-block code per row, quota per sub-block) for :func:`_first_per_block`. Integer arithmetic: stratum
    ``s`` of a block with ``c_s`` of its ``c`` rows gets ``floor(q * c_s / c)`` plus one of the ``q - sum(floor)``
    leftover rows if its remainder is among the largest (ties: the larger stratum, then the lower stratum code).
    Never more than a stratum has, and the sub-quotas of a block sum to its quota.
    """
    n_blocks = int(quota_of_block.size)
    n_strata = int(strata.max()) + 1 if strata.size else 1
    sub = block * n_strata + strata
    count_sub = np.bincount(sub, minlength=n_blocks * n_strata).astype(np.int64)
    parent = np.arange(count_sub.size) // n_strata
    count_block = np.bincount(block, minlength=n_blocks).astype(np.int64)[parent]
    numerator = quota_of_block.astype(np.int64)[parent] * count_sub
    denominator = np.maximum(count_block, 1)
    base, remainder = numerator // denominator, numerator % denominator
    leftover = quota_of_block.astype(np.int64) - np.bincount(parent, weights=base, minlength=n_blocks).astype(np.int64)
    order = np.lexsort((np.arange(count_sub.size), -count_sub, -remainder, parent))
    starts = np.ones(order.size, dtype=bool)
    starts[1:] = parent[order][1:] != parent[order][:-1]
    positions = np.arange(order.size)
    rank = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    extra = np.zeros(count_sub.size, dtype=np.int64)
    extra[order] = (rank < leftover[parent[order]]) & (remainder[order] > 0)
    return sub, base + extra


# ------------------------------------------------------------------------------------------------ selection rules


@register_selection_rule("roc")
def roc_rule(rows: GroupedRows, config: Any, rngs: RuleRngs) -> RuleResult:
    """GRPO-RoC: per-sign quotas from ``count_rule``; positives by ``positive_mode``, negatives by
    ``negative_mode``. With topk / first_k / release_round this is the public release exactly. With ``rows.strata``
    each sign's quota is split across the strata in proportion (:func:`stratified_quota`), ranked within each."""
    n_neg = rows.size - rows.n_pos
    quota = get_count_rule(config.count_rule)(rows.n_pos, n_neg, config.keep_n, config.min_pos, config.min_neg)
    keep_all = quota.keep_all & rows.selectable
    choose = rows.selectable & ~keep_all
    q_pos = np.where(keep_all, rows.n_pos, np.where(choose, quota.pos, 0))
    q_neg = np.where(keep_all, n_neg, np.where(choose, quota.neg, 0))

    pos_key = get_positive_ranker(config.positive_mode)(rows, rngs.positive, config)
    neg_key = get_negative_ranker(config.negative_mode)(rows, rngs.negative, config)
    key = np.where(rows.is_pos, pos_key, neg_key)
    block = rows.codes * 2 + (~rows.is_pos)  # (group, sign)
    quota_of_block = np.stack([q_pos, q_neg], axis=1).reshape(-1)
    if rows.strata is not None:  # the kept (sign, stratum) mix of each group follows its rollout mix
        block, quota_of_block = stratified_quota(block, quota_of_block, rows.strata)
    if config.tie_break == "random":
        tie = np.where(rows.is_pos, rngs.tie.random(rows.codes.size), 0.0)
        kept = _first_per_block(block, quota_of_block, key, tie)
    else:
        kept = _first_per_block(block, quota_of_block, key)
    flags = {
        "floor_applied": quota.floors_applied & choose,
        "release_keep_all": keep_all,
        "count_repaired": quota.repaired & choose,
    }
    return RuleResult(kept, flags)


roc_rule.supports_strata = True  # type: ignore[attr-defined]


@register_selection_rule("uniform")
def uniform_rule(rows: GroupedRows, config: Any, rngs: RuleRngs) -> RuleResult:
    """Random n -> keep_n per group, outcomes and penalties ignored (the "2G then G" control)."""
    quota = np.where(rows.selectable, config.keep_n, 0)
    return RuleResult(_first_per_block(rows.codes, quota, rngs.rule.random(rows.codes.size)), {})


@register_selection_rule("pods")
def pods_rule(rows: GroupedRows, config: Any, rngs: RuleRngs) -> RuleResult:
    """PODS max-variance down-sampling ("Not All Rollouts are Useful", arXiv 2504.13818), exact for any rewards.

    Keep the keep_n rows whose rewards have the largest variance. Some optimal subset is always the i largest plus
    the keep_n - i smallest rewards of the group, so: sort each group's rewards (ties by rollout order), evaluate the
    keep_n + 1 splits with prefix sums, keep the best (the smallest i among equal variances). O(m log m + G keep_n).
    """
    m, n = rows.codes.size, config.keep_n
    order, rank = _rank_within_blocks(rows.codes, rows.rewards)
    sorted_codes = rows.codes[order]
    values = rows.rewards[order]
    # the block of a group is contiguous in sorted order: [start, start + size)
    start = np.zeros(rows.n_groups, dtype=np.int64)
    start[1:] = np.cumsum(rows.size)[:-1]
    end = start + rows.size
    prefix = np.concatenate([[0.0], np.cumsum(values)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(values * values)])
    groups = np.flatnonzero(rows.selectable)
    best_i = np.zeros(rows.n_groups, dtype=np.int64)
    if groups.size:
        s, e = start[groups], end[groups]
        best = np.full(groups.size, -np.inf)
        for i in range(n + 1):  # i largest + (n - i) smallest
            total = (prefix[s + n - i] - prefix[s]) + (prefix[e] - prefix[e - i])
            total_sq = (prefix_sq[s + n - i] - prefix_sq[s]) + (prefix_sq[e] - prefix_sq[e - i])
            spread = n * total_sq - total * total  # n^2 * variance: same argmax, no division
            better = spread > best + 1e-9 * np.maximum(1.0, np.abs(spread))  # ties keep the smaller i
            best = np.where(better, spread, best)
            best_i[groups] = np.where(better, i, best_i[groups])
    size_sorted = rows.size[sorted_codes]
    take_top = best_i[sorted_codes]
    in_sel = rows.selectable[sorted_codes]
    keep_sorted = in_sel & ((rank < n - take_top) | (rank >= size_sorted - take_top))
    kept = np.zeros(m, dtype=bool)
    kept[order[keep_sorted]] = True
    return RuleResult(kept, {})


# ------------------------------------------------------------------------------------------------------ prefilters


@register_prefilter("void_turn")
def void_turn(stats: Mapping[str, np.ndarray], config: Any) -> np.ndarray:
    """SimpleTIR (arXiv 2509.02479): drop trajectories with a turn that has neither a tool call nor an answer.

    Needs the per-trajectory ``void_turns`` counter of the ``grporoc_tool_agent`` loop.
    """
    if "void_turns" not in stats:
        raise ValueError(
            "prefilter 'void_turn' needs the per-trajectory 'void_turns' counter (agent loop grporoc_tool_agent)"
        )
    return ~(np.nan_to_num(np.asarray(stats["void_turns"], dtype=np.float64), nan=0.0) > 0)
