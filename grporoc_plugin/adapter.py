"""The one layer between verl's trainers and the selection engine, shared by every trainer adapter.

The V1 sampler (:mod:`grporoc_plugin.v1.sampler`), the ``grporoc_sync`` trainer (:mod:`grporoc_plugin.v1.trainer`), the
V0 trainer (:mod:`grporoc_plugin.v0.trainer`) and the oversampling manager (:mod:`grporoc_plugin.v1.manager`) each
only map their storage (TransferQueue keys, DataProto rows) to :class:`Sessions` and kept indices back. Everything
else happens here, once:

1. settings: ``algorithm.roc`` parsed and cross-checked against the run config (:meth:`RoCStage.from_run_config`);
2. penalties from the trajectory itself: the agent loop's counters (tool calls and errors by kind, assistant turns,
   answer tags on the model's own text, truncation), whatever produced the score; a reward function that reports
   ``p_err``/``p_format`` itself is the fallback; where neither exists the penalty is 0, ``roc/penalty_available``
   says so and an error is logged once, never a silent degradation;
3. correctness from the configured source (``correct_key``: a reward_extra_info key such as ``acc``, or ``reward``
   = the scalar reward, e.g. a reward-model score, with ``correct_threshold``);
4. the selection call, the policy's behaviour before selection (``rollout/*``) and the empty-batch policy.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from grporoc_plugin.config import (
    REWARD_METRIC,
    RoCConfigError,
    RoCSettings,
    config_get,
    resolve_settings,
    roc_section,
    validate_run_config,
)
from grporoc_plugin.penalties import ERROR_KINDS, PenaltyConfig, combine_penalties, structured_penalties
from grporoc_plugin.rc.metrics import rc_metrics, session_tokens
from grporoc_plugin.rc.settings import RCSettings, rc_settings_from_config
from grporoc_plugin.roc import TRAINED_OPTIONAL_METRIC_KEYS, select_rollouts, trained_metrics

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

__all__ = ["RoCStage", "Sessions", "TrajectoryStats", "behaviour_metrics", "trajectory_stats"]

#: Agent-loop counters (``grporoc_tool_agent``) a penalty is computed from; see docs/CONTRACTS.md.
PENALTY_COUNTERS = ("tool_calls", "assistant_turns", "answer_tags", "answer_tags_balanced")
#: Other agent-loop counters the behaviour metrics read.
STAT_COUNTERS = ("truncated", "void_turns", "dropped_tool_calls")
#: Per-trajectory fields of RC-GRPO's conditioning hook (grporoc_plugin.rc) the rc/* metrics and stratify_by read.
CONDITION_FIELDS = ("rc_token", "rc_token_in_prompt")
_WARNED: set[str] = set()


def _warn_once(key: str, message: str, *args: Any, level: int = logging.WARNING) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.log(level, message, *args)


@dataclass(frozen=True)
class Sessions:
    """One selection step's input, one entry per session (trajectory) in rollout order."""

    group_ids: Sequence[Hashable]
    """Group (uid) of each session."""
    correct_values: np.ndarray
    """(m,) raw value of the correctness source (``correct_key``); NaN where missing (read as incorrect)."""
    counters: Sequence[Mapping[str, Any]]
    """Agent-loop counters per session (``grporoc_tool_agent``'s extra fields); empty mappings where absent."""
    reward_info: Sequence[Mapping[str, Any]] = ()
    """reward_extra_info per session (fallback source of ``p_err``/``p_format``); may be empty."""
    response_len: np.ndarray | None = None
    """(m,) response tokens (model + tool tokens, as verl's response_length), where the adapter knows them."""

    def __len__(self) -> int:
        return len(self.group_ids)


class TrajectoryStats(NamedTuple):
    """Per-session statistics the penalty and the metrics use, (m,) arrays."""

    p_err: np.ndarray
    """Tool-error ratio (0 where unavailable)."""
    p_format: np.ndarray
    """Answer-format penalty (0 where unavailable)."""
    available: np.ndarray
    """bool: a penalty source existed for the session."""
    tool_calls: np.ndarray
    """Tool calls (NaN where unknown)."""
    tool_errors: np.ndarray
    """Failed tool calls of the penalised kinds (NaN where unknown)."""
    void_turns: np.ndarray
    """Turns with neither a tool call nor an answer (NaN where unknown)."""
    dropped_tool_calls: np.ndarray
    """Tool calls that were never run (beyond max_parallel_calls, unclosed tags; NaN where unknown)."""
    executed_calls: np.ndarray
    """Tool calls that reached the tool (calls minus malformed ones answered by the parser; NaN where unknown)."""
    truncated: np.ndarray
    """The response budget was hit (NaN where unknown)."""
    infra_errors: np.ndarray
    """Tool calls that failed for infrastructure reasons (sandbox/tool server; never penalised; NaN where unknown)."""
    verify_timeouts: np.ndarray
    """The reward's verification timed out (reward info ``verify_timeout``; NaN where unknown)."""
    verify_errors: np.ndarray
    """The reward's verification failed with an error (reward info ``verify_error``; NaN where unknown)."""


