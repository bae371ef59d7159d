"""Fixtures of the RC-GRPO tests (helpers live in rc_helpers.py, importable from the test modules)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rc_helpers import rc_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return rc_tokenizer()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer) -> str:
    """Tokenizer + a tiny Qwen2 config.json (no weights: the agent loop needs the tokenizer and model_type only)."""
    from transformers import Qwen2Config

    path = tmp_path_factory.mktemp("tiny_qwen2_rc")
    tokenizer.save_pretrained(path)
    Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        architectures=["Qwen2ForCausalLM"],
    ).save_pretrained(path)
    return str(path)
