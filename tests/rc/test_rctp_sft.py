"""The RCTP builder's output trains through verl's own SFT trainer (torchrun, CPU backend) into a checkpoint that
loads unchanged: vocab tool -> builder -> ``verl.trainer.sft_trainer`` -> Hugging Face ``huggingface/`` directory."""

from __future__ import annotations

import fcntl
import json

import pytest
import torch
from rc_helpers import HIGH, LOW

from grporoc_plugin.rc.builder import build_rctp
from grporoc_plugin.rc.settings import RCSettings, check_tokenizer
from grporoc_plugin.rc.sft import run_sft
from grporoc_plugin.rc.vocab import add_reward_tokens

HEAVY_LOCK = "/tmp/grporoc_heavy.lock"  # one heavy run at a time on the shared machine (tests/conftest.py)


@pytest.mark.slow
def test_rctp_data_trains_through_verls_sft_trainer_on_cpu(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.demo.assets import build_model, build_tokenizer

    build_model(str(tmp_path / "base"), build_tokenizer(str(tmp_path / "base")))
    vocab = add_reward_tokens(str(tmp_path / "base"), str(tmp_path / "rc"))
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": f"<answer>\\boxed{{{i + 1 if i % 2 else i}}}</answer>"},
            ],
            "reward": float(i % 2),  # mixed quality: half the answers are wrong
        }
        for i in range(16)
    ]
    build_rctp(rows, tmp_path / "rctp.parquet", settings=RCSettings(position="system_suffix"))

    with open(HEAVY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            checkpoint = run_sft(
                str(tmp_path / "rctp.parquet"),
                str(tmp_path / "rc"),
                str(tmp_path / "sft"),
                steps=4,
                batch_size=8,
                max_length=128,
                log_path=tmp_path / "sft.log",
            )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    log = (tmp_path / "sft.log").read_text()
    losses = [float(line.split("train/loss:")[1].split(" ")[0]) for line in log.split("step:")[1:]]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))

    tok = AutoTokenizer.from_pretrained(checkpoint)  # what actor_rollout_ref.model.path loads
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    rows_after = model.get_input_embeddings().weight.shape[0]
    assert check_tokenizer(RCSettings(enable=True), tok, embedding_rows=rows_after) == vocab.token_ids
    assert tok.chat_template and json.loads((checkpoint / "config.json").read_text())["vocab_size"] == rows_after
    # the reward tokens were in the training data: their (tied) rows moved, as the trained vocabulary's did
    start = AutoModelForCausalLM.from_pretrained(tmp_path / "rc").get_input_embeddings().weight.float()
    trained = model.get_input_embeddings().weight.float()  # verl saves the HF weights in bf16
    for token in (HIGH, LOW):
        assert (trained[vocab.token_ids[token]] - start[vocab.token_ids[token]]).abs().max() > 1e-3, token
