"""Resample-on-Correct (RoC) selection engine of GRPO-RoC (rStar2-Agent), pure numpy.

Given ``N`` rollouts per prompt (``group_ids``), their binary outcome (``correct``) and a quality penalty (lower is
better, only used for positives), keep ``keep_n`` rollouts per group, top to bottom:

1. pre-filters (``prefilters``, e.g. ``void_turn``) drop single trajectories;
2. ``reject_equal_reward`` drops groups whose outcomes are all equal (zero GRPO advantage), DAPO-style without refill;
3. groups with exactly ``keep_n`` rows are kept as they are, smaller ones are dropped or kept (``small_group``);
4. the selection rule (``rule``) chooses ``keep_n`` rows of every larger group. ``roc`` keeps ``k_pos`` positives
   (lowest penalty first, sampled with weight ``1/(p + eps)``, or uniformly) and ``k_neg`` negatives (first in rollout
   order, or uniformly), counts from ``count_rule`` with optional per-sign floors; ``pods`` keeps the max-variance
   subset; ``uniform`` keeps a random subset;
5. optionally whole groups are dropped so that the kept row count is a multiple of the data-parallel world size;
6. :func:`selection_metrics` reports what happened (``roc/*``).

Rules, rankers, count rules and pre-filters are registries (:mod:`grporoc_plugin.rules`). With ``rule="roc"``,
``positive_mode="topk"``, ``negative_mode="first_k"`` and ``count_rule="release_round"`` the kept set equals the public
release (microsoft/rStar ``rstar2_agent/down_sample/roc.py`` after commit 5e95b19, transcribed in
:mod:`grporoc_plugin.reference`) for every group composition the release accepts; where the release would hit its
``assert len(choices) == n`` (rounding ties with an odd ``keep_n``) the counts are repaired instead and reported as
``roc/groups_count_repaired``.

Everything is vectorised over rows (stable sorts + per-group quotas); no Python loop over groups.
No verl or torch import: this module is shared by every trainer adapter, the benchmark and tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

from grporoc_plugin import rules

SMALL_GROUP_MODES = ("drop", "keep")
TIE_BREAKS = ("index", "random")
ALIGN_MODES = ("none", "drop_groups")

__all__ = [
    "METRIC_KEYS",
    "OPTIONAL_METRIC_KEYS",
    "TRAINED_OPTIONAL_METRIC_KEYS",
    "RoCConfig",
    "align_groups_to_world_size",
    "factorize_groups",
    "select_rollouts",
    "selection_metrics",
    "trained_metrics",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class RoCConfig:
    """Selection settings; defaults reproduce the public release with the official script's values."""

    keep_n: int = 16
    """G: rollouts kept per group (the release's ``down_sample_to_n``)."""
    rule: str = "roc"
    """Selection rule for groups larger than keep_n: roc (GRPO-RoC), pods (max reward variance), uniform (random)."""
    prefilters: tuple[str, ...] = ()
    """Pre-filters run on single trajectories before everything else, e.g. ["void_turn"] (SimpleTIR)."""
    positive_mode: str = "topk"
    """Positives under rule roc: topk (release, lowest penalty first), inverse_penalty (paper), uniform (control)."""
    negative_mode: str = "first_k"
    """Negatives under rule roc: first_k (release, rollout order) or uniform (paper, sample without replacement)."""
    count_rule: str = "release_round"
    """Per-sign counts under rule roc: release_round (half-to-even round of share*G/N) or paper_half (floor on neg)."""
    min_pos: int = 2
    """Floor on kept positives when available (release min_non_zero_reward_trace_num); -1 = off."""
    min_neg: int = 2
    """Floor on kept negatives when available (release min_zero_reward_trace_num); -1 = off."""
    reject_equal_reward: bool = True
    """Drop groups whose outcomes are all equal (zero GRPO advantage), DAPO-style without refill."""
    equal_reward_tol: float = 1e-6
    """Absolute tolerance of the all-equal test on scores: equal when max - min <= tol."""
    small_group: str = "drop"
    """Groups with fewer than keep_n sessions (failed rollouts): drop (release) or keep whole."""
    penalty_eps: float = 0.1
    """delta in the inverse_penalty weight 1/(p + delta); keeps p = 0 finite."""
    tie_break: str = "index"
    """Penalty ties among positives under topk: index (release, lower rollout index wins) or random (seeded)."""
    world_size: int = 1
    """Data-parallel size the kept row count must be a multiple of (V0; set by the adapter, never by hand)."""
    world_size_align: str = "drop_groups"
    """V0 only (no padding rows there): drop_groups keeps the kept row count a multiple of the DP size; none = off."""

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"RoCConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        if not _is_int(self.keep_n) or self.keep_n < 1:
            raise bad("keep_n", ">= 1")
        for name, registry in (
            ("rule", rules.SELECTION_RULE_REGISTRY),
            ("positive_mode", rules.POSITIVE_RANKER_REGISTRY),
            ("negative_mode", rules.NEGATIVE_RANKER_REGISTRY),
            ("count_rule", rules.COUNT_RULE_REGISTRY),
        ):
            if getattr(self, name) not in registry:
                raise bad(name, f"one of the registered names {sorted(registry)}")
        prefilters = self.prefilters
        if isinstance(prefilters, str) or not isinstance(prefilters, list | tuple):
            raise bad("prefilters", "a list of pre-filter names")
        for name in prefilters:
            if name not in rules.PREFILTER_REGISTRY:
                raise bad("prefilters", f"a list of registered pre-filters {sorted(rules.PREFILTER_REGISTRY)}")
        object.__setattr__(self, "prefilters", tuple(prefilters))
        for name, choices in (
            ("small_group", SMALL_GROUP_MODES),
            ("tie_break", TIE_BREAKS),
            ("world_size_align", ALIGN_MODES),
        ):
            if getattr(self, name) not in choices:
                raise bad(name, f"one of {list(choices)}")
        for name in ("min_pos", "min_neg"):
            value = getattr(self, name)
            if not _is_int(value) or value < -1:
                raise bad(name, "an int >= -1 (-1 = off)")
            if value > self.keep_n:
                raise bad(name, f"<= keep_n ({self.keep_n})")
        if max(self.min_pos, 0) + max(self.min_neg, 0) > self.keep_n:
            raise ValueError(
                f"RoCConfig.min_pos + RoCConfig.min_neg must be <= keep_n ({self.keep_n}), "
                f"got {self.min_pos} + {self.min_neg}"
            )
        if not isinstance(self.reject_equal_reward, (bool, np.bool_)):
            raise bad("reject_equal_reward", "a bool")
        if not _is_real(self.equal_reward_tol) or not (0.0 <= self.equal_reward_tol < math.inf):
            raise bad("equal_reward_tol", "a finite float >= 0")
        if not _is_real(self.penalty_eps) or not (0.0 < self.penalty_eps < math.inf):
            raise bad("penalty_eps", "a finite float > 0")
        if self.tie_break == "random" and self.positive_mode != "topk":
            raise ValueError(
                f"RoCConfig.tie_break='random' only applies to positive_mode='topk' "
                f"(positive_mode={self.positive_mode!r} has no penalty ties); use tie_break='index'"
            )
        if not _is_int(self.world_size) or self.world_size < 1:
            raise bad("world_size", ">= 1")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> RoCConfig:
        """Build from a dict/DictConfig; unknown keys raise ValueError naming them."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ValueError(f"unknown RoC config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**mapping)


# --------------------------------------------------------------------------------------------------------------------
# Inputs


def factorize_groups(group_ids: Any) -> tuple[np.ndarray, int]:
    """Map group ids (any hashable) to int64 codes ``0..G-1`` numbered by first appearance; return (codes, G)."""
    if isinstance(group_ids, np.ndarray):
        ids = group_ids
    else:
        ids = list(group_ids)
        # fromiter keeps tuples etc. as single objects (np.asarray would make them a 2-D array)
        ids = np.fromiter(ids, dtype=object, count=len(ids)) if ids else np.empty(0, dtype=object)
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be 1-D, got shape {ids.shape}")
    if ids.size == 0:
        return np.empty(0, dtype=np.int64), 0
    if ids.dtype.kind in "biufcUSmM":
        _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        rank = np.empty(first.size, dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(first.size)
        return rank[inverse.reshape(-1)], int(first.size)
    lookup: dict[Any, int] = {}
    try:
        codes = np.fromiter((lookup.setdefault(g, len(lookup)) for g in ids), dtype=np.int64, count=ids.size)
    except TypeError as exc:
        raise ValueError(f"group ids must be hashable: {exc}") from exc
    return codes, len(lookup)


def _row_array(value: Any, m: int, name: str, dtype: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0 or arr.shape[0] != m or arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry per trajectory ({m}), got shape {arr.shape}")
    if dtype is bool:
        if arr.dtype == bool:
            return arr
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be bool or numeric, got dtype {arr.dtype}")
        return np.nan_to_num(arr.astype(np.float64), nan=0.0) > 0.5
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


# --------------------------------------------------------------------------------------------------------------------
# World-size alignment


def _align_codes(
    codes: np.ndarray, kept_idx: np.ndarray, world_size: int, correct: np.ndarray | None
) -> tuple[np.ndarray, int, int]:
    """Drop the fewest whole groups (then fewest rows) so len(kept) % world_size == 0. -> (kept, rows, groups)."""
    total = int(kept_idx.size)
    target = total % world_size
    if target == 0:
        return kept_idx, 0, 0
    kc = codes[kept_idx]
    present, local = np.unique(kc, return_inverse=True)
    local = local.reshape(-1)
    sizes = np.bincount(local).astype(np.int64)
    # lowest information first: Bernoulli variance of the kept outcomes (0 = zero GRPO advantage), then groups
    # appearing last in rollout order (what the release's tail truncation would have cut)
    if correct is not None:
        pos = np.bincount(local, weights=correct[kept_idx].astype(np.float64), minlength=present.size)
        frac = pos / sizes
        info = frac * (1.0 - frac)
    else:
        info = np.zeros(present.size)
    last_row = np.zeros(present.size, dtype=np.int64)
    np.maximum.at(last_row, local, kept_idx)
    candidate_order = np.lexsort((-last_row, info))

    # DP over residues mod world_size; cost = (#groups, #rows) encoded as groups*(total+1) + rows.
    distinct = np.unique(sizes)
    big = np.iinfo(np.int64).max // 4
    cost = np.full(world_size, big, dtype=np.int64)
    cost[0] = 0
    choices = []  # per size: (x chosen for each residue)
    for s in distinct.tolist():
        available = int(np.count_nonzero(sizes == s))
        period = world_size // math.gcd(s, world_size)
        best = cost.copy()
        best_x = np.zeros(world_size, dtype=np.int64)
        for x in range(1, min(available, period - 1) + 1):
            shifted = np.roll(cost, (x * s) % world_size)
            cand = np.where(shifted >= big, big, shifted + x * (total + 1) + x * s)
            better = cand < best
            best = np.where(better, cand, best)
            best_x = np.where(better, x, best_x)
        choices.append((s, best_x))
        cost = best
    # backtrack from the target residue
    drop_count: dict[int, int] = {}
    res = target
    for s, best_x in reversed(choices):
        x = int(best_x[res])
        drop_count[s] = x
        res = int((res - x * s) % world_size)
    drop_groups = np.zeros(present.size, dtype=bool)
    for s, x in drop_count.items():
        if x:
            of_size = candidate_order[sizes[candidate_order] == s]
            drop_groups[of_size[:x]] = True
    keep_rows = ~drop_groups[local]
    kept = kept_idx[keep_rows]
    return kept, total - int(kept.size), int(drop_groups.sum())


def align_groups_to_world_size(
    group_ids: Any,
    kept_idx: Any,
    world_size: int,
    mode: str = "drop_groups",
    correct: Any = None,
) -> tuple[np.ndarray, int]:
    """Make the kept row count a multiple of ``world_size`` by dropping whole groups, never tail rows.

    mode "drop_groups" drops the fewest groups (then the fewest rows); among equal choices the lowest-information
    groups go first (all-same-outcome kept groups, then lowest outcome variance given ``correct``, then the groups
    appearing last). May return an empty selection when no non-empty multiple exists. mode "none" is a no-op.
    Returns (sorted kept_idx, removed_rows).
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"world_size_align mode must be one of {list(ALIGN_MODES)}, got {mode!r}")
    if not _is_int(world_size) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    codes, _ = factorize_groups(group_ids)
    kept = np.unique(np.asarray(kept_idx, dtype=np.int64).reshape(-1))
    if kept.size and (kept[0] < 0 or kept[-1] >= codes.size):
        raise ValueError(f"kept_idx out of range [0, {codes.size})")
    corr = None if correct is None else _row_array(correct, codes.size, "correct", bool)
    if mode == "none" or world_size == 1:
        return kept, 0
    kept, removed, _ = _align_codes(codes, kept, world_size, corr)
    return kept, removed


