"""``grpo_roc`` advantage estimator: GRPO outcome advantage over the rows that survived RoC selection.

RoC only changes *which* rows exist; the estimator is plain GRPO (rStar2-Agent Eq. 7) on the kept rows of each uid:
``A_i = (r_i - mean_g) / (std_g + eps)`` (unbiased std, a singleton group gets mean 0 and std 1, exactly like verl's
builtin ``grpo``), or ``r_i - mean_g`` (Dr.GRPO) when ``algorithm.norm_adv_by_std_in_grpo=False``.

verl's ``compute_advantage`` passes a registered estimator only ``token_level_rewards``, ``response_mask``, ``config``
(= ``config.algorithm``) and ``index`` (= uid), so everything else is read from ``config``:

* ``algorithm.norm_adv_by_std_in_grpo`` (default True);
* ``algorithm.roc.adv_epsilon`` (default 1e-6, verl's GRPO epsilon).

Importing this module registers the estimator; it imports nothing from verl but ``core_algos``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from grporoc_plugin.roc import factorize_groups

#: Default epsilon added to the group std, as in verl's ``compute_grpo_outcome_advantage``.
DEFAULT_ADV_EPSILON = 1e-6


def _cfg_get(config: Any, key: str, default: Any) -> Any:
    """Read ``key`` from a DictConfig / AlgoConfig / dict; ``None`` config or missing key -> default."""
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else value


def _read_options(config: Any) -> tuple[bool, float]:
    norm = _cfg_get(config, "norm_adv_by_std_in_grpo", True)
    if not isinstance(norm, (bool, np.bool_)):
        raise ValueError(f"algorithm.norm_adv_by_std_in_grpo must be a bool, got {norm!r}")
    eps = _cfg_get(_cfg_get(config, "roc", None), "adv_epsilon", DEFAULT_ADV_EPSILON)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0.0 <= eps < math.inf):
        raise ValueError(f"algorithm.roc.adv_epsilon must be a finite float >= 0, got {eps!r}")
    return bool(norm), float(eps)


@register_adv_est("grpo_roc")
def compute_grpo_roc_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantage per uid over the present (kept) rows; returns (advantages, returns), both (bs, T).

    Args:
        token_level_rewards: (bs, T) rewards; the outcome is their sum over T.
        response_mask: (bs, T) mask; the scalar advantage is broadcast over it (0 on tool-response tokens).
        index: (bs,) uid per row (any hashable values).
        config: ``config.algorithm`` (DictConfig, AlgoConfig, dict or None).
        **kwargs: ignored; newer verl versions pass extra batch fields.
    """
    if index is None:
        raise ValueError("grpo_roc needs the uid of every row (index=non_tensor_batch['uid']); none was passed")
    norm_by_std, eps = _read_options(config)
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    with torch.no_grad():
        scores = token_level_rewards.sum(dim=-1)
        codes_np, n_groups = factorize_groups(index)
        if codes_np.size != scores.shape[0]:
            raise ValueError(f"index has {codes_np.size} entries for {scores.shape[0]} rows")
        codes = torch.from_numpy(codes_np).to(scores.device)
        # float64 group statistics (scatter-add), cast back: matches verl's per-group torch.mean/std to float32 ulp
        s64 = scores.to(torch.float64)
        count = torch.bincount(codes, minlength=n_groups).to(torch.float64)
        mean = torch.zeros(n_groups, dtype=torch.float64, device=scores.device).index_add_(0, codes, s64) / count
        sq_dev = (s64 - mean[codes]) ** 2
        var = torch.zeros_like(mean).index_add_(0, codes, sq_dev) / (count - 1.0).clamp_min(1.0)
        std = var.sqrt()
        singleton = count == 1
        mean = torch.where(singleton, torch.zeros_like(mean), mean).to(scores.dtype)
        std = torch.where(singleton, torch.ones_like(std), std).to(scores.dtype)
        centred = scores - mean[codes]
        adv = centred / (std[codes] + eps) if norm_by_std else centred
        adv = adv.unsqueeze(-1) * response_mask
    return adv, adv
