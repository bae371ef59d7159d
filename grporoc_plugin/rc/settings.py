"""Typed RC-GRPO settings: ``algorithm.rc`` parsed and validated once, shared by the manager, workers and adapter.

Same conventions as :mod:`grporoc_plugin.config`: the dataclass :class:`RCSettings` owns every default and its
one-line doc, the ``algorithm.rc`` block of ``grporoc.yaml`` is generated from it (:func:`yaml_rc_block`; a test keeps
the file equal), a key that names no field is rejected, and every error names its key (``algorithm.rc.p_high ...``).

Two levels of checks, both at start-up:

* :func:`resolve_rc_settings`: the values themselves (``p_high`` in [0, 1], known schedule and position, ...);
* :func:`check_tokenizer`: the values against the run's tokenizer and chat template (a ``special`` token that is not
  one token id of the tokenizer or has no embedding row, a position the chat template cannot take). It needs
  ``transformers`` and runs in the driver (:class:`grporoc_plugin.config.StartupCheck`) and in the agent-loop
  manager (every run, also with ``+`` overrides on verl's own config).

Import-light: no verl, torch or transformers at module level.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grporoc_plugin.config import RoCConfigError, config_get, field_docs, to_plain

__all__ = [
    "EVAL_TOKENS",
    "RC_TOKEN_FIELD",
    "RC_TOKEN_IN_PROMPT_FIELD",
    "RCConfigError",
    "RCSettings",
    "VOCAB_MODES",
    "check_tokenizer",
    "rc_section",
    "rc_settings_from_config",
    "resolve_rc_settings",
    "yaml_rc_block",
]

#: Per-trajectory field (agent-loop ``extra_fields``, V0 non-tensor column, V1 TransferQueue field): the token text
#: the rollout was conditioned on, "" when none.
RC_TOKEN_FIELD = "rc_token"
#: Per-trajectory field: the conditioning token's id was found in ``prompt_ids`` (special vocab; True in text mode
#: when the marker's text is in the decoded prompt).
RC_TOKEN_IN_PROMPT_FIELD = "rc_token_in_prompt"
#: ``vocab`` modes: one tokenizer id per token, or plain text.
VOCAB_MODES = ("special", "text")
#: ``eval_token`` choices.
EVAL_TOKENS = ("high", "low", "none")


class RCConfigError(RoCConfigError):
    """Invalid RC-GRPO configuration; the message names the config key (a RoCConfigError: same start-up handling)."""


@dataclass(frozen=True)
class RCSettings:
    """``algorithm.rc``: reward-conditioned rollouts (RC-GRPO, arXiv 2602.03025)."""

    enable: bool = False
    """Condition every rollout on a reward token drawn per replica (RC-GRPO); false = prompts unchanged."""
    high_token: str = "<|high_reward|>"
    """Token of the high-reward goal (the RCTP label of successful trajectories)."""
    low_token: str = "<|low_reward|>"
    """Token of the low-reward goal (the RCTP label of failed trajectories)."""
    vocab: str = "special"
    """special: each token must be one tokenizer id (python -m grporoc_plugin.rc.vocab adds them); text: plain text."""
    position: str = "system_suffix"
    """Where the token goes: system_suffix (end of the system message, added if absent) or user_prefix."""
    separator: str = " "
    """Text between the token and the message text it is attached to."""
    schedule: str = "exact_split"
    """Group draw: exact_split (round(p_high * n) high tokens, shuffled) or bernoulli (each high w.p. p_high)."""
    p_high: float = 0.5
    """Share (exact_split) or probability (bernoulli) of the high token within each training group, in [0, 1]."""
    seed: int = 0
    """Base seed of the token draws, mixed with the global step and the prompt's dataset index."""
    eval_token: str = "high"
    """Token of validation rollouts: high (the presumed inference-time choice), low, or none (no token)."""

    def token_of(self, label: str) -> str:
        """The token text of ``label`` ("high" / "low"); "" for "none"."""
        return {"high": self.high_token, "low": self.low_token, "none": ""}[label]

    @property
    def eval_text(self) -> str:
        """The token text of validation rollouts ("" = none)."""
        return self.token_of(self.eval_token)


def rc_section(full_config: Any) -> dict[str, Any] | None:
    """The raw ``algorithm.rc`` mapping of a full trainer config, or None when absent."""
    section = config_get(full_config, "algorithm.rc")
    return None if section is None else dict(to_plain(section))


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise RCConfigError(f"algorithm.rc.{key} must be one of {list(choices)}, got {value!r}")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RCConfigError(f"algorithm.rc.{key} must be a non-empty string, got {value!r}")
    return value