# --------------------------------------------------------------------------------------------------------------------
# Selection

METRIC_KEYS = (
    "roc/rows_before",
    "roc/rows_kept",
    "roc/rows_dropped",
    "roc/rows_prefiltered",
    "roc/groups_before",
    "roc/groups_kept",
    "roc/groups_dropped",
    "roc/groups_rejected_all_correct",
    "roc/groups_rejected_all_wrong",
    "roc/groups_rejected_equal_mixed",
    "roc/groups_equal_reward",
    "roc/small_groups_dropped",
    "roc/small_groups_kept",
    "roc/groups_exact_size",
    "roc/groups_selected",
    "roc/pos_before",
    "roc/neg_before",
    "roc/kept_pos",
    "roc/kept_neg",
    "roc/nonfinite_penalty_rows",
    "roc/world_size_removed_rows",
    "roc/world_size_removed_groups",
)
"""Reported for every batch (counts; 0 on an empty batch)."""

OPTIONAL_METRIC_KEYS = {
    "groups": ("roc/kept_pos_per_group_mean", "roc/group_pos_rate_mean"),
    "penalty": ("roc/pos_penalty_mean_before", "roc/pos_penalty_mean_after"),
    "tool_errors": ("roc/pos_tool_error_ratio_before", "roc/pos_tool_error_ratio_after"),
    "p_err": ("roc/pos_p_err_mean_before", "roc/pos_p_err_mean_after"),
    "no_tool": ("roc/pos_no_tool_share_before", "roc/pos_no_tool_share_after"),
    "p_format": ("roc/pos_format_penalty_mean_before", "roc/pos_format_penalty_mean_after"),
}
"""Means and ratios, reported only when their input was given and the set they average over is not empty
("before" = every positive of the input, the rollout policy's behaviour; "after" = the kept positives). The rule's
own group counters (e.g. ``roc/groups_floor_applied`` of rule roc) are reported as well."""

