"""Typed GRPO-RoC settings, parsed from verl's config and validated once, shared by every trainer adapter.

The single source of truth is ``algorithm.roc`` (declared in ``grporoc_plugin/config/grporoc.yaml``, or passed as
``+algorithm.roc.*`` overrides on verl's own config). Plugin-level knobs (group sizes, how "correct" is read, what
to do with an empty batch) live in :class:`RoCSettings`; every other key is forwarded by name to the selection
engine's :class:`grporoc_plugin.roc.RoCConfig` or to :class:`grporoc_plugin.penalties.PenaltyConfig`, so both stay
the owners of their own defaults. A key that names no field anywhere is rejected.

Bad configuration fails at start-up with a :class:`RoCConfigError` whose message names the offending key.
No verl, torch or TransferQueue import at module level: this is imported by the sampler, the manager, both trainers
and the V0 driver.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EMPTY_BATCH_POLICIES",
    "REWARD_METRIC",
    "RoCConfigError",
    "RoCSettings",
    "resolve_settings",
    "roc_section",
    "validate_run_config",
]

#: ``correct_key`` value that classifies on the scalar reward (``rm_scores`` summed) instead of an extra-info key.
REWARD_METRIC = "reward"
#: What to do when group rejection leaves no trajectory at all (see RoCSettings.empty_batch).
EMPTY_BATCH_POLICIES = ("refill", "keep_one", "error")
_TRAINER_MODES_WITH_SAMPLER_ROC = ("sync", "grporoc_sync")
# (fixed micro-batch size, the dynamic-batch switch that makes it unused) for the per-rank passes over a V1 batch
_MICRO_BATCH_KEYS = (
    (
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
        "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz",
    ),
    ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", "actor_rollout_ref.ref.log_prob_use_dynamic_bsz"),
    ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor_rollout_ref.actor.use_dynamic_bsz"),
)


class RoCConfigError(ValueError):
    """Invalid GRPO-RoC configuration; the message names the config key."""


@dataclass(frozen=True)
class RoCSettings:
    """Resolved ``algorithm.roc`` for one run (group sizes already resolved against the trainer version)."""

    #: Run RoC selection; when false the adapters pass batches through untouched (metrics are still logged).
    enable: bool = True
    #: Rollouts generated per train prompt before selection (2G in the paper).
    oversample_n: int = 8
    #: Trajectories kept per prompt after selection (G); every kept group has exactly this many sessions.
    keep_n: int = 4
    #: reward_extra_info key that says a trajectory is correct ("reward" = the scalar reward, rm_scores summed).
    correct_key: str = "acc"
    #: A trajectory is correct when its ``correct_key`` value is strictly above this threshold.
    correct_threshold: float = 0.5
    #: Base seed of the selection RNG (combined with the step, so runs are reproducible).
    seed: int = 0
    #: All groups rejected: "refill" (generate a fresh batch, sync V1 only), "keep_one" (train on one group with
    #: zero advantage, like a skipped step), or "error".
    empty_batch: str = "refill"
    #: Fresh batches tried by empty_batch="refill" before falling back to "keep_one".
    max_refills: int = 2
    #: Epsilon added to the group std by the grpo_roc advantage estimator (read there from algorithm.roc).
    adv_epsilon: float = 1e-6
    #: Keyword arguments for grporoc_plugin.roc.RoCConfig (validated by it).
    selection: Mapping[str, Any] = field(default_factory=dict)
    #: Keyword arguments for grporoc_plugin.penalties.PenaltyConfig (validated by it).
    penalty: Mapping[str, Any] = field(default_factory=dict)

    def roc_config(self, world_size: int = 1):
        """The selection engine's config (``grporoc_plugin.roc.RoCConfig``) built from these settings."""
        from grporoc_plugin.roc import RoCConfig

        kwargs = {**dict(self.selection), "keep_n": self.keep_n}
        if world_size > 1:
            kwargs["world_size"] = world_size
        try:
            return RoCConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            raise RoCConfigError(f"algorithm.roc: invalid selection settings {kwargs}: {exc}") from exc

    def penalty_config(self):
        """The penalty config (``grporoc_plugin.penalties.PenaltyConfig``) built from these settings."""
        from grporoc_plugin.penalties import PenaltyConfig

        try:
            return PenaltyConfig(**dict(self.penalty))
        except (TypeError, ValueError) as exc:
            raise RoCConfigError(f"algorithm.roc: invalid penalty settings {dict(self.penalty)}: {exc}") from exc

    def select(
        self,
        group_ids,
        correct_values,
        *,
        p_err=None,
        p_format=None,
        tool_calls=None,
        step: int = 0,
        world_size: int = 1,
    ):
        """Run RoC on per-session arrays; return (sorted kept indices, ``roc/*`` metrics).

        ``correct_values`` is the raw ``correct_key`` value (correct = value > correct_threshold). Missing
        ``p_err``/``p_format`` count as 0, so any reward function that reports correctness works. When the
        settings are disabled everything is kept and only the metrics are computed.
        """
        import numpy as np

        from grporoc_plugin.penalties import combine_penalties
        from grporoc_plugin.roc import select_rollouts

        m = len(group_ids)
        values = np.asarray(correct_values, dtype=np.float64).reshape(m)
        # NaN/inf correctness (a broken verifier) reads as incorrect: a failure is never promoted to a positive
        correct = np.where(np.isfinite(values), values, -np.inf) > self.correct_threshold
        err = np.zeros(m) if p_err is None else np.nan_to_num(np.asarray(p_err, dtype=np.float64), nan=1.0)
        fmt = np.zeros(m) if p_format is None else np.nan_to_num(np.asarray(p_format, dtype=np.float64), nan=1.0)
        penalty = combine_penalties(err, fmt, self.penalty_config())
        no_tool = None if tool_calls is None else np.asarray(tool_calls, dtype=np.float64) <= 0
        kept, metrics = select_rollouts(
            group_ids,
            correct,
            penalty,
            config=self.roc_config(world_size=world_size),
            seed=self.seed * 1_000_003 + int(step),
            no_tool=no_tool,
            p_err=err if p_err is not None else None,
            p_format=fmt if p_format is not None else None,
        )
        if not self.enable:
            # Everything is trained on; what RoC would have done stays visible under roc/if_enabled/*.
            kept = np.arange(m, dtype=np.int64)
            metrics = {key.replace("roc/", "roc/if_enabled/", 1): value for key, value in metrics.items()}
            metrics.update({"roc/rows_before": float(m), "roc/rows_kept": float(m), "roc/rows_dropped": 0.0})
        metrics["roc/enabled"] = float(self.enable)
        metrics["roc/penalty_available"] = float(p_err is not None or p_format is not None)
        return kept, metrics