def _number(value: Any, default: float = math.nan) -> float:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return default
    return number


def _column(rows: Sequence[Mapping[str, Any]], key: str, m: int) -> np.ndarray:
    if not rows:
        return np.full(m, np.nan)
    return np.array([_number(row.get(key)) if key in row else np.nan for row in rows], dtype=np.float64)


def trajectory_stats(sessions: Sessions, config: PenaltyConfig) -> TrajectoryStats:
    """Penalties and tool statistics of each session, from its own agent-loop counters (else its reward info)."""
    m = len(sessions)
    counters, info = sessions.counters, sessions.reward_info
    calls = _column(counters, "tool_calls", m)
    errors_by_kind = {kind: _column(counters, f"tool_errors_{kind}", m) for kind in ERROR_KINDS}
    from_counters = np.ones(m, dtype=bool)
    for key in PENALTY_COUNTERS:
        from_counters &= np.isfinite(_column(counters, key, m))
    p_err = np.zeros(m)
    p_format = np.zeros(m)
    if from_counters.any():
        rows = np.flatnonzero(from_counters)
        err, fmt, _ = structured_penalties(
            calls[rows],
            {kind: np.nan_to_num(values[rows]) for kind, values in errors_by_kind.items()},
            _column(counters, "answer_tags", m)[rows],
            _column(counters, "answer_tags_balanced", m)[rows],
            _column(counters, "assistant_turns", m)[rows],
            config=config,
            truncated=np.nan_to_num(_column(counters, "truncated", m)[rows]),
        )
        p_err[rows], p_format[rows] = err, fmt
    # fallback: a reward function that reports the penalties itself (a part it does not report counts 0)
    info_err, info_fmt = _column(info, "p_err", m), _column(info, "p_format", m)
    from_info = ~from_counters & (np.isfinite(info_err) | np.isfinite(info_fmt))
    p_err[from_info] = np.nan_to_num(info_err[from_info])
    p_format[from_info] = np.nan_to_num(info_fmt[from_info])
    if not np.isfinite(calls).all():
        calls = np.where(np.isfinite(calls), calls, _column(info, "tool_calls", m))
    tool_errors = sum(errors_by_kind[kind] for kind in config.error_kinds)
    return TrajectoryStats(
        p_err=p_err,
        p_format=p_format,
        available=from_counters | from_info,
        tool_calls=calls,
        tool_errors=np.where(np.isfinite(calls), tool_errors, np.nan),
        void_turns=_column(counters, "void_turns", m),
        dropped_tool_calls=_column(counters, "dropped_tool_calls", m),
        executed_calls=calls - np.nan_to_num(errors_by_kind["parse"]),
        truncated=_column(counters, "truncated", m),
        infra_errors=errors_by_kind["infra"],
        verify_timeouts=_column(info, "verify_timeout", m),
        verify_errors=_column(info, "verify_error", m),
    )