#: The optional keys that describe the kept rows (:func:`trained_metrics`): absent when nothing they average is kept.
TRAINED_OPTIONAL_METRIC_KEYS = (
    "roc/kept_pos_per_group_mean",
    *(after for name, (_, after) in OPTIONAL_METRIC_KEYS.items() if name != "groups"),
)

#: Per-row statistics ``select_rollouts`` understands in ``stats`` (metrics and pre-filters; all optional).
STAT_KEYS = ("tool_calls", "tool_errors", "p_err", "p_format", "no_tool", "void_turns")


class GroupStatus(NamedTuple):
    """Per-group (G,) outcome of the rule-independent stages, for :func:`selection_metrics`."""

    equal: np.ndarray
    """All outcomes equal (whether or not rejection is on)."""
    rejected: np.ndarray
    """Dropped by reject_equal_reward."""
    small: np.ndarray
    """Fewer than keep_n rows (not rejected)."""
    exact: np.ndarray
    """Exactly keep_n rows (not rejected): kept whole."""
    selectable: np.ndarray
    """More than keep_n rows (not rejected): the rule chose."""


def _group_status(rows_codes: np.ndarray, n_groups: int, is_pos: np.ndarray, scores, cfg: RoCConfig):
    size = np.bincount(rows_codes, minlength=n_groups).astype(np.int64)
    n_pos = np.bincount(rows_codes, weights=is_pos, minlength=n_groups).astype(np.int64)
    if scores is None:
        equal = (n_pos == 0) | (n_pos == size)
    else:
        lo = np.full(n_groups, np.inf)
        hi = np.full(n_groups, -np.inf)
        np.minimum.at(lo, rows_codes, scores)
        np.maximum.at(hi, rows_codes, scores)
        equal = (hi - lo) <= cfg.equal_reward_tol  # NaN scores compare False: such a group is not rejected
    rejected = equal & cfg.reject_equal_reward
    alive = ~rejected
    status = GroupStatus(
        equal, rejected, alive & (size < cfg.keep_n), alive & (size == cfg.keep_n), alive & (size > cfg.keep_n)
    )
    return size, n_pos, status