def resolve_rc_settings(section: Mapping[str, Any] | None) -> RCSettings:
    """Parse and validate ``algorithm.rc`` (None or empty = the defaults, i.e. disabled)."""
    from grporoc_plugin.rc.inject import POSITION_REGISTRY
    from grporoc_plugin.rc.schedule import SCHEDULE_REGISTRY

    raw = dict(to_plain(section) or {})
    known = [f.name for f in dataclasses.fields(RCSettings)]
    for key in raw:
        if key not in known:
            raise RCConfigError(f"algorithm.rc.{key} is not an RC-GRPO setting; known keys: {sorted(known)}")
    values = {**{f.name: f.default for f in dataclasses.fields(RCSettings)}, **raw}
    if not isinstance(values["enable"], bool):
        raise RCConfigError(f"algorithm.rc.enable must be a boolean, got {values['enable']!r}")
    high, low = _text("high_token", values["high_token"]), _text("low_token", values["low_token"])
    if high == low:
        raise RCConfigError(f"algorithm.rc.high_token and algorithm.rc.low_token must differ, both are {high!r}")
    if high in low or low in high:
        raise RCConfigError(
            f"algorithm.rc.high_token={high!r} and algorithm.rc.low_token={low!r}: one contains the other, so a "
            "prompt's token could not be told apart"
        )
    separator = values["separator"]
    if not isinstance(separator, str):
        raise RCConfigError(f"algorithm.rc.separator must be a string, got {separator!r}")
    p_high = values["p_high"]
    if isinstance(p_high, bool) or not isinstance(p_high, int | float) or not (0.0 <= p_high <= 1.0):
        raise RCConfigError(f"algorithm.rc.p_high must be a number in [0, 1], got {p_high!r}")
    seed = values["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RCConfigError(f"algorithm.rc.seed must be an integer >= 0, got {seed!r}")
    return RCSettings(
        enable=values["enable"],
        high_token=high,
        low_token=low,
        vocab=_choice("vocab", values["vocab"], VOCAB_MODES),
        position=_choice("position", values["position"], tuple(sorted(POSITION_REGISTRY))),
        separator=separator,
        schedule=_choice("schedule", values["schedule"], tuple(sorted(SCHEDULE_REGISTRY))),
        p_high=float(p_high),
        seed=seed,
        eval_token=_choice("eval_token", values["eval_token"], EVAL_TOKENS),
    )


def rc_settings_from_config(full_config: Any) -> RCSettings:
    """``algorithm.rc`` of a full trainer config, validated (absent = disabled)."""
    return resolve_rc_settings(rc_section(full_config))


#: Agent-loop managers that draw and place the tokens (V1), by fully qualified name.
RC_MANAGERS_V1 = ("grporoc_plugin.v1.manager.RoCAgentLoopManagerTQ", "grporoc_plugin.rc.manager.RCAgentLoopManagerTQ")
#: The V0 manager ``grporoc_plugin.v0.main`` selects when RC is enabled.
RC_MANAGER_V0 = "grporoc_plugin.rc.manager.RCAgentLoopManager"


def _is_rc_manager(fqn: str) -> bool:
    if fqn in RC_MANAGERS_V1:
        return True
    import importlib

    module, _, name = fqn.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return False
    from grporoc_plugin.rc.manager import RCManagerMixin

    return isinstance(cls, type) and issubclass(cls, RCManagerMixin)


def validate_rc_run_config(full_config: Any, *, stratify_by: str | None, trainer: str) -> list[str]:
    """Cross-check ``algorithm.rc`` against the run (raises naming the key; returns warnings). No tokenizer here."""
    rc = rc_settings_from_config(full_config)
    warnings = []
    if stratify_by is not None and not rc.enable:
        warnings.append(f"algorithm.roc.stratify_by={stratify_by} has no effect without algorithm.rc.enable=True")
    if not rc.enable:
        return warnings
    manager = config_get(full_config, "actor_rollout_ref.rollout.agent.agent_loop_manager_class")
    if trainer == "v1" and not (manager and _is_rc_manager(str(manager))):
        raise RCConfigError(
            f"algorithm.rc.enable=True but actor_rollout_ref.rollout.agent.agent_loop_manager_class={manager!r} draws "
            f"no reward tokens: use one of {list(RC_MANAGERS_V1)}"
        )
    if rc.eval_token == "none":
        warnings.append("algorithm.rc.eval_token=none: validation prompts carry no reward token (never seen in RCTP)")
    return warnings


# ------------------------------------------------------------------------------------- tokenizer / chat template


def check_tokenizer(settings: RCSettings, tokenizer: Any, *, embedding_rows: int | None = None) -> dict[str, int]:
    """Raise :class:`RCConfigError` naming the key if the tokenizer or its chat template cannot carry the tokens.

    ``special`` vocab: each token must encode to exactly one id, below ``embedding_rows`` (the model's embedding
    size) when given. Every vocab: the chat template must render the token at ``position`` (a template that rejects
    a system message, or drops it, cannot take ``system_suffix``). Returns the token ids (special vocab) by text.
    """
    from grporoc_plugin.rc.inject import inject_token

    ids: dict[str, int] = {}
    if settings.vocab == "special":
        for key in ("high_token", "low_token"):
            text = getattr(settings, key)
            encoded = tokenizer.encode(text, add_special_tokens=False)
            unk = getattr(tokenizer, "unk_token_id", None)
            if len(encoded) != 1 or (unk is not None and encoded[0] == unk):
                raise RCConfigError(
                    f"algorithm.rc.{key}={text!r} is not one token of the tokenizer (it encodes to {encoded}): add "
                    "the reward tokens with `python -m grporoc_plugin.rc.vocab MODEL_DIR OUT_DIR` (saves a tokenizer "
                    "and a model verl loads unchanged) or set algorithm.rc.vocab=text for plain-text markers"
                )
            if embedding_rows is not None and encoded[0] >= embedding_rows:
                raise RCConfigError(
                    f"algorithm.rc.{key}={text!r} has id {encoded[0]} but the model has only {embedding_rows} "
                    "embedding rows: resize it with `python -m grporoc_plugin.rc.vocab MODEL_DIR OUT_DIR`"
                )
            ids[text] = encoded[0]
    probe = [{"role": "user", "content": "probe question"}]
    for label in ("high", "low"):
        text = settings.token_of(label)
        messages = inject_token(probe, text, settings.position, settings.separator)
        try:
            rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # noqa: BLE001 - any template failure means the position is unusable
            raise RCConfigError(
                f"algorithm.rc.position={settings.position!r}: the chat template cannot render it "
                f"({type(exc).__name__}: {exc}); use the other position"
            ) from exc
        if not isinstance(rendered, str) or rendered.count(text) != 1:
            raise RCConfigError(
                f"algorithm.rc.position={settings.position!r}: the chat template drops the token {text!r} placed "
                "there (e.g. it ignores system messages); use the other position"
            )
    return ids


def check_run_tokenizer(full_config: Any, settings: RCSettings) -> dict[str, int]:
    """:func:`check_tokenizer` with the run's tokenizer (``actor_rollout_ref.model``: ``tokenizer_path`` or ``path``,
    ``custom_chat_template``) and the model's embedding size (its ``config.json``); no-op when RC is disabled."""
    if not settings.enable:
        return {}
    from transformers import AutoConfig, AutoTokenizer

    model = "actor_rollout_ref.model"
    path = config_get(full_config, f"{model}.path")
    if path is None:
        raise RCConfigError(f"algorithm.rc.enable=True needs {model}.path to check the reward tokens")
    trust = bool(config_get(full_config, f"{model}.trust_remote_code", False))
    tokenizer_path = config_get(full_config, f"{model}.tokenizer_path") or path
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), trust_remote_code=trust)
    template = config_get(full_config, f"{model}.custom_chat_template")
    if template is not None:
        tokenizer.chat_template = template
    hf_config = AutoConfig.from_pretrained(
        str(config_get(full_config, f"{model}.hf_config_path") or path), trust_remote_code=trust
    )
    text_config = getattr(hf_config, "get_text_config", lambda: hf_config)()
    return check_tokenizer(settings, tokenizer, embedding_rows=getattr(text_config, "vocab_size", None))


# --------------------------------------------------------------------------------------------- one config source


def _yaml_value(value: Any) -> str:
    from grporoc_plugin.config import _yaml_value as roc_yaml_value

    if isinstance(value, str) and (not value.strip() or not value.replace("_", "").isalnum()):
        return json.dumps(value)  # "<|high_reward|>", " ": a JSON string is a valid YAML double-quoted scalar
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return roc_yaml_value(value)


def yaml_rc_block(indent: str = "    ") -> str:
    """The ``algorithm.rc`` block of grporoc.yaml, generated from :class:`RCSettings`: ``# doc`` then ``key: value``."""
    docs = field_docs(RCSettings)
    lines: list[str] = []
    for f in dataclasses.fields(RCSettings):
        if f.name not in docs:
            raise RuntimeError(f"RCSettings.{f.name} has no one-line docstring")
        lines += ["", f"{indent}# {docs[f.name]}", f"{indent}{f.name}: {_yaml_value(f.default)}"]
    return "\n".join(lines[1:]) + "\n"
