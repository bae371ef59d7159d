"""Typed GRPO-RoC settings: ``algorithm.roc`` parsed and validated once, shared by every trainer adapter.

``config.py`` parses; it never selects (that is :mod:`grporoc_plugin.adapter`). The single source of truth is
``algorithm.roc``, declared in ``grporoc_plugin/config/grporoc.yaml`` or passed as ``+algorithm.roc.*`` overrides on
verl's own config. Its keys are the fields of three dataclasses, each the owner of its defaults and one-line docs:
:class:`RoCSettings` (plugin-level: group sizes, how "correct" is read, empty batches), the selection engine's
:class:`grporoc_plugin.roc.RoCConfig` and :class:`grporoc_plugin.penalties.PenaltyConfig`. The yaml block is
generated from them (:func:`yaml_roc_block`; a test keeps the file equal to it). A key that names no field is
rejected.

Bad configuration fails with a :class:`RoCConfigError` whose message names the offending key: in the driver before Ray
starts (the :class:`StartupCheck` Hydra callback declared in ``grporoc.yaml``) and again in every adapter (runs that
use plain ``+`` overrides on verl's config have no callback). No verl, torch or TransferQueue import at module level.
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
    "StartupCheck",
    "config_get",
    "field_docs",
    "resolve_settings",
    "roc_section",
    "to_plain",
    "validate_run_config",
    "yaml_roc_block",
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
# RoCConfig fields an adapter sets itself (never from algorithm.roc): the group size comes from keep_n above, the
# data-parallel size from the V0 trainer.
_ENGINE_FIELDS_SET_BY_ADAPTERS = ("keep_n", "world_size")


class RoCConfigError(ValueError):
    """Invalid GRPO-RoC configuration; the message names the config key."""


@dataclass(frozen=True)
class RoCSettings:
    """Plugin-level ``algorithm.roc`` settings; resolve_settings fills the group sizes for the trainer version."""

    enable: bool = True
    """Run RoC selection; false generates G per prompt and trains on all (roc/if_enabled/* shows what RoC would do)."""
    oversample_n: int | None = None
    """Rollouts generated per train prompt before selection (2G); null = 2 * keep_n (V1) or rollout.n (V0)."""
    keep_n: int | None = None
    """Rollouts kept per prompt (G); null = actor_rollout_ref.rollout.n (V1, must equal it) or rollout.n // 2 (V0)."""
    correct_key: str = "acc"
    """reward_extra_info key that says a trajectory is correct; reward = the scalar reward (e.g. a reward model)."""
    correct_threshold: float = 0.5
    """A trajectory is correct when its correct_key value is strictly above this threshold."""
    seed: int = 0
    """Base seed of the selection RNG, mixed with the global step (a resumed run selects as an uninterrupted one)."""
    empty_batch: str = "refill"
    """All groups rejected: refill (fresh batch, sync V1 sampler), keep_one (one zero-advantage group), error."""
    max_refills: int = 2
    """Fresh batches tried by empty_batch=refill before falling back to keep_one."""
    adv_epsilon: float = 1e-6
    """Epsilon added to the group std by the grpo_roc advantage estimator."""
    dump_dir: str | None = None
    """Directory to append each step's selection inputs and kept mask to (selection.jsonl); null = off."""
    stratify_by: str | None = None
    """Split RoC's per-sign quotas by this trajectory field (rc_token: keep each group's RC token mix); null = off."""
    selection: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for grporoc_plugin.roc.RoCConfig (its fields, flat in the yaml)."""
    penalty: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments for grporoc_plugin.penalties.PenaltyConfig (its fields, flat in the yaml)."""

    def roc_config(self, world_size: int = 1):
        """The selection engine's config (``grporoc_plugin.roc.RoCConfig``) built from these settings."""
        from grporoc_plugin.roc import RoCConfig

        kwargs = {**dict(self.selection), "keep_n": self.keep_n, "world_size": world_size}
        try:
            return RoCConfig(**kwargs)
        except (TypeError, ValueError) as exc:
            raise RoCConfigError(_name_keys(str(exc), "RoCConfig")) from exc

    def penalty_config(self):
        """The penalty config (``grporoc_plugin.penalties.PenaltyConfig``) built from these settings."""
        from grporoc_plugin.penalties import PenaltyConfig

        try:
            return PenaltyConfig(**dict(self.penalty))
        except (TypeError, ValueError) as exc:
            raise RoCConfigError(_name_keys(str(exc), "PenaltyConfig")) from exc


def _name_keys(message: str, cls_name: str) -> str:
    """Say ``algorithm.roc.min_pos`` where a dataclass says ``RoCConfig.min_pos``."""
    named = message.replace(f"{cls_name}.", "algorithm.roc.")
    return named if "algorithm.roc." in named else f"algorithm.roc: {named}"


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


def _as_optional_str(key: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        raise RoCConfigError(f"{key} must be a non-empty path or null, got {value!r}")
    return value


def _as_number(key: str, value: Any, *, minimum: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value < math.inf:
        bound = "" if minimum == -math.inf else f" >= {minimum:g}"
        raise RoCConfigError(f"{key} must be a finite number{bound}, got {value!r}")
    return float(value)


def _engine_classes() -> tuple[type, type]:
    from grporoc_plugin.penalties import PenaltyConfig
    from grporoc_plugin.roc import RoCConfig

    return RoCConfig, PenaltyConfig


def _sections() -> list[tuple[type, tuple[str, ...]]]:
    """The dataclasses behind ``algorithm.roc``, in yaml order, with the fields that are not keys of it."""
    roc_config, penalty_config = _engine_classes()
    return [
        (RoCSettings, ("selection", "penalty")),
        (roc_config, _ENGINE_FIELDS_SET_BY_ADAPTERS),
        (penalty_config, ()),
    ]


def resolve_settings(roc: Mapping[str, Any] | None, *, rollout_n: int, trainer: str = "v1") -> RoCSettings:
    """Parse and validate ``algorithm.roc`` against the rollout group size of the given trainer version.

    V1: ``actor_rollout_ref.rollout.n`` is the *kept* group size G (verl sizes PPO mini-batches by it), the
    oversampling manager generates ``oversample_n`` (default 2G) per train prompt. V0: the trainer itself repeats
    every prompt ``rollout.n`` times, so ``rollout.n`` is the oversampled size and ``keep_n`` defaults to half of it.
    """
    raw = dict(to_plain(roc) or {})
    rollout_n = _as_int("actor_rollout_ref.rollout.n", rollout_n, minimum=1)
    (plugin_cls, plugin_skip), (roc_cls, roc_skip), (pen_cls, _) = _sections()
    plugin_keys = {f.name for f in dataclasses.fields(plugin_cls)} - set(plugin_skip)
    selection_names = {f.name for f in dataclasses.fields(roc_cls)} - set(roc_skip)
    penalty_names = {f.name for f in dataclasses.fields(pen_cls)}
    plugin: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    penalty: dict[str, Any] = {}
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

    keep_n, oversample_n = _resolve_group_sizes(plugin.pop("keep_n", None), plugin.pop("oversample_n", None),
                                                rollout_n, trainer)  # fmt: skip
    empty_batch = plugin.get("empty_batch", "refill")
    if empty_batch not in EMPTY_BATCH_POLICIES:
        raise RoCConfigError(f"algorithm.roc.empty_batch must be one of {EMPTY_BATCH_POLICIES}, got {empty_batch!r}")
    correct_key = plugin.get("correct_key", "acc")
    if not isinstance(correct_key, str) or not correct_key:
        raise RoCConfigError(f"algorithm.roc.correct_key must be a non-empty string, got {correct_key!r}")
    enable = plugin.get("enable", True)
    if not isinstance(enable, bool):
        raise RoCConfigError(f"algorithm.roc.enable must be a boolean, got {enable!r}")
    settings = RoCSettings(
        enable=enable,
        oversample_n=oversample_n,
        keep_n=keep_n,
        correct_key=correct_key,
        correct_threshold=_as_number("algorithm.roc.correct_threshold", plugin.get("correct_threshold", 0.5)),
        seed=_as_int("algorithm.roc.seed", plugin.get("seed", 0), minimum=0),
        empty_batch=empty_batch,
        max_refills=_as_int("algorithm.roc.max_refills", plugin.get("max_refills", 2), minimum=0),
        adv_epsilon=_as_number("algorithm.roc.adv_epsilon", plugin.get("adv_epsilon", 1e-6), minimum=0.0),
        dump_dir=_as_optional_str("algorithm.roc.dump_dir", plugin.get("dump_dir")),
        stratify_by=_as_stratify_by(plugin.get("stratify_by"), selection),
        selection=selection,
        penalty=penalty,
    )
    settings.roc_config()  # let the engine and the penalty config reject their own bad values now
    settings.penalty_config()
    return settings


def _as_stratify_by(value: Any, selection: Mapping[str, Any]) -> str | None:
    """``stratify_by``: null or a per-trajectory field the selection can stratify on (rule roc only)."""
    if value is None:
        return None
    from grporoc_plugin.rc.metrics import STRATIFY_FIELDS

    if value not in STRATIFY_FIELDS:
        raise RoCConfigError(f"algorithm.roc.stratify_by must be null or one of {list(STRATIFY_FIELDS)}, got {value!r}")
    if selection.get("rule", "roc") != "roc":
        raise RoCConfigError(f"algorithm.roc.stratify_by needs algorithm.roc.rule=roc, got {selection['rule']!r}")
    return value


def _resolve_group_sizes(keep_n: Any, oversample_n: Any, rollout_n: int, trainer: str) -> tuple[int, int]:
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
    return keep_n, oversample_n


# ------------------------------------------------------------------------------------------- one config source


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its one-line docstring (the string literal right after the field in the class body)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-")  # "1.0e-6": a float for YAML 1.1 (PyYAML) and OmegaConf alike
    return str(value)


def yaml_roc_block(indent: str = "    ") -> str:
    """The ``algorithm.roc`` block of grporoc.yaml, generated from the dataclasses: ``# doc`` then ``key: default``."""
    lines = []
    for cls, skip in _sections():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            if f.name not in docs:
                raise RuntimeError(f"{cls.__name__}.{f.name} has no one-line docstring")
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines += ["", f"{indent}# {docs[f.name]}", f"{indent}{f.name}: {_yaml_value(default)}"]
    return "\n".join(lines[1:]) + "\n"


# ------------------------------------------------------------------------------------------------- validation


class _Geometry:
    """The batch geometry a run config implies (read once for the checks below)."""

    def __init__(self, full_config: Any, settings: RoCSettings):
        self.config = full_config
        self.g = settings.keep_n
        self.oversample_n = settings.oversample_n
        self.train_batch_size = _as_int(
            "data.train_batch_size", config_get(full_config, "data.train_batch_size"), minimum=1
        )
        mini = config_get(full_config, "actor_rollout_ref.actor.ppo_mini_batch_size")
        self.mini = None if mini is None else _as_int("actor_rollout_ref.actor.ppo_mini_batch_size", mini, minimum=1)
        n_gpus = int(config_get(full_config, "trainer.n_gpus_per_node", 1)) * int(
            config_get(full_config, "trainer.nnodes", 1)
        )
        self.dp = max(1, n_gpus)


def _check_v1_geometry(geo: _Geometry) -> None:
    """No synthetic padding rows on a full batch, and micro-batches that divide the smallest shrunk batch."""
    g, dp, mini = geo.g, geo.dp, geo.mini
    rows = geo.train_batch_size * g
    multiple = dp if mini is None else math.lcm(dp, mini * g)
    if rows % multiple:
        raise RoCConfigError(
            f"data.train_batch_size * G = {geo.train_batch_size} * {g} = {rows} rows is not divisible by "
            f"lcm(dp={dp}, actor_rollout_ref.actor.ppo_mini_batch_size * G = {mini} * {g}) = {multiple}: verl "
            "would pad every step with synthetic rows; pick data.train_batch_size and ppo_mini_batch_size so "
            "that it divides"
        )
    # RoC keeps a varying number of groups; verl pads the kept rows only up to a multiple of `multiple`, so each
    # rank may get just multiple / dp rows, which every fixed micro-batch size must divide (else a mid-run crash
    # in prepare_micro_batches on the first step that drops groups)
    unit = multiple // dp
    for key, dynamic_key in _MICRO_BATCH_KEYS if mini is not None else ():
        micro = config_get(geo.config, key)
        if isinstance(micro, int) and micro > 0 and not config_get(geo.config, dynamic_key, False) and unit % micro:
            raise RoCConfigError(
                f"{key}={micro} does not divide the {unit} rows per rank that a GRPO-RoC step can shrink to "
                f"(lcm(dp={dp}, actor_rollout_ref.actor.ppo_mini_batch_size * G = {mini} * {g}) / dp): "
                f"use a divisor of {unit} or {dynamic_key}=True"
            )


def _check_v1_mode(full_config: Any) -> None:
    """The trainer mode must leave a place to select where the rewards are visible."""
    mode = config_get(full_config, "trainer.v1.trainer_mode", "sync")
    if mode not in _TRAINER_MODES_WITH_SAMPLER_ROC:
        raise RoCConfigError(
            f"trainer.v1.trainer_mode={mode!r} is not supported by GRPO-RoC: use 'sync' (streaming reward) or "
            "'grporoc_sync' (colocated reward model)"
        )
    reward_model_enable = bool(config_get(full_config, "reward.reward_model.enable", False))
    resource_pool = bool(config_get(full_config, "reward.reward_model.enable_resource_pool", False))
    if mode == "sync" and reward_model_enable and not resource_pool:
        raise RoCConfigError(
            "reward.reward_model.enable=True without enable_resource_pool computes rewards after sampling, so "
            "the RoC sampler cannot see them: set trainer.v1.trainer_mode=grporoc_sync"
        )


def _check_v0(geo: _Geometry) -> None:
    """V0 selects in _balance_batch, has no padding rows and ignores DAPO's filter_groups."""
    if not bool(config_get(geo.config, "trainer.balance_batch", True)):
        raise RoCConfigError(
            "trainer.balance_batch=False: the V0 trainer then never calls _balance_batch, where GRPO-RoC "
            "selects; set trainer.balance_batch=True"
        )
    if geo.mini is not None:
        # V0 sizes mini-batches as ppo_mini_batch_size * rollout.n (= oversample_n) rows, but only G per prompt
        # survive: the kept batch train_batch_size * G must split into whole mini-batches and DP shards.
        mini_rows = geo.mini * geo.oversample_n
        kept_rows = geo.train_batch_size * geo.g
        if kept_rows % math.lcm(geo.dp, mini_rows):
            raise RoCConfigError(
                f"actor_rollout_ref.actor.ppo_mini_batch_size={geo.mini}: V0 makes mini-batches of "
                f"ppo_mini_batch_size * rollout.n = {mini_rows} rows, which must divide the kept batch "
                f"data.train_batch_size * G = {kept_rows} (and dp={geo.dp}); for k updates per step set "
                f"ppo_mini_batch_size = train_batch_size * G / (k * rollout.n)"
            )
    if _filter_groups_enabled(geo.config):
        raise RoCConfigError(
            "algorithm.filter_groups.enable=True is ignored by verl's V0 trainer (trainer.use_v1=False); "
            "GRPO-RoC's reject_equal_reward drops all-equal groups there instead"
        )


def _filter_groups_enabled(full_config: Any) -> bool:
    filter_groups = config_get(full_config, "algorithm.filter_groups")
    return filter_groups is not None and bool(config_get(filter_groups, "enable", False))


def _check_estimator(full_config: Any) -> list[str]:
    estimator = config_get(full_config, "algorithm.adv_estimator")
    if estimator is None:
        return []
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, AdvantageEstimator

    builtin_enum_branches = {AdvantageEstimator.GAE.value, AdvantageEstimator.GRPO.value}
    if str(estimator) not in ADV_ESTIMATOR_REGISTRY and str(estimator) not in builtin_enum_branches:
        raise RoCConfigError(
            f"algorithm.adv_estimator={estimator!r} is not a registered advantage estimator "
            f"({sorted(ADV_ESTIMATOR_REGISTRY)}); is the grporoc_plugin entry point installed "
            "(python -m grporoc_plugin doctor)?"
        )
    if str(estimator) == AdvantageEstimator.GAE.value:
        return ["algorithm.adv_estimator=gae: RoC keeps whole groups but GAE does not use them"]
    return []


def _check_filter_groups_v1(full_config: Any, settings: RoCSettings) -> list[str]:
    if not _filter_groups_enabled(full_config):
        return []
    metric = config_get(full_config, "algorithm.filter_groups.metric")
    if not metric:
        raise RoCConfigError("algorithm.filter_groups.metric must be set when algorithm.filter_groups.enable")
    if metric in (REWARD_METRIC, settings.correct_key):
        return []
    return [
        f"algorithm.filter_groups.metric={metric!r} differs from algorithm.roc.correct_key={settings.correct_key!r}: "
        f"DAPO then refills groups equal on {metric!r}, which RoC may still reject as all-correct/all-wrong"
    ]


def _check_penalty_source(full_config: Any, settings: RoCSettings) -> list[str]:
    """The penalty needs grporoc_tool_agent's counters (or a reward reporting p_err/p_format): say so at start-up."""
    penalty = settings.penalty_config()
    if not (penalty.use_error_ratio or penalty.use_answer_format):
        return []
    loop = config_get(full_config, "actor_rollout_ref.rollout.agent.default_agent_loop")
    if loop in (None, "grporoc_tool_agent"):
        return []
    return [
        f"actor_rollout_ref.rollout.agent.default_agent_loop={loop!r} does not record the tool counters the RoC "
        "penalty is computed from; unless the reward reports p_err/p_format, positives are ranked by penalty 0 "
        "(roc/penalty_available < 1). Use grporoc_tool_agent"
    ]


def validate_run_config(full_config: Any, settings: RoCSettings, *, trainer: str = "v1") -> list[str]:
    """Cross-check a full verl trainer config against the RoC settings; raise on errors, return warnings.

    Checks the batch geometry (no synthetic padding rows on a full batch), the trainer mode and reward placement,
    the advantage estimator registration, the DAPO ``filter_groups`` combination, V0's ``balance_batch``
    requirement, whether the agent loop records the counters the penalty needs, and ``algorithm.rc`` (RC-GRPO).
    """
    if trainer not in ("v1", "v0"):
        raise ValueError(f"trainer must be 'v1' or 'v0', got {trainer!r}")
    geo = _Geometry(full_config, settings)
    warnings: list[str] = []
    if trainer == "v1":
        _check_v1_geometry(geo)
        _check_v1_mode(full_config)
        warnings += _check_filter_groups_v1(full_config, settings)
    else:
        _check_v0(geo)
    warnings += _check_estimator(full_config)
    warnings += _check_penalty_source(full_config, settings)
    from grporoc_plugin.rc.settings import validate_rc_run_config  # algorithm.rc (RC-GRPO)

    warnings += validate_rc_run_config(full_config, stratify_by=settings.stratify_by, trainer=trainer)
    return warnings


class StartupCheck:
    """Hydra callback (declared in grporoc.yaml): validate ``algorithm.roc`` in the driver, before Ray starts.

    Without it a bad ``algorithm.roc.*`` value surfaces only when the first adapter is built inside a Ray worker
    (about 30 s on CPU, longer on a GPU host that first waits for its devices). Runs with ``+`` overrides on verl's
    own config have no callback and rely on the adapters' in-worker checks.
    """

    def on_job_start(self, config: Any, *, task_function: Any = None, **kwargs: Any) -> None:
        import logging

        roc = roc_section(config)
        if roc is None:
            return
        v0 = getattr(task_function, "__module__", "") == "grporoc_plugin.v0.main" or not bool(
            config_get(config, "trainer.use_v1", True)
        )
        trainer = "v0" if v0 else "v1"
        try:
            settings = resolve_settings(
                roc, rollout_n=config_get(config, "actor_rollout_ref.rollout.n"), trainer=trainer
            )
            warnings = validate_run_config(config, settings, trainer=trainer)
            from grporoc_plugin.rc.settings import check_run_tokenizer, rc_settings_from_config

            check_run_tokenizer(config, rc_settings_from_config(config))  # reward tokens vs tokenizer, template
        except RoCConfigError as exc:
            # Hydra turns an exception raised by a callback into a warning and runs the job anyway: exit instead
            raise SystemExit(f"grporoc: invalid configuration: {exc}") from exc
        for warning in warnings:
            logging.getLogger(__name__).warning("grporoc: %s", warning)

    # Hydra calls every hook of a callback object; the others have nothing to check.
    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        return None

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        return None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        return None

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        return None

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        return None