def select_rollouts(
    group_ids: Any,
    correct: Any,
    penalty: Any,
    config: RoCConfig | Mapping[str, Any] | None = None,
    seed: int | None = 0,
    scores: Any = None,
    stats: Mapping[str, Any] | None = None,
    strata: Any = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Select the rollouts to train on; return (sorted int64 kept indices, ``roc/*`` metrics).

    Args:
        group_ids: (m,) group (uid) of each trajectory, in rollout order; any hashable values.
        correct: (m,) binary outcome per trajectory (bool; numeric values are read as ``> 0.5``).
        penalty: (m,) quality penalty (lower is better; ranks positives only). Non-finite -> ranked last (counted in
            ``roc/nonfinite_penalty_rows``); inverse_penalty clips negative penalties to 0.
        config: selection settings (default ``RoCConfig()``), or a mapping of its fields.
        seed: int >= 0 (or None for fresh entropy) seeding every random choice; same seed, same result. Release modes
            do not depend on it.
        scores: (m,) float, what ``reject_equal_reward`` compares (with ``equal_reward_tol``) and what rule ``pods``
            spreads; defaults to ``correct``.
        stats: optional (m,) per-trajectory statistics, keys from :data:`STAT_KEYS`: ``tool_calls`` and
            ``tool_errors`` (failed calls) give the paper's Fig. 4 ratio, ``p_err``/``p_format``/``no_tool`` their
            means among positives, ``void_turns`` feeds the ``void_turn`` pre-filter.
        strata: optional (m,) stratum of each trajectory (any hashable, e.g. its RC-GRPO token): a rule with
            ``supports_strata`` (``roc``) splits each group's per-sign quota across the strata in proportion to
            their counts, so the kept mix of every (group, sign) follows the rollout mix.
    """
    cfg = _as_config(config)
    batch, scores_all = _input_rows(group_ids, correct, penalty, scores, stats)
    strata_codes = _strata_codes(strata, batch.codes.size, cfg.rule)

    # 1. pre-filters: the rest of the pipeline sees the surviving rows only (row numbers mapped back at the end)
    rows_idx, grouped_input = _prefilter(batch, scores_all, cfg)
    codes, n_groups, is_pos, pen, sub_scores = grouped_input

    # 2-3. group rejection and group sizes, the same for every rule
    size, n_pos, status = _group_status(codes, n_groups, is_pos, sub_scores, cfg)
    grouped = rules.GroupedRows(
        codes=codes,
        n_groups=n_groups,
        is_pos=is_pos,
        penalty=pen,
        rewards=is_pos.astype(np.float64) if sub_scores is None else sub_scores,
        size=size,
        n_pos=n_pos,
        selectable=status.selectable,
        strata=None if strata_codes is None else strata_codes[rows_idx],
    )

    # 4. the rule chooses inside the larger groups
    rngs = rules.RuleRngs(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)))
    result = rules.get_selection_rule(cfg.rule)(grouped, cfg, rngs)
    whole = status.exact | (status.small & (cfg.small_group == "keep"))
    kept_mask = np.where(status.selectable[codes], np.asarray(result.kept, dtype=bool), whole[codes])
    kept = np.flatnonzero(kept_mask).astype(np.int64)

    # 5. whole-group world-size alignment
    removed_rows = removed_groups = 0
    if cfg.world_size_align == "drop_groups" and cfg.world_size > 1:
        kept, removed_rows, removed_groups = _align_codes(codes, kept, cfg.world_size, is_pos)

    # 6. metrics over the input rows (pre-filtered rows count as dropped)
    kept_all = np.zeros(batch.codes.size, dtype=bool)
    kept_all[rows_idx[kept]] = True
    metrics = selection_metrics(
        batch,
        kept_all,
        grouped,
        status,
        result.group_flags,
        cfg,
        nonfinite_rows=int(np.sum(~np.isfinite(pen))),
        removed=(removed_rows, removed_groups),
    )
    return rows_idx[kept], metrics


def _as_config(config: RoCConfig | Mapping[str, Any] | None) -> RoCConfig:
    cfg = config if config is not None else RoCConfig()
    if isinstance(cfg, Mapping):
        cfg = RoCConfig.from_mapping(cfg)
    if not isinstance(cfg, RoCConfig):
        raise TypeError(f"config must be a RoCConfig or a mapping of its fields, got {type(cfg).__name__}")
    return cfg


def _strata_codes(strata: Any, m: int, rule: str) -> np.ndarray | None:
    """(m,) int64 codes of the strata (numbered by first appearance), or None; a rule must support them."""
    if strata is None:
        return None
    if not getattr(rules.get_selection_rule(rule), "supports_strata", False):
        raise ValueError(f"selection rule {rule!r} does not support strata (stratified selection needs rule 'roc')")
    codes, _ = factorize_groups(strata)
    if codes.size != m:
        raise ValueError(f"strata must be 1-D with one entry per trajectory ({m}), got {codes.size}")
    return codes


def _input_rows(group_ids, correct, penalty, scores, stats) -> tuple[BatchView, np.ndarray | None]:
    """Validated (m,) arrays of every input row (non-finite penalties as +inf) and the optional scores."""
    codes, n_groups = factorize_groups(group_ids)
    m = int(codes.size)
    is_pos = _row_array(correct, m, "correct", bool)
    pen = _row_array(penalty, m, "penalty", float)
    unknown = sorted(set(stats or {}) - set(STAT_KEYS))
    if unknown:
        raise ValueError(f"unknown stats {unknown}; known: {list(STAT_KEYS)}")
    stat_arrays = {
        name: _row_array(value, m, name, bool if name == "no_tool" else float)
        for name, value in (stats or {}).items()
        if value is not None
    }
    batch = BatchView(codes, n_groups, is_pos, np.where(np.isfinite(pen), pen, np.inf), stat_arrays)
    return batch, None if scores is None else _row_array(scores, m, "scores", float)


def _prefilter(batch: BatchView, scores: np.ndarray | None, cfg: RoCConfig):
    """(surviving row indices, (codes, n_groups, is_pos, penalty, scores) of the survivors, groups renumbered)."""
    survivors = np.ones(batch.codes.size, dtype=bool)
    for name in cfg.prefilters:
        survivors &= np.asarray(rules.get_prefilter(name)(batch.stats, cfg), dtype=bool)
    if survivors.all():
        return np.arange(batch.codes.size), (batch.codes, batch.n_groups, batch.is_pos, batch.penalty, scores)
    rows = np.flatnonzero(survivors)
    codes, n_groups = factorize_groups(batch.codes[rows])
    sub_scores = None if scores is None else scores[rows]
    return rows, (codes, n_groups, batch.is_pos[rows], batch.penalty[rows], sub_scores)


class BatchView(NamedTuple):
    """All input rows of one selection, for the metrics."""

    codes: np.ndarray
    """(m,) group code per input row, 0..n_groups-1."""
    n_groups: int
    """Number of input groups."""
    is_pos: np.ndarray
    """(m,) bool outcome."""
    penalty: np.ndarray
    """(m,) penalty (+inf where non-finite)."""
    stats: Mapping[str, np.ndarray]
    """Optional per-row statistics (:data:`STAT_KEYS`)."""


def _mean_at(values: np.ndarray, idx: np.ndarray) -> float | None:
    """Mean of the finite ``values[idx]``; None for an empty set."""
    picked = values[idx]
    if not picked.size:
        return None
    total = picked.sum()
    if np.isfinite(total):
        return float(total / picked.size)
    picked = picked[np.isfinite(picked)]
    return float(picked.mean()) if picked.size else None


def _error_ratio(errors: np.ndarray, calls: np.ndarray, idx: np.ndarray) -> float | None:
    """Failed tool calls / tool calls over ``idx`` (the paper's Fig. 4 quantity); None without any call."""
    total_calls = float(np.maximum(calls[idx], 0).sum())
    return float(np.maximum(errors[idx], 0).sum()) / total_calls if total_calls > 0 else None


def selection_metrics(
    batch: BatchView,
    kept: np.ndarray,
    rows: rules.GroupedRows,
    status: GroupStatus,
    rule_flags: Mapping[str, np.ndarray],
    cfg: RoCConfig,
    *,
    nonfinite_rows: int,
    removed: tuple[int, int],
) -> dict[str, float]:
    """``roc/*`` metrics of one selection (:data:`METRIC_KEYS`, :data:`OPTIONAL_METRIC_KEYS`, rule counters).

    ``batch`` and ``kept`` ((m,) bool) cover every input row; ``rows`` and ``status`` the rows that passed the
    pre-filters (the groups the rule saw). "before" figures are over every input positive.
    """
    m = int(batch.codes.size)
    pos_idx = np.flatnonzero(batch.is_pos)
    n_pos = int(pos_idx.size)
    full = rows.n_pos == rows.size
    metrics: dict[str, float] = {
        "roc/rows_before": m,
        "roc/rows_prefiltered": m - int(rows.codes.size),
        "roc/groups_before": batch.n_groups,
        "roc/groups_rejected_all_correct": int(np.sum(status.rejected & full)),
        "roc/groups_rejected_all_wrong": int(np.sum(status.rejected & (rows.n_pos == 0))),
        "roc/groups_rejected_equal_mixed": int(np.sum(status.rejected & (rows.n_pos > 0) & ~full)),
        "roc/groups_equal_reward": int(np.sum(status.equal)),
        "roc/small_groups_dropped": int(np.sum(status.small)) if cfg.small_group == "drop" else 0,
        "roc/small_groups_kept": int(np.sum(status.small)) if cfg.small_group == "keep" else 0,
        "roc/groups_exact_size": int(np.sum(status.exact)),
        "roc/groups_selected": int(np.sum(status.selectable)),
        "roc/pos_before": n_pos,
        "roc/neg_before": m - n_pos,
        "roc/nonfinite_penalty_rows": nonfinite_rows,
        "roc/world_size_removed_rows": int(removed[0]),
        "roc/world_size_removed_groups": int(removed[1]),
    }
    metrics.update({f"roc/groups_{name}": int(np.sum(flags)) for name, flags in rule_flags.items()})
    metrics.update(_trained_figures(batch, kept))
    optional = {"roc/group_pos_rate_mean": float(np.mean(rows.n_pos / rows.size)) if rows.n_groups else None}
    optional.update(_positive_means(batch, pos_idx, "before"))
    metrics.update({key: value for key, value in optional.items() if value is not None})
    return metrics


def _trained_figures(batch: BatchView, kept: np.ndarray) -> dict[str, float]:
    """The metrics that depend on which rows are trained on (``kept``: (m,) bool): counts, and the ``*_after`` means
    over the kept positives (absent when none is kept)."""
    m = int(batch.codes.size)
    kept_pos_idx = np.flatnonzero(kept & batch.is_pos)
    n_kept, n_kept_pos = int(np.count_nonzero(kept)), int(kept_pos_idx.size)
    kept_per_group = np.bincount(batch.codes[kept], minlength=batch.n_groups)
    kept_groups = int(np.count_nonzero(kept_per_group))
    metrics: dict[str, float] = {
        "roc/rows_kept": n_kept,
        "roc/rows_dropped": m - n_kept,
        "roc/groups_kept": kept_groups,
        "roc/groups_dropped": batch.n_groups - kept_groups,
        "roc/kept_pos": n_kept_pos,
        "roc/kept_neg": n_kept - n_kept_pos,
    }
    optional = _positive_means(batch, kept_pos_idx, "after")
    if kept_groups:
        kept_pos_per_group = np.bincount(batch.codes[kept_pos_idx], minlength=batch.n_groups)
        optional["roc/kept_pos_per_group_mean"] = float(kept_pos_per_group.sum() / kept_groups)
    metrics.update({key: value for key, value in optional.items() if value is not None})
    return metrics


def _positive_means(batch: BatchView, idx: np.ndarray, suffix: str) -> dict[str, float | None]:
    """Penalty, tool-error ratio and the optional statistics' means over the positives ``idx`` (None: undefined)."""
    means: dict[str, float | None] = {f"roc/pos_penalty_mean_{suffix}": _mean_at(batch.penalty, idx)}
    stats = batch.stats
    if "tool_calls" in stats and "tool_errors" in stats:
        means[f"roc/pos_tool_error_ratio_{suffix}"] = _error_ratio(stats["tool_errors"], stats["tool_calls"], idx)
    for name, prefix in (
        ("p_err", "roc/pos_p_err_mean"),
        ("no_tool", "roc/pos_no_tool_share"),
        ("p_format", "roc/pos_format_penalty_mean"),
    ):
        if name in stats:
            means[f"{prefix}_{suffix}"] = _mean_at(stats[name].astype(np.float64, copy=False), idx)
    return means


def trained_metrics(
    group_ids: Any, correct: Any, penalty: Any, kept: Any, stats: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """The ``roc/*`` metrics that depend on which rows are trained on, for a kept set chosen outside the rule (the
    empty-batch fallback): ``roc/rows_kept``, ``roc/groups_kept``, ``roc/kept_pos`` ..., the ``*_after`` means and
    ``roc/kept_pos_per_group_mean``. Arguments as :func:`select_rollouts`'s; ``kept``: (k,) row indices."""
    batch, _ = _input_rows(group_ids, correct, penalty, None, stats)
    mask = np.zeros(batch.codes.size, dtype=bool)
    mask[np.asarray(kept, dtype=np.int64)] = True
    return _trained_figures(batch, mask)
