"""algorithm.rc: parsing, and every start-up error names its key (values, tokenizer, chat template, run config)."""

from __future__ import annotations

import os

import pytest
from rc_helpers import HIGH, LOW, rc_tokenizer

import grporoc_plugin
from grporoc_plugin.rc.settings import (
    RCConfigError,
    RCSettings,
    check_tokenizer,
    resolve_rc_settings,
    validate_rc_run_config,
)

CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")


def test_defaults_are_disabled_and_paper_shaped():
    s = resolve_rc_settings(None)
    assert s == RCSettings() and not s.enable
    assert (s.high_token, s.low_token, s.eval_token, s.p_high, s.schedule) == (HIGH, LOW, "high", 0.5, "exact_split")
    assert s.eval_text == HIGH and s.token_of("low") == LOW and s.token_of("none") == ""


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"p_high": 1.5}, r"algorithm\.rc\.p_high must be a number in \[0, 1\], got 1\.5"),
        ({"p_high": -0.1}, r"algorithm\.rc\.p_high"),
        ({"p_high": "half"}, r"algorithm\.rc\.p_high"),
        ({"p_high": True}, r"algorithm\.rc\.p_high"),
        ({"schedule": "round_robin"}, r"algorithm\.rc\.schedule must be one of \['bernoulli', 'exact_split'\]"),
        ({"position": "assistant_prefix"}, r"algorithm\.rc\.position must be one of"),
        ({"vocab": "bpe"}, r"algorithm\.rc\.vocab"),
        ({"eval_token": "mixed"}, r"algorithm\.rc\.eval_token"),
        ({"seed": -1}, r"algorithm\.rc\.seed"),
        ({"enable": "yes"}, r"algorithm\.rc\.enable must be a boolean"),
        ({"high_token": ""}, r"algorithm\.rc\.high_token must be a non-empty string"),
        ({"low_token": HIGH}, r"algorithm\.rc\.high_token and algorithm\.rc\.low_token must differ"),
        ({"high_token": "<h>", "low_token": "<h>x"}, r"one contains the other"),
        ({"separator": 3}, r"algorithm\.rc\.separator must be a string"),
        ({"p_hihg": 0.3}, r"algorithm\.rc\.p_hihg is not an RC-GRPO setting"),
    ],
)
def test_bad_values_name_the_key(section, message):
    with pytest.raises(RCConfigError, match=message):
        resolve_rc_settings(section)


def test_tokenizer_check_passes_and_returns_the_ids():
    tok = rc_tokenizer()
    ids = check_tokenizer(RCSettings(enable=True), tok, embedding_rows=len(tok))
    assert ids == {HIGH: tok.convert_tokens_to_ids(HIGH), LOW: tok.convert_tokens_to_ids(LOW)}
    assert check_tokenizer(RCSettings(enable=True, position="user_prefix"), tok)


def test_token_missing_from_the_tokenizer_names_the_key():
    with pytest.raises(RCConfigError, match=r"algorithm\.rc\.high_token='<\|high_reward\|>' is not one token"):
        check_tokenizer(RCSettings(enable=True), rc_tokenizer(tokens=()))
    with pytest.raises(RCConfigError, match=r"algorithm\.rc\.low_token='<\|low_reward\|>' is not one token"):
        check_tokenizer(RCSettings(enable=True), rc_tokenizer(tokens=(HIGH,)))
    # plain-text markers need no vocabulary
    assert check_tokenizer(RCSettings(enable=True, vocab="text"), rc_tokenizer(tokens=())) == {}


def test_token_without_an_embedding_row_names_the_key():
    tok = rc_tokenizer()
    with pytest.raises(RCConfigError, match=r"algorithm\.rc\.high_token=.* has id \d+ but the model has only"):
        check_tokenizer(RCSettings(enable=True), tok, embedding_rows=len(tok) - 2)


