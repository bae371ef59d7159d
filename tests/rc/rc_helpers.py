"""Helpers of the RC-GRPO tests: the offline test tokenizer with the reward tokens, an echo LLM server, batches."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# tests/ is not a package (and site-packages holds a foreign top-level ``tests``): import the helper by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets_tokenizer import build_tokenizer  # noqa: E402

HIGH, LOW = "<|high_reward|>", "<|low_reward|>"


def rc_tokenizer(tokens=(HIGH, LOW)):
    """A fresh copy of the offline test tokenizer (ChatML + hermes template) with ``tokens`` as special added tokens
    (the cached original, shared with other test modules, is never modified)."""
    import tempfile

    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        build_tokenizer().save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(tmp)
    if tokens:
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    return tok


class EchoServer:
    """Stands in for verl's ``LLMServerClient``: records each prompt's ids and answers ``reply`` + ``<|im_end|>``."""

    def __init__(self, tokenizer, reply: str = "<answer>\\boxed{4}</answer>"):
        self.tokenizer = tokenizer
        self.reply = reply
        self.prompt_ids: list[list[int]] = []
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompt_ids.append(list(prompt_ids))
        ids = self.tokenizer.encode(self.reply, add_special_tokens=False) + [self.im_end]
        return TokenOutput(token_ids=ids, log_probs=[-0.5] * len(ids), extra_fields={"global_steps": 1})


def prompts_batch(questions: list[str], repeat: int = 1, system: str | None = None):
    """A verl V0 generation batch: one uid per question, each row repeated ``repeat`` times (interleaved)."""
    from verl.protocol import DataProto

    rows = [q for q in questions for _ in range(repeat)]
    raw = np.empty(len(rows), dtype=object)
    prefix = [{"role": "system", "content": system}] if system else []
    raw[:] = [[*prefix, {"role": "user", "content": q}] for q in rows]
    reward_model = np.empty(len(rows), dtype=object)
    reward_model[:] = [{"style": "rule", "ground_truth": "4"} for _ in rows]
    extra_info = np.empty(len(rows), dtype=object)
    extra_info[:] = [{"index": questions.index(q)} for q in rows]
    return DataProto(
        batch=None,
        non_tensor_batch={
            "raw_prompt": raw,
            "data_source": np.array(["grporoc/test"] * len(rows), dtype=object),
            "reward_model": reward_model,
            "extra_info": extra_info,
            "index": np.array([questions.index(q) for q in rows]),
            "uid": np.array([f"uid-{questions.index(q)}" for q in rows], dtype=object),
        },
        meta_info={"global_steps": 3},
    )