def _mean(values: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    values = values if mask is None else values[mask]
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def behaviour_metrics(correct: np.ndarray, stats: TrajectoryStats, response_len: np.ndarray | None) -> dict:
    """``rollout/*``: what the policy generated this step, over every session *before* selection.

    Comparable across GRPO, random down-sampling and RoC (the behaviour, not the training data): accuracy, the
    paper's Fig. 4 tool-error ratio among positives (failed calls / calls) and the share of positives with a failed
    call, response lengths, tool calls per trajectory. Means over an empty set are absent, never 0.
    """
    m = correct.size
    pos = correct
    known = np.isfinite(stats.tool_calls)
    metrics: dict[str, float | None] = {"rollout/sessions": float(m), "rollout/acc": _mean(correct.astype(float))}
    pos_known = pos & known
    calls_pos = float(np.nansum(stats.tool_calls[pos_known]))
    metrics["rollout/pos_tool_error_ratio"] = (
        float(np.nansum(stats.tool_errors[pos_known])) / calls_pos if calls_pos > 0 else None
    )
    metrics["rollout/pos_with_error_share"] = _mean((stats.tool_errors > 0).astype(float), pos_known)
    metrics["rollout/tool_calls_per_traj"] = _mean(stats.tool_calls)
    metrics["rollout/executed_tool_calls_per_traj"] = _mean(stats.executed_calls)
    metrics["rollout/tool_error_ratio"] = (
        float(np.nansum(stats.tool_errors[known])) / float(np.nansum(stats.tool_calls[known]))
        if np.nansum(stats.tool_calls[known]) > 0
        else None
    )
    metrics["rollout/dropped_tool_calls_per_traj"] = _mean(stats.dropped_tool_calls)
    metrics["rollout/void_turns_per_traj"] = _mean(stats.void_turns)
    metrics["rollout/truncated_share"] = _mean(stats.truncated)
    # infrastructure failures: visible here, never in p_err (tool) or acc (reward scores them as wrong, counted)
    for key, values in (
        ("rollout/tool_errors_infra", stats.infra_errors),
        ("rollout/verify_timeouts", stats.verify_timeouts),
        ("rollout/verify_errors", stats.verify_errors),
    ):
        if np.isfinite(values).any():
            metrics[key] = float(np.nansum(values))
    if response_len is not None:
        metrics["rollout/response_len_all"] = _mean(response_len)
        metrics["rollout/response_len_pos"] = _mean(response_len, pos)
    return {key: value for key, value in metrics.items() if value is not None}


class Selection(NamedTuple):
    """Outcome of :meth:`RoCStage.select`."""

    kept: np.ndarray
    """Sorted int64 session indices to train on (empty when every group was rejected)."""
    metrics: dict[str, float]
    """``roc/*`` and ``rollout/*`` metrics."""


class RoCStage:
    """Settings, penalties, selection and the empty-batch policy of one adapter (see the module docstring)."""

    def __init__(
        self,
        settings: RoCSettings,
        *,
        adapter: str = "grporoc",
        reward_manager: str | None = None,
        rc: RCSettings | None = None,
    ):
        self.settings = settings
        self.rc = rc if rc is not None else RCSettings()  # algorithm.rc: token texts of the rc/* metrics
        self.adapter = adapter
        self.reward_manager = reward_manager
        self.penalty_config = settings.penalty_config()
        self.uses_penalty = self.penalty_config.use_error_ratio or self.penalty_config.use_answer_format

    @classmethod
    def from_run_config(cls, config: Any, *, trainer: str = "v1", adapter: str) -> RoCStage:
        """Parse ``algorithm.roc`` of a full trainer config, cross-check the run, log its warnings once."""
        roc = roc_section(config)
        if roc is None:
            raise RoCConfigError(
                f"{adapter} needs algorithm.roc settings: use the plugin config (--config-name grporoc) or "
                "+algorithm.roc.enable=true on verl's config"
            )
        settings = resolve_settings(roc, rollout_n=config_get(config, "actor_rollout_ref.rollout.n"), trainer=trainer)
        for warning in validate_run_config(config, settings, trainer=trainer):
            _warn_once(warning, "grporoc: %s", warning)
        manager = config_get(config, "reward.reward_manager.name")
        rc = rc_settings_from_config(config)
        return cls(settings, adapter=adapter, reward_manager=None if manager is None else str(manager), rc=rc)

    # ------------------------------------------------------------------------------------------ correctness

    def missing_correctness_error(self, missing: Sequence[str], total: int, seen: Sequence[str]) -> RoCConfigError:
        """The error an adapter raises when the reward did not report ``correct_key`` for some sessions."""
        key = self.settings.correct_key
        return RoCConfigError(
            f"GRPO-RoC classifies trajectories on reward_extra_info[{key!r}] (algorithm.roc.correct_key), but the "
            f"reward (reward.reward_manager.name={self.reward_manager or '?'}) did not report it for {len(missing)} of "
            f"{total} sessions, e.g. {missing[0]} (keys seen: {sorted(seen)}). Use reward.reward_manager.name=grporoc, "
            f"a compute_score returning a dict with that key, or algorithm.roc.correct_key={REWARD_METRIC} to classify "
            "on the scalar reward (with algorithm.roc.correct_threshold)"
        )

    @property
    def reads_reward(self) -> bool:
        """Correctness is the scalar reward (``rm_scores`` summed) rather than a reward_extra_info key."""
        return self.settings.correct_key == REWARD_METRIC

    # ------------------------------------------------------------------------------------------ selection

    def select(self, sessions: Sessions, *, step: int, world_size: int = 1) -> Selection:
        """Run the configured selection on one batch; when ``enable`` is false everything is kept."""
        s = self.settings
        m = len(sessions)
        values, correct, stats, penalty, engine_stats = self._inputs(sessions)
        available = float(stats.available.mean()) if m else 1.0
        if self.uses_penalty and available < 1.0:
            _warn_once(
                "penalty_unavailable",
                "grporoc: RoC penalties are unavailable for %.0f%% of the sessions (no grporoc_tool_agent counters and "
                "no p_err/p_format from the reward): they rank as penalty 0, so RoC keeps positives without regard to "
                "tool errors. Use actor_rollout_ref.rollout.agent.default_agent_loop=grporoc_tool_agent. Reported as "
                "roc/penalty_available < 1.",
                100 * (1 - available),
                level=logging.ERROR,
            )
        kept, metrics = select_rollouts(
            sessions.group_ids,
            correct,
            penalty,
            config=s.roc_config(world_size=world_size),
            seed=s.seed * 1_000_003 + int(step),  # from the seed and the step only: a resumed run selects the same
            scores=values if s.selection.get("rule") == "pods" else None,
            stats=engine_stats,
            strata=session_tokens(sessions.counters, s.stratify_by, m) if s.stratify_by else None,
        )
        if not s.enable:
            # Everything is trained on; what RoC would have done stays visible under roc/if_enabled/*.
            kept = np.arange(m, dtype=np.int64)
            metrics = {key.replace("roc/", "roc/if_enabled/", 1): value for key, value in metrics.items()}
            metrics.update({"roc/rows_before": float(m), "roc/rows_kept": float(m), "roc/rows_dropped": 0.0})
        metrics["roc/enabled"] = float(s.enable)
        metrics["roc/penalty_available"] = available
        metrics.update(self._accounting(sessions, kept.size))
        metrics.update(behaviour_metrics(correct, stats, sessions.response_len))
        metrics.update(rc_metrics(sessions.group_ids, values, correct, sessions.counters, kept, self.rc))
        if s.dump_dir:
            self._dump(step, world_size, sessions.group_ids, values, stats, kept)
        return Selection(kept, metrics)

    def _inputs(self, sessions: Sessions) -> tuple[np.ndarray, np.ndarray, TrajectoryStats, np.ndarray, dict]:
        """(values, correct, stats, penalty, the selection engine's stats) of a batch, all (m,)."""
        values = np.asarray(sessions.correct_values, dtype=np.float64).reshape(len(sessions))
        stats = trajectory_stats(sessions, self.penalty_config)
        penalty = combine_penalties(stats.p_err, stats.p_format, self.penalty_config)
        engine_stats = {"p_err": stats.p_err, "p_format": stats.p_format, "void_turns": np.nan_to_num(stats.void_turns)}
        if np.isfinite(stats.tool_calls).all():
            engine_stats.update(
                tool_calls=stats.tool_calls, tool_errors=stats.tool_errors, no_tool=stats.tool_calls <= 0
            )
        return values, self._positives(values), stats, penalty, engine_stats

    def _positives(self, values: np.ndarray) -> np.ndarray:
        """(m,) bool: correctness above ``correct_threshold``. NaN/inf (a broken verifier) reads as incorrect: a
        failure is never promoted to a positive."""
        return np.where(np.isfinite(values), values, -np.inf) > self.settings.correct_threshold

    def _dump(self, step, world_size, group_ids, values, stats: TrajectoryStats, kept: np.ndarray) -> None:
        """Append this step's selection inputs and result to ``dump_dir/selection.jsonl`` (spec edge case 29: the
        pre-selection data with the selection mask); :func:`replay_dump` re-runs a record."""
        import json
        from pathlib import Path

        record = {
            "step": int(step),
            "adapter": self.adapter,
            "world_size": int(world_size),
            "group_ids": [str(g) for g in group_ids],
            "correct_values": [None if not math.isfinite(v) else float(v) for v in values],
            "counters": {name: np.nan_to_num(getattr(stats, name), nan=-1.0).tolist() for name in _DUMPED_STATS},
            "kept": kept.tolist(),
        }
        path = Path(self.settings.dump_dir)
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "selection.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _accounting(self, sessions: Sessions, kept: int) -> dict[str, float]:
        """Every session the step launched is kept, dropped by selection, or missing (its rollout failed):
        ``roc/sessions_expected == roc/rows_kept + roc/rows_dropped + roc/sessions_missing``."""
        per_group = self.settings.oversample_n if self.settings.enable else self.settings.keep_n
        counts: dict[Hashable, int] = {}
        for g in sessions.group_ids:
            counts[g] = counts.get(g, 0) + 1
        expected = per_group * len(counts)
        missing = sum(max(0, per_group - c) for c in counts.values())
        return {"roc/sessions_expected": float(expected), "roc/sessions_missing": float(missing)}

    # ------------------------------------------------------------------------------------------ empty batch

    def on_empty_batch(self, *, step: int, refills_done: int, can_refill: bool) -> str:
        """What to do when every group was rejected: ``"refill"`` or ``"keep_one"``; raises for ``error``."""
        policy = self.settings.empty_batch
        if policy == "error":
            raise RuntimeError(
                f"GRPO-RoC rejected every group of step {step} (algorithm.roc.empty_batch=error); use "
                "empty_batch=refill/keep_one, or algorithm.filter_groups (DAPO) to refill mixed groups"
            )
        if policy == "refill" and can_refill and refills_done < self.settings.max_refills:
            return "refill"
        logger.warning(
            "grporoc: no group left after selection at step %d (every group rejected, or the kept ones dropped by "
            "world_size_align=drop_groups); training on one group instead (zero advantage when its outcomes are equal)",
            step,
        )
        return "keep_one"

    def keep_one(self, group_ids: Sequence[Hashable], world_size: int = 1) -> np.ndarray:
        """Fallback for a batch with no group left (``group_ids`` per session, rollout order): the first group's
        first ``keep_n`` sessions (zero GRPO advantage, like a skipped step: verl's loops cannot skip one), topped up
        with the next groups' sessions to a multiple of ``world_size`` (V0 has no padding rows). Every group of an
        all-rejected batch has equal outcomes, so every advantage is 0 whichever sessions are kept; when
        ``world_size_align=drop_groups`` dropped the kept groups instead, those sessions may come from a mixed group
        and are then trained with its (non-zero) advantages."""
        m = len(group_ids)
        if m < world_size:
            raise RuntimeError(
                f"GRPO-RoC rejected every group and the batch has {m} sessions, fewer than the data-parallel size "
                f"{world_size}: no zero-advantage batch can be formed"
            )
        first: dict[Hashable, int] = {}
        for i, g in enumerate(group_ids):
            first.setdefault(g, i)
        order = sorted(range(m), key=lambda i: (first[group_ids[i]], i))
        want = min(m - m % world_size, -(-self.settings.keep_n // world_size) * world_size)
        return np.sort(np.asarray(order[:want], dtype=np.int64))

    def keep_one_instead(self, selection: Selection, sessions: Sessions, world_size: int = 1) -> np.ndarray:
        """The ``keep_one`` fallback for an all-rejected ``selection``: returns the sessions to train on and updates
        the selection's metrics that depend on them (``roc/rows_kept``, ``roc/groups_kept``, ``roc/kept_pos`` ...,
        the ``*_after`` means, ``rc/kept_*``), so that they say what the update sees; flagged by
        ``roc/empty_batch_kept_one``. The selection log (``dump_dir``) stays the rule's own, empty, selection."""
        kept = self.keep_one(sessions.group_ids, world_size=world_size)
        values, correct, _, penalty, engine_stats = self._inputs(sessions)
        metrics = selection.metrics
        for key in TRAINED_OPTIONAL_METRIC_KEYS:
            metrics.pop(key, None)  # the rule's empty selection has none; a fallback without positives none either
        metrics.update(trained_metrics(sessions.group_ids, correct, penalty, kept, stats=engine_stats))
        metrics.update(rc_metrics(sessions.group_ids, values, correct, sessions.counters, kept, self.rc))
        metrics["roc/empty_batch_kept_one"] = 1.0
        return kept


#: TrajectoryStats fields a dump record carries (enough to recompute the penalty and the pre-filters).
_DUMPED_STATS = ("p_err", "p_format", "available", "tool_calls", "tool_errors", "void_turns")


def replay_dump(record: Mapping[str, Any], stage: RoCStage) -> np.ndarray:
    """Re-run one ``selection.jsonl`` record through ``stage``'s settings; returns the kept session indices.

    A selection depends only on its inputs, the seed and the step (no process state), so a record replays to the
    ``kept`` it logged in any process, e.g. one resumed from a checkpoint.
    """
    dumped = record["counters"]
    m = len(record["group_ids"])
    counters = [{"tool_calls": dumped["tool_calls"][i], "void_turns": dumped["void_turns"][i]} for i in range(m)]
    info = [{"p_err": dumped["p_err"][i], "p_format": dumped["p_format"][i]} for i in range(m)]
    values = np.array([np.nan if v is None else v for v in record["correct_values"]], dtype=np.float64)
    sessions = Sessions(record["group_ids"], values, counters, info)
    return stage.select(sessions, step=record["step"], world_size=record["world_size"]).kept