def to_plain(node: Any) -> Any:
    """OmegaConf node -> plain python container (resolved); plain values pass through."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        return node
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def config_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg.a.b.c`` for DictConfig or dicts, ``default`` when any part is missing or None."""
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
        except Exception:  # noqa: BLE001 - a struct DictConfig raises on unknown keys in some versions
            return default
    return default if node is None else node


def roc_section(full_config: Any) -> dict[str, Any] | None:
    """The raw ``algorithm.roc`` mapping of a full trainer config, or None when absent."""
    section = config_get(full_config, "algorithm.roc")
    return None if section is None else dict(to_plain(section))


def _as_int(key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RoCConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _field_names(cls_path: str) -> set[str]:
    module_name, cls_name = cls_path.rsplit(".", 1)
    import importlib

    cls = getattr(importlib.import_module(module_name), cls_name)
    return {f.name for f in dataclasses.fields(cls)}


def resolve_settings(roc: Mapping[str, Any] | None, *, rollout_n: int, trainer: str = "v1") -> RoCSettings:
    """Parse and validate ``algorithm.roc`` against the rollout group size of the given trainer version.

    V1: ``actor_rollout_ref.rollout.n`` is the *kept* group size G (verl sizes PPO mini-batches by it), the
    oversampling manager generates ``oversample_n`` (default 2G) per train prompt. V0: the trainer itself repeats
    every prompt ``rollout.n`` times, so ``rollout.n`` is the oversampled size and ``keep_n`` defaults to half of it.
    """
    raw = dict(to_plain(roc) or {})
    rollout_n = _as_int("actor_rollout_ref.rollout.n", rollout_n, minimum=1)
    plugin_keys = {f.name for f in dataclasses.fields(RoCSettings)} - {"selection", "penalty"}
    # world_size is the data-parallel size, set by the V0 adapter from the trainer, never by hand
    selection_names = _field_names("grporoc_plugin.roc.RoCConfig") - {"world_size"}
    penalty_names = _field_names("grporoc_plugin.penalties.PenaltyConfig")
    selection: dict[str, Any] = dict(raw.pop("selection", None) or {})
    penalty: dict[str, Any] = dict(raw.pop("penalty", None) or {})
    plugin: dict[str, Any] = {}
    for key, value in raw.items():
        if key in plugin_keys:
            plugin[key] = value
        elif key in selection_names:
            selection[key] = value
        elif key in penalty_names:
            penalty[key] = value
        else:
            known = sorted(plugin_keys | selection_names | penalty_names)
            raise RoCConfigError(f"algorithm.roc.{key} is not a GRPO-RoC setting; known keys: {known}")
    for key in selection:
        if key not in selection_names:
            raise RoCConfigError(f"algorithm.roc.selection.{key} is not a RoCConfig field: {sorted(selection_names)}")
    for key in penalty:
        if key not in penalty_names:
            raise RoCConfigError(f"algorithm.roc.penalty.{key} is not a PenaltyConfig field: {sorted(penalty_names)}")

    keep_n, oversample_n = plugin.pop("keep_n", None), plugin.pop("oversample_n", None)
    if trainer == "v1":
        keep_n = rollout_n if keep_n is None else _as_int("algorithm.roc.keep_n", keep_n, minimum=1)
        if keep_n != rollout_n:
            raise RoCConfigError(
                f"algorithm.roc.keep_n={keep_n} must equal actor_rollout_ref.rollout.n={rollout_n} with the V1 "
                "trainer: verl sizes PPO mini-batches as ppo_mini_batch_size * rollout.n, so rollout.n is the kept "
                "group size G; set algorithm.roc.oversample_n for the number generated"
            )
        oversample_n = 2 * keep_n if oversample_n is None else oversample_n
        oversample_n = _as_int("algorithm.roc.oversample_n", oversample_n, minimum=1)
    elif trainer == "v0":
        oversample_n = (
            rollout_n if oversample_n is None else _as_int("algorithm.roc.oversample_n", oversample_n, minimum=1)
        )
        if oversample_n != rollout_n:
            raise RoCConfigError(
                f"algorithm.roc.oversample_n={oversample_n} must equal actor_rollout_ref.rollout.n={rollout_n} with "
                "the V0 trainer (trainer.use_v1=False): it repeats each prompt rollout.n times"
            )
        keep_n = max(1, rollout_n // 2) if keep_n is None else _as_int("algorithm.roc.keep_n", keep_n, minimum=1)
    else:
        raise ValueError(f"trainer must be 'v1' or 'v0', got {trainer!r}")
    if oversample_n < keep_n:
        raise RoCConfigError(
            f"algorithm.roc.oversample_n={oversample_n} must be >= the kept group size G={keep_n} "
            "(algorithm.roc.keep_n / actor_rollout_ref.rollout.n)"
        )

    empty_batch = plugin.get("empty_batch", "refill")
    if empty_batch not in EMPTY_BATCH_POLICIES:
        raise RoCConfigError(f"algorithm.roc.empty_batch must be one of {EMPTY_BATCH_POLICIES}, got {empty_batch!r}")
    correct_key = plugin.get("correct_key", "acc")
    if not isinstance(correct_key, str) or not correct_key:
        raise RoCConfigError(f"algorithm.roc.correct_key must be a non-empty string, got {correct_key!r}")
    threshold = plugin.get("correct_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise RoCConfigError(f"algorithm.roc.correct_threshold must be a finite number, got {threshold!r}")
    enable = plugin.get("enable", True)
    if not isinstance(enable, bool):
        raise RoCConfigError(f"algorithm.roc.enable must be a boolean, got {enable!r}")
    seed = _as_int("algorithm.roc.seed", plugin.get("seed", 0), minimum=0)
    max_refills = _as_int("algorithm.roc.max_refills", plugin.get("max_refills", 2), minimum=0)

    adv_epsilon = plugin.get("adv_epsilon", 1e-6)
    if isinstance(adv_epsilon, bool) or not isinstance(adv_epsilon, int | float) or not 0 <= adv_epsilon < math.inf:
        raise RoCConfigError(f"algorithm.roc.adv_epsilon must be a finite number >= 0, got {adv_epsilon!r}")

    settings = RoCSettings(
        enable=enable,
        adv_epsilon=float(adv_epsilon),
        oversample_n=oversample_n,
        keep_n=keep_n,
        correct_key=correct_key,
        correct_threshold=float(threshold),
        seed=seed,
        empty_batch=empty_batch,
        max_refills=max_refills,
        selection=selection,
        penalty=penalty,
    )
    _validate_floors(settings)
    settings.roc_config()  # let the engine reject its own bad values now, not at the first step
    settings.penalty_config()
    return settings


def _validate_floors(settings: RoCSettings) -> None:
    """Per-sign minimums (``min_pos``/``min_neg`` or the release names) must fit in the kept group."""
    floors = {
        k: v
        for k, v in settings.selection.items()
        if k in ("min_pos", "min_neg", "min_non_zero_reward_trace_num", "min_zero_reward_trace_num")
    }
    for key, value in floors.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise RoCConfigError(f"algorithm.roc.{key} must be an integer, got {value!r}")
        if value > settings.keep_n:
            raise RoCConfigError(f"algorithm.roc.{key}={value} exceeds the kept group size G={settings.keep_n}")
    total = sum(max(0, v) for v in floors.values())
    if total > settings.keep_n:
        raise RoCConfigError(
            f"algorithm.roc floors {floors} sum to {total} > kept group size G={settings.keep_n} "
            "(the release asserts min_zero + min_non_zero <= down_sample_to_n)"
        )


def validate_run_config(full_config: Any, settings: RoCSettings, *, trainer: str = "v1") -> list[str]:
    """Cross-check a full verl trainer config against the RoC settings; raise on errors, return warnings.

    Checks the batch geometry (no synthetic padding rows on a full batch), the advantage estimator registration,
    the DAPO ``filter_groups`` combination, and V0's ``balance_batch`` requirement.
    """
    warnings: list[str] = []
    g = settings.keep_n
    train_batch_size = _as_int("data.train_batch_size", config_get(full_config, "data.train_batch_size"), minimum=1)
    mini = config_get(full_config, "actor_rollout_ref.actor.ppo_mini_batch_size")
    n_gpus = int(config_get(full_config, "trainer.n_gpus_per_node", 1)) * int(
        config_get(full_config, "trainer.nnodes", 1)
    )
    dp = max(1, n_gpus)

    if trainer == "v1":
        rows = train_batch_size * g
        multiple = dp
        if mini is not None:
            mini = _as_int("actor_rollout_ref.actor.ppo_mini_batch_size", mini, minimum=1)
            multiple = math.lcm(dp, mini * g)
        if rows % multiple:
            raise RoCConfigError(
                f"data.train_batch_size * G = {train_batch_size} * {g} = {rows} rows is not divisible by "
                f"lcm(dp={dp}, actor_rollout_ref.actor.ppo_mini_batch_size * G = {mini} * {g}) = {multiple}: verl "
                "would pad every step with synthetic rows; pick data.train_batch_size and ppo_mini_batch_size so "
                "that it divides"
            )
        # RoC keeps a varying number of groups; verl pads the kept rows only up to a multiple of `multiple`, so each
        # rank may get just multiple / dp rows, which every fixed micro-batch size must divide (else a mid-run crash
        # in prepare_micro_batches on the first step that drops groups)
        unit = multiple // dp
        for key, dynamic_key in _MICRO_BATCH_KEYS if mini is not None else ():
            micro = config_get(full_config, key)
            if (
                isinstance(micro, int)
                and micro > 0
                and not config_get(full_config, dynamic_key, False)
                and unit % micro
            ):
                raise RoCConfigError(
                    f"{key}={micro} does not divide the {unit} rows per rank that a GRPO-RoC step can shrink to "
                    f"(lcm(dp={dp}, actor_rollout_ref.actor.ppo_mini_batch_size * G = {mini} * {g}) / dp): "
                    f"use a divisor of {unit} or {dynamic_key}=True"
                )
        mode = config_get(full_config, "trainer.v1.trainer_mode", "sync")
        if mode not in _TRAINER_MODES_WITH_SAMPLER_ROC:
            raise RoCConfigError(
                f"trainer.v1.trainer_mode={mode!r} is not supported by GRPO-RoC: use 'sync' (streaming reward) or "
                "'grporoc_sync' (colocated reward model)"
            )
        reward_model_enable = bool(config_get(full_config, "reward.reward_model.enable", False))
        resource_pool = bool(config_get(full_config, "reward.reward_model.enable_resource_pool", False))
        streaming = not reward_model_enable or resource_pool
        if mode == "sync" and not streaming:
            raise RoCConfigError(
                "reward.reward_model.enable=True without enable_resource_pool computes rewards after sampling, so "
                "the RoC sampler cannot see them: set trainer.v1.trainer_mode=grporoc_sync"
            )
    elif trainer == "v0":
        if not bool(config_get(full_config, "trainer.balance_batch", True)):
            raise RoCConfigError(
                "trainer.balance_batch=False: the V0 trainer then never calls _balance_batch, where GRPO-RoC "
                "selects; set trainer.balance_batch=True"
            )
        if mini is not None:
            mini = _as_int("actor_rollout_ref.actor.ppo_mini_batch_size", mini, minimum=1)
            # V0 sizes mini-batches as ppo_mini_batch_size * rollout.n (= oversample_n) rows, but only G per prompt
            # survive: the kept batch train_batch_size * G must split into whole mini-batches and DP shards.
            mini_rows = mini * settings.oversample_n
            kept_rows = train_batch_size * g
            if kept_rows % math.lcm(dp, mini_rows):
                raise RoCConfigError(
                    f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}: V0 makes mini-batches of "
                    f"ppo_mini_batch_size * rollout.n = {mini_rows} rows, which must divide the kept batch "
                    f"data.train_batch_size * G = {kept_rows} (and dp={dp}); for k updates per step set "
                    f"ppo_mini_batch_size = train_batch_size * G / (k * rollout.n)"
                )
        filter_groups = config_get(full_config, "algorithm.filter_groups")
        if filter_groups is not None and bool(config_get(filter_groups, "enable", False)):
            raise RoCConfigError(
                "algorithm.filter_groups.enable=True is ignored by verl's V0 trainer (trainer.use_v1=False); "
                "GRPO-RoC's reject_equal_reward drops all-equal groups there instead"
            )
    else:
        raise ValueError(f"trainer must be 'v1' or 'v0', got {trainer!r}")

    estimator = config_get(full_config, "algorithm.adv_estimator")
    if estimator is not None:
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, AdvantageEstimator

        builtin_enum_branches = {AdvantageEstimator.GAE.value, AdvantageEstimator.GRPO.value}
        if str(estimator) not in ADV_ESTIMATOR_REGISTRY and str(estimator) not in builtin_enum_branches:
            raise RoCConfigError(
                f"algorithm.adv_estimator={estimator!r} is not a registered advantage estimator "
                f"({sorted(ADV_ESTIMATOR_REGISTRY)}); is the grporoc_plugin entry point installed "
                "(python -m grporoc_plugin doctor)?"
            )
        if str(estimator) == AdvantageEstimator.GAE.value:
            warnings.append("algorithm.adv_estimator=gae: RoC keeps whole groups but GAE does not use them")

    filter_groups = config_get(full_config, "algorithm.filter_groups")
    if trainer == "v1" and filter_groups is not None and bool(config_get(filter_groups, "enable", False)):
        metric = config_get(filter_groups, "metric")
        if not metric:
            raise RoCConfigError("algorithm.filter_groups.metric must be set when algorithm.filter_groups.enable")
        if metric not in (REWARD_METRIC, settings.correct_key):
            warnings.append(
                f"algorithm.filter_groups.metric={metric!r} differs from algorithm.roc.correct_key="
                f"{settings.correct_key!r}: DAPO then refills groups equal on {metric!r}, which RoC may still "
                "reject as all-correct/all-wrong"
            )
    return warnings
