"""``rc/*`` metrics of one training batch, computed by the selection stage (:class:`grporoc_plugin.adapter.RoCStage`).

Over every session the stage sees (before selection; after DAPO's ``filter_groups`` when that is on):

* ``rc/zero_var_group_share``: share of groups whose correctness values (``algorithm.roc.correct_key``: ``acc`` by
  default) are all equal -- the groups GRPO gives zero advantage and RoC's ``reject_equal_reward`` drops;
* ``rc/group_std_mean``: the within-group (population) std of those values, averaged over groups;

both reported in every run, RC-GRPO or not, so runs compare. With conditioned rollouts (sessions carrying
``rc_token``) also:

* ``rc/high_share``, ``rc/groups_mixed_tokens_share`` (groups with both tokens), ``rc/token_in_prompt_share`` (the
  token id really is in ``prompt_ids``);
* ``rc/acc_high``, ``rc/acc_low``: accuracy per token;
* the token mix per sign before and after selection: ``rc/pos_high_share_before`` / ``rc/neg_high_share_before``
  and ``rc/kept_pos_high_share`` / ``rc/kept_neg_high_share`` (what RoC kept; equal to "before" without RoC).

Means over an empty set are absent, never 0. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from grporoc_plugin.rc.settings import RC_TOKEN_FIELD, RC_TOKEN_IN_PROMPT_FIELD, RCSettings

__all__ = ["STRATIFY_FIELDS", "rc_metrics", "session_tokens"]

#: Per-trajectory fields ``algorithm.roc.stratify_by`` may name.
STRATIFY_FIELDS = (RC_TOKEN_FIELD,)


def session_tokens(
    counters: Sequence[Mapping[str, Any]], field: str = RC_TOKEN_FIELD, m: int | None = None
) -> np.ndarray:
    """(m,) object array of each session's ``field`` as text ("" where absent; all "" when ``counters`` does not
    have one entry per session, e.g. an adapter without agent-loop counters)."""
    m = len(counters) if m is None else m
    values = np.full(m, "", dtype=object)
    if len(counters) == m:
        values[:] = [str(row.get(field) or "") if hasattr(row, "get") else "" for row in counters]
    return values


def _share(mask: np.ndarray, among: np.ndarray) -> float | None:
    return float(mask[among].mean()) if among.any() else None


def rc_metrics(
    group_ids: Sequence[Hashable],
    values: np.ndarray,
    correct: np.ndarray,
    counters: Sequence[Mapping[str, Any]],
    kept: np.ndarray,
    settings: RCSettings,
) -> dict[str, float]:
    """``rc/*`` metrics (see the module docstring); ``values`` are the correctness-source values (NaN counts 0)."""
    from grporoc_plugin.roc import factorize_groups

    m = len(group_ids)
    if m == 0:
        return {}
    codes, n_groups = factorize_groups(group_ids)
    v = np.where(np.isfinite(values), values, 0.0).astype(np.float64)
    size = np.bincount(codes, minlength=n_groups)
    mean = np.bincount(codes, weights=v, minlength=n_groups) / size
    var = np.maximum(np.bincount(codes, weights=v * v, minlength=n_groups) / size - mean * mean, 0.0)
    lo, hi = np.full(n_groups, np.inf), np.full(n_groups, -np.inf)
    np.minimum.at(lo, codes, v)
    np.maximum.at(hi, codes, v)
    metrics: dict[str, float | None] = {
        "rc/zero_var_group_share": float(np.mean(hi - lo <= 1e-6)),
        "rc/group_std_mean": float(np.sqrt(var).mean()),
    }
    tokens = session_tokens(counters, m=m)
    conditioned = tokens != ""
    if conditioned.any():
        high = tokens == settings.high_token
        low = tokens == settings.low_token
        in_prompt = np.array([bool(row.get(RC_TOKEN_IN_PROMPT_FIELD, False)) for row in counters], dtype=bool)
        kept_mask = np.zeros(m, dtype=bool)
        kept_mask[np.asarray(kept, dtype=np.int64)] = True
        has_high = np.bincount(codes, weights=high, minlength=n_groups) > 0
        has_low = np.bincount(codes, weights=low, minlength=n_groups) > 0
        metrics.update(
            {
                "rc/high_share": _share(high, conditioned),
                "rc/groups_mixed_tokens_share": float(np.mean(has_high & has_low)),
                "rc/token_in_prompt_share": _share(in_prompt, conditioned),
                "rc/acc_high": _share(correct, high),
                "rc/acc_low": _share(correct, low),
                "rc/pos_high_share_before": _share(high, conditioned & correct),
                "rc/neg_high_share_before": _share(high, conditioned & ~correct),
                "rc/kept_pos_high_share": _share(high, conditioned & correct & kept_mask),
                "rc/kept_neg_high_share": _share(high, conditioned & ~correct & kept_mask),
            }
        )
    return {key: value for key, value in metrics.items() if value is not None}
