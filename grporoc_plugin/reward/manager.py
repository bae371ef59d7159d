"""``@register("grporoc")``: the GRPO-RoC reward worker for verl's reward loop (``reward.reward_manager.name=grporoc``).

Per trajectory it verifies the final answer (binary ``acc``, never shaped), applies the truncation rule to get the
``score`` actually used as reward, and reports the per-trajectory counters the RoC sampler ranks positives with
(``p_err``/``p_format``), under the same keys for every sample (docs/CONTRACTS.md).

Options live in ``reward.reward_kwargs`` (undeclared in verl's reward.yaml, so pass them as ``+reward.reward_kwargs.*``;
verl never converts ``reward`` to a dataclass, and verl's own ``dapo`` manager reads the same block). Unknown keys
are rejected. The penalty settings come from ``algorithm.roc`` (:mod:`grporoc_plugin.config`), the same source as
the sampler's.

Where the inputs come from (streaming reward, ``AgentLoopWorker._compute_score``): one ``DataProto`` per session
with ``prompts``/``responses``/``attention_mask`` (unpadded), ``non_tensor_batch["tool_extra_fields"]`` (the agent
loop's ``extra_fields``: tool counters, ``assistant_turns``, ``truncated``, ``model_spans``), ``__num_turns__`` and
``response_len``. There is no ``response_mask`` there: the model's own tokens come from ``model_spans`` (written by
``grporoc_tool_agent``), from ``response_mask`` where a batch carries it (colocated path), and otherwise from text
rules that tool outputs can partly forge (:mod:`grporoc_plugin.reward.text` says exactly what they guard against).

Faults never escape ``run_single``: a sample that raises scores ``wrong_reward`` with ``verify_error=1``, a
verification past ``verify_timeout_s`` scores wrong with ``verify_timeout=1`` (both are infrastructure counters,
never tool errors), and :meth:`GrpoRocRewardManager.close` kills every verifier subprocess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from grporoc_plugin.config import RoCConfigError, config_get, resolve_settings, roc_section, to_plain
from grporoc_plugin.penalties import PenaltyConfig, count_answer_tags
from grporoc_plugin.reward.overlong import dapo_overlong_reward, validate_overlong
from grporoc_plugin.reward.text import ResponseText, spans_from_mask, split_response, validate_spans
from grporoc_plugin.reward.verify import ANSWER_EXTRACTIONS, VerifierPool, VerifyOutcome, extract_answer

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

__all__ = [
    "GrpoRocRewardManager",
    "GrpoRocRewardSettings",
    "REWARD_EXTRA_KEYS",
    "TRUNCATED_REWARD_MODES",
    "trajectory_penalties",
]

TRUNCATED_REWARD_MODES: tuple[str, ...] = ("zero", "constant", "dapo_soft", "verify")
COUNTER_KEYS: tuple[str, ...] = (
    "tool_calls",
    "tool_errors_parse",
    "tool_errors_exec",
    "tool_errors_timeout",
    "tool_errors_infra",
)
#: reward_extra_info keys, identical for every sample: the contract keys, then ``verify_timeout``/``verify_error``.
REWARD_EXTRA_KEYS: tuple[str, ...] = (
    "acc",
    "score",
    "truncated",
    *COUNTER_KEYS,
    "answer_tags",
    "answer_tags_balanced",
    "assistant_turns",
    "p_err",
    "p_format",
    "verify_timeout",
    "verify_error",
)
_OPTIONS_PATH = "reward.reward_kwargs"


@dataclasses.dataclass(frozen=True)
class GrpoRocRewardSettings:
    """``reward.reward_kwargs`` of the grporoc reward manager."""

    #: Where the final answer is read, always from the model's own text except for the last mode:
    #: "boxed_in_last_answer_tag" (paper: \boxed{} inside the last <answer>...</answer>),
    #: "last_boxed_anywhere" (the release's rule: the last \boxed{} anywhere in the model's text, a \boxed{} in the
    #: model's own tool-call code included) or
    #: "last_boxed_full_text" (the release exactly: the last \boxed{} in the whole decoded response, tool outputs
    #: included, so a tool output that prints \boxed{...} supplies the answer; for parity checks only).
    answer_extraction: str = "boxed_in_last_answer_tag"
    #: Hard limit in seconds on one verification (a stuck sympy call is killed; the sample scores as wrong).
    verify_timeout_s: float = 5.0
    #: Verifier subprocesses per reward-loop worker.
    verify_workers: int = 2
    #: Address-space limit of each verifier subprocess in MiB (0 = none); runaway sympy gets a MemoryError.
    verify_memory_mb: int = 2048
    #: Extracted answers longer than this are wrong without being parsed.
    max_answer_chars: int = 1000
    #: Decide plain numbers and normalised exact matches without math_verify (same verdicts) and cache verdicts.
    verify_fast_path: bool = True
    #: Verdicts kept in the (answer, ground truth) cache; 0 disables it.
    verify_cache_size: int = 65536
    #: Reward of a trajectory that hit the response budget: "zero" (paper: 0, acc 0), "constant" (acc 0, score
    #: truncated_reward_value), "dapo_soft" (acc 0, DAPO soft overlong ramp added to every sample's reward) or
    #: "verify" (release: verified like any other; an earlier correct \boxed{} scores).
    truncated_reward: str = "zero"
    #: Score of a truncated trajectory with truncated_reward="constant"; <= min(0, wrong_reward).
    truncated_reward_value: float = -1.0
    #: DAPO L_cache: the ramp runs from max_resp_len - overlong_buffer_len (0) to max_resp_len (-factor).
    overlong_buffer_len: int | None = None
    #: DAPO penalty factor: the ramp's value at max_resp_len and beyond.
    overlong_penalty_factor: float = 1.0
    #: Response budget L_max in tokens; default actor_rollout_ref.rollout.response_length.
    max_resp_len: int | None = None
    #: Score of a verified-correct answer.
    correct_reward: float = 1.0
    #: Score of a wrong or missing answer.
    wrong_reward: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> GrpoRocRewardSettings:
        """Read and validate ``reward.reward_kwargs`` of a full trainer config; errors name the key."""
        raw = to_plain(config_get(config, _OPTIONS_PATH)) or {}
        if not isinstance(raw, Mapping):
            raise RoCConfigError(f"{_OPTIONS_PATH} must be a mapping, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RoCConfigError(
                f"{_OPTIONS_PATH}.{unknown[0]} is not an option of reward manager 'grporoc'; known: {sorted(known)}"
            )
        values = dict(raw)
        if values.get("max_resp_len") is None:
            values["max_resp_len"] = config_get(config, "actor_rollout_ref.rollout.response_length")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        p = f"{_OPTIONS_PATH}."
        if self.answer_extraction not in ANSWER_EXTRACTIONS:
            raise RoCConfigError(
                f"{p}answer_extraction must be one of {ANSWER_EXTRACTIONS}, got {self.answer_extraction!r}"
            )
        if self.truncated_reward not in TRUNCATED_REWARD_MODES:
            raise RoCConfigError(
                f"{p}truncated_reward must be one of {TRUNCATED_REWARD_MODES}, got {self.truncated_reward!r}"
            )
        for name in ("verify_timeout_s", "truncated_reward_value", "overlong_penalty_factor", "correct_reward"):
            _require_number(p + name, getattr(self, name))
        _require_number(p + "wrong_reward", self.wrong_reward)
        if not self.verify_timeout_s > 0:
            raise RoCConfigError(f"{p}verify_timeout_s must be > 0, got {self.verify_timeout_s!r}")
        _require_int(p + "verify_workers", self.verify_workers, minimum=1)
        _require_int(p + "verify_memory_mb", self.verify_memory_mb, minimum=0)
        _require_int(p + "max_answer_chars", self.max_answer_chars, minimum=1)
        _require_int(p + "verify_cache_size", self.verify_cache_size, minimum=0)
        if not isinstance(self.verify_fast_path, bool):
            raise RoCConfigError(f"{p}verify_fast_path must be a bool, got {self.verify_fast_path!r}")
        if self.max_resp_len is None:
            raise RoCConfigError(f"{p}max_resp_len is unset and actor_rollout_ref.rollout.response_length is missing")
        _require_int(p + "max_resp_len", self.max_resp_len, minimum=1)
        if not self.correct_reward > self.wrong_reward:
            raise RoCConfigError(
                f"{p}correct_reward={self.correct_reward} must exceed {p}wrong_reward={self.wrong_reward}"
            )
        mode = self.truncated_reward
        if mode == "zero" and self.wrong_reward < 0:
            raise RoCConfigError(
                f"{p}truncated_reward='zero' scores truncated rollouts 0.0, above {p}wrong_reward={self.wrong_reward}: "
                f"that rewards running out of budget; use truncated_reward='constant' with truncated_reward_value "
                f"<= {self.wrong_reward}"
            )
        if mode == "constant" and self.truncated_reward_value > min(0.0, self.wrong_reward):
            raise RoCConfigError(
                f"{p}truncated_reward_value={self.truncated_reward_value} must be <= min(0, wrong_reward="
                f"{self.wrong_reward}): a truncated rollout is a failure"
            )
        if mode == "dapo_soft":
            if self.overlong_buffer_len is None:
                raise RoCConfigError(
                    f"{p}overlong_buffer_len (DAPO L_cache) is required with truncated_reward='dapo_soft'"
                )
            try:
                validate_overlong(self.max_resp_len, self.overlong_buffer_len, self.overlong_penalty_factor, prefix=p)
            except ValueError as exc:
                raise RoCConfigError(str(exc)) from exc
            if self.wrong_reward > 0:
                raise RoCConfigError(
                    f"{p}wrong_reward={self.wrong_reward} must be <= 0 with truncated_reward='dapo_soft' (a truncated "
                    "rollout scores wrong_reward + R_len, which must not be positive)"
                )
        elif self.overlong_buffer_len is not None:
            raise RoCConfigError(f"{p}overlong_buffer_len is only used with truncated_reward='dapo_soft', not {mode!r}")


@register("grporoc")
class GrpoRocRewardManager(RewardManagerBase):
    """Binary answer verification + truncation rule + RoC penalty counters, one trajectory per ``run_single``."""

    def __init__(
        self,
        config,
        tokenizer,
        compute_score=None,
        reward_router_address=None,
        reward_model_tokenizer=None,
    ):
        super().__init__(config, tokenizer, compute_score)
        self.settings = GrpoRocRewardSettings.from_config(config)
        self.penalty_config = _penalty_config(config)
        if config_get(config, "reward.custom_reward_function.path"):
            raise RoCConfigError(
                "reward.custom_reward_function.path is set, but reward manager 'grporoc' verifies answers itself "
                "(math_verify) and would ignore it; unset it or use another reward manager"
            )
        if bool(config_get(config, "reward.reward_model.enable", False)):
            raise RoCConfigError(
                "reward.reward_model.enable=True: verl's RewardLoopWorker then scores with the reward model and never "
                "calls the 'grporoc' manager, so acc/p_err/p_format would be missing; disable the reward model"
            )
        self.reward_router_address = reward_router_address
        self.reward_model_tokenizer = reward_model_tokenizer
        s = self.settings
        self.verifier = VerifierPool(
            num_workers=s.verify_workers,
            timeout_s=s.verify_timeout_s,
            max_answer_chars=s.max_answer_chars,
            memory_mb=s.verify_memory_mb,
            fast_path=s.verify_fast_path,
            cache_size=s.verify_cache_size,
        )

    def close(self) -> None:
        """Stop the verifier subprocesses (idempotent)."""
        self.verifier.close()

    async def run_single(self, data: DataProto) -> dict:
        """Score the last output of a session; never raises (a failure scores as a wrong answer, counted)."""
        try:
            return await self._score(data)
        except Exception:  # noqa: BLE001 - one broken sample must not take down the reward loop
            logger.exception("grporoc reward: scoring failed; the sample scores as wrong (verify_error=1)")
            return self._failed(data)

    def _failed(self, data: DataProto) -> dict:
        """A sample that could not be scored: wrong, ``verify_error=1``. It is an infrastructure fault, not the
        model's: the tool counters and ``p_err`` still come from the trajectory where they can be read."""
        wrong = float(self.settings.wrong_reward)
        info: dict[str, float | int] = {key: 0 for key in REWARD_EXTRA_KEYS}
        info.update(acc=0.0, score=wrong, verify_error=1)
        try:
            nt = {key: values[len(data) - 1] for key, values in data.non_tensor_batch.items()}
            tef = nt.get("tool_extra_fields")
            extra = tef if isinstance(tef, Mapping) else {}
            info.update({key: _count(_lookup(extra, nt, key)) for key in COUNTER_KEYS})
        except Exception:  # noqa: BLE001 - nothing readable: zero counters
            pass
        info["p_err"], info["p_format"] = trajectory_penalties(info, 0, False, 0, False, self.penalty_config)
        return {"reward_score": wrong, "reward_extra_info": info}

    async def _score(self, data: DataProto) -> dict:
        s = self.settings
        # Multi-output sessions: the last output carries the whole trajectory's reward. Its row is read field by field:
        # ``data[i]`` would copy every tensor of the row (half of this method's time).
        last = len(data) - 1
        batch = data.batch
        nt = {key: values[last] for key, values in data.non_tensor_batch.items()}
        responses = batch["responses"][last]
        prompt_width = batch["prompts"].shape[-1]
        if nt.get("response_len") is not None:
            resp_len = int(nt["response_len"])
        else:
            resp_len = int(batch["attention_mask"][last, prompt_width:].sum())
        resp_len = max(0, min(resp_len, responses.shape[-1]))
        ids = responses[:resp_len].tolist()
        tef = nt.get("tool_extra_fields")
        extra = tef if isinstance(tef, Mapping) else {}

        mask = batch["response_mask"][last] if "response_mask" in batch.keys() else None
        spans, source = _model_spans(mask, extra, resp_len)
        full_text_mode = s.answer_extraction == "last_boxed_full_text"
        text: ResponseText = await asyncio.get_running_loop().run_in_executor(
            None, lambda: split_response(self._decode, ids, spans, source=source, need_full_text=full_text_mode)
        )

        flag = _lookup(extra, nt, "truncated")
        truncated = bool(flag) if flag is not None else resp_len >= s.max_resp_len
        counters = {key: _count(_lookup(extra, nt, key)) for key in COUNTER_KEYS}
        turns = _lookup(extra, nt, "assistant_turns")
        if turns is not None:
            assistant_turns = _count(turns)
        else:  # verl's tool_agent: num_turns = user_turns + assistant_turns + 1, and assistant turns lead by <= 1
            num_turns = _count(nt.get("__num_turns__"))
            assistant_turns = max(1, num_turns // 2) if resp_len > 0 else 0
        answer_tags, balanced = count_answer_tags(text.model_text)

        verify_needed = not truncated or s.truncated_reward == "verify"
        if verify_needed:
            answer_text = text.full_text if full_text_mode else text.answer_text
            answer = extract_answer(answer_text, s.answer_extraction, s.max_answer_chars)
            outcome = await self.verifier.averify(answer, _ground_truth(nt))
        else:  # a failure by definition; verifying a truncated text would only cost time
            outcome = VerifyOutcome(False, "no_answer")
        if outcome.status in ("timeout", "error"):
            logger.info("grporoc reward: verification %s (%s)", outcome.status, outcome.detail)

        acc = 1.0 if outcome.correct else 0.0
        score = s.correct_reward if outcome.correct else s.wrong_reward
        if truncated and s.truncated_reward == "zero":
            score = 0.0
        elif truncated and s.truncated_reward == "constant":
            score = s.truncated_reward_value
        elif s.truncated_reward == "dapo_soft":
            score += dapo_overlong_reward(resp_len, s.max_resp_len, s.overlong_buffer_len, s.overlong_penalty_factor)

        p_err, p_format = trajectory_penalties(
            counters, answer_tags, balanced, assistant_turns, truncated, self.penalty_config
        )
        info = {
            "acc": acc,
            "score": float(score),
            "truncated": int(truncated),
            **counters,
            "answer_tags": int(answer_tags),
            "answer_tags_balanced": int(balanced),
            "assistant_turns": int(assistant_turns),
            "p_err": p_err,
            "p_format": p_format,
            "verify_timeout": int(outcome.timed_out),
            "verify_error": int(outcome.errored),
        }
        return {"reward_score": float(score), "reward_extra_info": info}

    def _decode(self, ids: list[int]) -> str:
        """Special tokens skipped, as verl's managers decode."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------------- helpers
def _penalty_config(config: Any) -> PenaltyConfig:
    """PenaltyConfig from ``algorithm.roc`` exactly as the sampler resolves it (defaults when RoC is not configured)."""
    section = roc_section(config)
    if section is None:
        return PenaltyConfig()
    use_v1 = bool(config_get(config, "trainer.use_v1", True))
    rollout_n = config_get(config, "actor_rollout_ref.rollout.n", 1)
    return resolve_settings(section, rollout_n=rollout_n, trainer="v1" if use_v1 else "v0").penalty_config()


def trajectory_penalties(
    counters: Mapping[str, int],
    answer_tags: int,
    balanced: bool,
    assistant_turns: int,
    truncated: bool,
    config: PenaltyConfig,
) -> tuple[float, float]:
    """(p_err, p_format) of one trajectory: :func:`grporoc_plugin.penalties.structured_penalties` for a batch of one
    (same floats, pinned by a test), without its ~0.2 ms of numpy set-up per call. Counters are ints >= 0."""
    calls = counters["tool_calls"]
    errors = float(sum(counters[f"tool_errors_{kind}"] for kind in config.error_kinds))
    p_err = min(max(errors / calls, 0.0), 1.0) if calls > 0 else config.no_tool_p_err
    turns = float(max(assistant_turns, 0))
    if config.turn_count == "compat":
        turns = max(turns - 1.0 - float(truncated), 0.0)
    ok = answer_tags >= 1 and balanced and turns > 0
    p_format = min((answer_tags - 1.0) / turns, 1.0) if ok else 1.0
    return float(p_err), float(p_format)


def _model_spans(mask, extra: Mapping, resp_len: int) -> tuple[list[tuple[int, int]] | None, str]:
    """The model-generated token ranges: from the batch's response_mask row (colocated path), else the agent loop's
    ``model_spans`` (streaming path), else None (text fallback, see :mod:`grporoc_plugin.reward.text`)."""
    if mask is not None:
        mask = mask[:resp_len].tolist()
        return spans_from_mask(mask + [1] * (resp_len - len(mask))), "response_mask"
    spans = extra.get("model_spans")
    if spans is not None:
        return validate_spans(spans, resp_len), "model_spans"
    return None, "delimiters"


def _lookup(extra: Mapping, non_tensor: Mapping, key: str) -> Any:
    """A per-trajectory counter: agent-loop extra fields (streaming) or a flattened non-tensor key (batch path)."""
    value = extra.get(key)
    return non_tensor.get(key) if value is None else value


def _count(value: Any) -> int:
    """Non-negative int from whatever the rollout stored (None, numpy scalars, bools, junk -> 0)."""
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return 0
    return int(number) if math.isfinite(number) and number > 0 else 0


def _ground_truth(non_tensor: Mapping) -> Any:
    reward_model = non_tensor.get("reward_model")
    if isinstance(reward_model, Mapping):
        return reward_model.get("ground_truth")
    return None


def _require_number(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RoCConfigError(f"{key} must be a finite number, got {value!r}")


def _require_int(key: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise RoCConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
