"""Resample-on-Correct (RoC) selection engine of GRPO-RoC (rStar2-Agent), pure numpy.

Given ``N`` rollouts per prompt (``group_ids``), their binary outcome (``correct``) and a quality penalty (lower is
better, only used for positives), keep ``keep_n`` rollouts per group:

* ``reject_equal_reward`` drops groups whose outcomes are all equal (zero GRPO advantage), DAPO-style without refill;
* groups with exactly ``keep_n`` rows are kept as they are, smaller ones are dropped or kept (``small_group``);
* larger groups keep ``k_pos`` positives (lowest penalty first, or sampled with weight ``1/(p + eps)``) and
  ``k_neg`` negatives (first in rollout order, or uniformly sampled), with optional per-sign floors;
* optionally whole groups are dropped so that the kept row count is a multiple of the data-parallel world size.

With ``positive_mode="topk"``, ``negative_mode="first_k"`` and ``count_rule="release_round"`` the kept set equals the
public release (microsoft/rStar ``rstar2_agent/down_sample/roc.py`` after commit 5e95b19) for every group
composition the release accepts; where the release would hit its ``assert len(choices) == n`` (rounding ties with an
odd ``keep_n``) we repair the counts instead and report ``roc/groups_count_repaired``.

Everything is vectorised over rows (one stable ``lexsort`` + per-group quotas); no Python loop over groups.
No verl or torch import: this module is shared by the V1 sampler, the V0 trainer and tests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

POSITIVE_MODES = ("topk", "inverse_penalty")
NEGATIVE_MODES = ("first_k", "uniform")
COUNT_RULES = ("release_round", "paper_half")
SMALL_GROUP_MODES = ("drop", "keep")
TIE_BREAKS = ("index", "random")
ALIGN_MODES = ("none", "drop_groups")

__all__ = [
    "RoCConfig",
    "select_rollouts",
    "align_groups_to_world_size",
    "factorize_groups",
    "METRIC_KEYS",
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
    positive_mode: str = "topk"
    """"topk" (release: lowest penalty first) | "inverse_penalty" (paper: sample w.p. ~ 1/(p + penalty_eps))."""
    negative_mode: str = "first_k"
    """"first_k" (release: first in rollout order) | "uniform" (paper: uniform sample without replacement)."""
    count_rule: str = "release_round"
    """"release_round" (half-to-even round of share*n/N) | "paper_half" (k_neg = floor(neg*n/N), k_pos = rest)."""
    min_pos: int = 2
    """Floor on kept positives when available (the release's ``min_non_zero_reward_trace_num``); -1 = off."""
    min_neg: int = 2
    """Floor on kept negatives when available (the release's ``min_zero_reward_trace_num``); -1 = off."""
    reject_equal_reward: bool = True
    """Drop whole groups whose outcomes (``scores``, else ``correct``) are all equal."""
    equal_reward_tol: float = 1e-6
    """Absolute tolerance of the all-equal test: a group is equal when max(score) - min(score) <= tol."""
    small_group: str = "drop"
    """Groups with fewer than keep_n rows: "drop" (release) | "keep" (kept whole, no selection)."""
    penalty_eps: float = 0.1
    """delta in the inverse_penalty weight 1/(p + delta); keeps p = 0 finite."""
    tie_break: str = "index"
    """Penalty ties under topk: "index" (release: lower rollout index wins) | "random" (seeded)."""
    world_size: int = 1
    """Data-parallel size the kept row count must be a multiple of (applied when world_size_align != "none")."""
    world_size_align: str = "drop_groups"
    """"drop_groups": drop the fewest whole groups to reach a multiple of world_size | "none": no alignment."""

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"RoCConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        if not _is_int(self.keep_n) or self.keep_n < 1:
            raise bad("keep_n", ">= 1")
        for name, choices in (
            ("positive_mode", POSITIVE_MODES),
            ("negative_mode", NEGATIVE_MODES),
            ("count_rule", COUNT_RULES),
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
                f"(positive_mode={self.positive_mode!r} samples and has no ties); use tie_break='index'"
            )
        if not _is_int(self.world_size) or self.world_size < 1:
            raise bad("world_size", ">= 1")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, *, ignore: Iterable[str] = ()) -> RoCConfig:
        """Build from a dict/DictConfig; unknown keys (not in ``ignore``) raise ValueError naming them."""
        mapping = dict(mapping or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known - set(ignore))
        if unknown:
            raise ValueError(f"unknown RoC config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**{k: v for k, v in mapping.items() if k in known})


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
# Per-group counts (arrays of length G)


def release_counts(
    n_pos: np.ndarray, n_neg: np.ndarray, keep_n: int, min_pos: int, min_neg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The release's per-group counts for groups with N > keep_n, vectorised.

    Returns (k_pos, k_neg, keep_all, floors_applied, repaired). ``keep_all`` is the release's "keep all N" branch
    (both rounded counts under their floors; unreachable when min_pos + min_neg <= keep_n, which RoCConfig enforces).
    ``repaired`` marks groups where the release would slice fewer/more than keep_n rows and fail its assert
    (half-to-even ties with odd keep_n); there positives keep the release's count and negatives fill up to keep_n.
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
    return eff_pos, eff_neg, keep_all, floors_applied, repaired


def paper_counts(
    n_pos: np.ndarray, n_neg: np.ndarray, keep_n: int, min_pos: int, min_neg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paper counts generalised to N -> keep_n: k_neg = floor(neg*n/N), k_pos = n - k_neg, then floors.

    For N = 2n this is (ceil(pos/2), floor(neg/2)). Always sums to keep_n within availability (N > keep_n).
    Returns (k_pos, k_neg, floors_applied).
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
    return k_pos, k_neg, (k_pos != raw_pos) | (k_neg != raw_neg)


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
    "roc/groups_floor_applied",
    "roc/groups_release_keep_all",
    "roc/groups_count_repaired",
    "roc/pos_before",
    "roc/neg_before",
    "roc/kept_pos",
    "roc/kept_neg",
    "roc/kept_pos_per_group_mean",
    "roc/group_pos_rate_mean",
    "roc/nonfinite_penalty_rows",
    "roc/pos_penalty_mean_before",
    "roc/pos_penalty_mean_after",
    "roc/world_size_removed_rows",
    "roc/world_size_removed_groups",
)
OPTIONAL_METRIC_KEYS = {
    "no_tool": ("roc/pos_no_tool_ratio_before", "roc/pos_no_tool_ratio_after"),
    "p_err": ("roc/pos_tool_error_ratio_before", "roc/pos_tool_error_ratio_after"),
    "p_format": ("roc/pos_format_penalty_mean_before", "roc/pos_format_penalty_mean_after"),
}


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else 0.0


def select_rollouts(
    group_ids: Any,
    correct: Any,
    penalty: Any,
    config: RoCConfig | None = None,
    seed: int | None = 0,
    scores: Any = None,
    no_tool: Any = None,
    p_err: Any = None,
    p_format: Any = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """Select the rollouts to train on; return (sorted int64 kept indices, ``roc/*`` metrics).

    Args:
        group_ids: group (uid) of each trajectory, in rollout order; any hashable values.
        correct: binary outcome per trajectory (bool; numeric values are read as ``> 0.5``).
        penalty: quality penalty per trajectory (lower is better; ranks positives only). Non-finite -> ranked last
            (counted in ``roc/nonfinite_penalty_rows``); inverse_penalty clips negative penalties to 0.
        config: selection settings (default ``RoCConfig()``), or a mapping of its fields.
        seed: int >= 0 (or None for fresh entropy) seeding every random choice (inverse_penalty, uniform,
            tie_break="random"); same seed, same result. Release modes do not depend on it.
        scores: what ``reject_equal_reward`` compares (with ``equal_reward_tol``); defaults to ``correct``.
        no_tool, p_err, p_format: metrics only. "before" = all positives of the input (the rollout policy's
            behaviour, comparable to plain GRPO), "after" = kept positives. ``roc/pos_tool_error_ratio_*`` is
            the mean p_err among positives (paper Fig. 4).
    """
    cfg = config if config is not None else RoCConfig()
    if isinstance(cfg, Mapping):
        cfg = RoCConfig.from_mapping(cfg)
    if not isinstance(cfg, RoCConfig):
        raise TypeError(f"config must be a RoCConfig or a mapping of its fields, got {type(cfg).__name__}")
    codes, n_groups = factorize_groups(group_ids)
    m = int(codes.size)
    is_pos = _row_array(correct, m, "correct", bool)
    pen = _row_array(penalty, m, "penalty", float)
    nonfinite = ~np.isfinite(pen)
    pen = np.where(nonfinite, np.inf, pen)
    n = cfg.keep_n

    size = np.bincount(codes, minlength=n_groups).astype(np.int64)
    n_pos = np.bincount(codes, weights=is_pos, minlength=n_groups).astype(np.int64)
    n_neg = size - n_pos

    # --- group rejection (all outcomes equal) ---
    if scores is None:
        equal = (n_pos == 0) | (n_pos == size)
    else:
        sc = _row_array(scores, m, "scores", float)
        lo = np.full(n_groups, np.inf)
        hi = np.full(n_groups, -np.inf)
        np.minimum.at(lo, codes, sc)
        np.maximum.at(hi, codes, sc)
        equal = (hi - lo) <= cfg.equal_reward_tol  # NaN scores compare False: such a group is not rejected
    rejected = equal if cfg.reject_equal_reward else np.zeros(n_groups, dtype=bool)
    alive = ~rejected
    small = alive & (size < n)
    exact = alive & (size == n)
    big = alive & (size > n)

    # --- per-group quotas (computed for every group, used where the group is selected from) ---
    if cfg.count_rule == "release_round":
        k_pos, k_neg, keep_all, floors, repaired = release_counts(n_pos, n_neg, n, cfg.min_pos, cfg.min_neg)
    else:
        k_pos, k_neg, floors = paper_counts(n_pos, n_neg, n, cfg.min_pos, cfg.min_neg)
        keep_all = repaired = np.zeros(n_groups, dtype=bool)
    keep_all = keep_all & big
    repaired = repaired & big
    whole = exact | keep_all | (small & (cfg.small_group == "keep"))
    sel = big & ~keep_all
    q_pos = np.where(whole, n_pos, np.where(sel, k_pos, 0))
    q_neg = np.where(whole, n_neg, np.where(sel, k_neg, 0))

    # --- rank rows within (group, sign) and keep the first quota ---
    pos_rng, neg_rng, tie_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    if cfg.positive_mode == "topk":
        pos_key = pen
    else:
        # Efraimidis-Spirakis: key = u^(1/w) with w = 1/(p + eps); take the largest keys <=> smallest -log(u)*(p+eps)
        u = 1.0 - pos_rng.random(m)  # (0, 1]
        pos_key = -np.log(u) * (np.maximum(pen, 0.0) + cfg.penalty_eps)
    neg_key = np.arange(m, dtype=np.float64) if cfg.negative_mode == "first_k" else neg_rng.random(m)
    key = np.where(is_pos, pos_key, neg_key)
    block = codes * 2 + (~is_pos)  # (group, sign) block id
    if cfg.tie_break == "random":
        order = np.lexsort((np.where(is_pos, tie_rng.random(m), 0.0), key, block))
    else:
        order = np.lexsort((key, block))  # lexsort is stable: equal keys keep rollout order
    sorted_block = block[order]
    starts = np.ones(m, dtype=bool)
    starts[1:] = sorted_block[1:] != sorted_block[:-1]
    positions = np.arange(m)
    rank = positions - np.maximum.accumulate(np.where(starts, positions, 0))
    sorted_codes = sorted_block // 2
    quota = np.where(sorted_block % 2 == 0, q_pos[sorted_codes], q_neg[sorted_codes])
    kept = np.sort(order[rank < quota]).astype(np.int64)

    # --- whole-group world-size alignment ---
    removed_rows = removed_groups = 0
    if cfg.world_size_align == "drop_groups" and cfg.world_size > 1:
        kept, removed_rows, removed_groups = _align_codes(codes, kept, cfg.world_size, is_pos)

    # --- metrics ---
    kept_mask = np.zeros(m, dtype=bool)
    kept_mask[kept] = True
    kept_pos_mask = kept_mask & is_pos
    kept_groups = np.unique(codes[kept]).size
    pos_per_group = np.bincount(codes[kept_pos_mask], minlength=n_groups)[np.unique(codes[kept])]
    metrics: dict[str, float] = {
        "roc/rows_before": m,
        "roc/rows_kept": int(kept.size),
        "roc/rows_dropped": m - int(kept.size),
        "roc/groups_before": n_groups,
        "roc/groups_kept": int(kept_groups),
        "roc/groups_dropped": n_groups - int(kept_groups),
        "roc/groups_rejected_all_correct": int(np.sum(rejected & (n_pos == size))),
        "roc/groups_rejected_all_wrong": int(np.sum(rejected & (n_pos == 0))),
        "roc/groups_rejected_equal_mixed": int(np.sum(rejected & (n_pos > 0) & (n_pos < size))),
        "roc/groups_equal_reward": int(np.sum(equal)),
        "roc/small_groups_dropped": int(np.sum(small)) if cfg.small_group == "drop" else 0,
        "roc/small_groups_kept": int(np.sum(small)) if cfg.small_group == "keep" else 0,
        "roc/groups_exact_size": int(np.sum(exact)),
        "roc/groups_selected": int(np.sum(sel)),
        "roc/groups_floor_applied": int(np.sum(floors & sel)),  # groups whose counts the floors changed
        "roc/groups_release_keep_all": int(np.sum(keep_all)),
        "roc/groups_count_repaired": int(np.sum(repaired)),
        "roc/pos_before": int(is_pos.sum()),
        "roc/neg_before": m - int(is_pos.sum()),
        "roc/kept_pos": int(kept_pos_mask.sum()),
        "roc/kept_neg": int(kept.size) - int(kept_pos_mask.sum()),
        "roc/kept_pos_per_group_mean": float(pos_per_group.mean()) if pos_per_group.size else 0.0,
        "roc/group_pos_rate_mean": float(np.mean(n_pos / size)) if n_groups else 0.0,
        "roc/nonfinite_penalty_rows": int(nonfinite.sum()),
        "roc/pos_penalty_mean_before": _mean(pen[is_pos]),
        "roc/pos_penalty_mean_after": _mean(pen[kept_pos_mask]),
        "roc/world_size_removed_rows": int(removed_rows),
        "roc/world_size_removed_groups": int(removed_groups),
    }
    for name, value in (("no_tool", no_tool), ("p_err", p_err), ("p_format", p_format)):
        if value is None:
            continue
        arr = _row_array(value, m, name, bool if name == "no_tool" else float).astype(np.float64)
        before_key, after_key = OPTIONAL_METRIC_KEYS[name]
        metrics[before_key] = _mean(arr[is_pos])
        metrics[after_key] = _mean(arr[kept_pos_mask])
    return kept, metrics