# A template that rejects system messages (Gemma/Mistral style) and one that silently drops them.
REJECTS_SYSTEM = (
    "{%- for m in messages %}{%- if m.role == 'system' %}{{ raise_exception('System role not supported') }}"
    "{%- endif %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
DROPS_SYSTEM = (
    "{%- for m in messages %}{%- if m.role != 'system' %}{{- '<|im_start|>' + m.role + '\\n' + m.content + "
    "'<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


@pytest.mark.parametrize(("template", "message"), [(REJECTS_SYSTEM, "cannot render it"), (DROPS_SYSTEM, "drops")])
def test_position_the_chat_template_cannot_take_names_the_key(template, message):
    tok = rc_tokenizer()
    tok.chat_template = template
    with pytest.raises(RCConfigError, match=rf"algorithm\.rc\.position='system_suffix': the chat template {message}"):
        check_tokenizer(RCSettings(enable=True), tok)
    assert check_tokenizer(RCSettings(enable=True, position="user_prefix"), tok)  # the other position works


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="grporoc", overrides=["actor_rollout_ref.rollout.n=4", *overrides])


def test_run_config_needs_a_manager_that_draws_tokens():
    assert validate_rc_run_config(_compose("algorithm.rc.enable=True"), stratify_by=None, trainer="v1") == []
    verl_manager = "actor_rollout_ref.rollout.agent.agent_loop_manager_class=null"
    with pytest.raises(RCConfigError, match=r"actor_rollout_ref\.rollout\.agent\.agent_loop_manager_class=None"):
        validate_rc_run_config(_compose("algorithm.rc.enable=True", verl_manager), stratify_by=None, trainer="v1")
    standalone = verl_manager.replace("null", "grporoc_plugin.rc.manager.RCAgentLoopManagerTQ")
    assert (
        validate_rc_run_config(_compose("algorithm.rc.enable=True", standalone), stratify_by=None, trainer="v1") == []
    )
    # V0: grporoc_plugin.v0.main picks the manager itself
    assert (
        validate_rc_run_config(_compose("algorithm.rc.enable=True", verl_manager), stratify_by=None, trainer="v0") == []
    )
    warnings = validate_rc_run_config(_compose(), stratify_by="rc_token", trainer="v1")
    assert warnings and "algorithm.roc.stratify_by=rc_token has no effect" in warnings[0]


def test_stratify_by_is_validated_by_the_roc_settings():
    from grporoc_plugin.config import RoCConfigError, resolve_settings

    assert resolve_settings({"stratify_by": "rc_token"}, rollout_n=4).stratify_by == "rc_token"
    assert resolve_settings({}, rollout_n=4).stratify_by is None
    with pytest.raises(RoCConfigError, match=r"algorithm\.roc\.stratify_by must be null or one of \['rc_token'\]"):
        resolve_settings({"stratify_by": "token"}, rollout_n=4)
    with pytest.raises(RoCConfigError, match=r"algorithm\.roc\.stratify_by needs algorithm\.roc\.rule=roc"):
        resolve_settings({"stratify_by": "rc_token", "rule": "pods"}, rollout_n=4)


def test_startup_check_stops_the_driver_naming_the_key(model_dir):
    """The Hydra callback of grporoc.yaml: bad algorithm.rc values and a tokenizer without the tokens stop the run."""
    from grporoc_plugin.config import StartupCheck

    base = [
        f"actor_rollout_ref.model.path={model_dir}",
        "algorithm.rc.enable=True",
        "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "trainer.n_gpus_per_node=1",
    ]
    StartupCheck().on_job_start(_compose(*base))  # the tokenizer has the tokens: passes
    with pytest.raises(SystemExit, match=r"algorithm\.rc\.p_high must be a number in \[0, 1\], got 2"):
        StartupCheck().on_job_start(_compose(*base, "algorithm.rc.p_high=2"))
    with pytest.raises(SystemExit, match=r"algorithm\.rc\.high_token='<\|hi\|>' is not one token"):
        StartupCheck().on_job_start(_compose(*base, "algorithm.rc.high_token='<|hi|>'"))
