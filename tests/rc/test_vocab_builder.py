"""The vocabulary tool (tokenizer + embedding rows) and the RCTP data builder, on real files."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from rc_helpers import HIGH, LOW

from grporoc_plugin.rc.builder import build_rctp, main, read_trajectories
from grporoc_plugin.rc.settings import RCSettings, check_tokenizer
from grporoc_plugin.rc.vocab import add_reward_tokens


def _tiny_model(path, vocab_extra: int = 0):
    """The demo's tiny tokenizer + random Qwen2 (tied embeddings), optionally with spare embedding rows."""
    from grporoc_plugin.demo.assets import build_model, build_tokenizer

    tokenizer = build_tokenizer(str(path))
    model = build_model(str(path), tokenizer)
    if vocab_extra:
        model.resize_token_embeddings(len(tokenizer) + vocab_extra)
        model.save_pretrained(str(path))
    return tokenizer


@pytest.mark.parametrize(("spare", "mode"), [(0, "resized"), (8, "spare rows")])
def test_vocab_adds_special_tokens_with_rows_verl_can_load(tmp_path, spare, mode):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = _tiny_model(tmp_path / "in", vocab_extra=spare)
    before = AutoModelForCausalLM.from_pretrained(tmp_path / "in").get_input_embeddings().weight.detach().clone()
    report = add_reward_tokens(str(tmp_path / "in"), str(tmp_path / "out"))
    assert report.mode == mode and report.added == (HIGH, LOW)
    assert report.token_ids == {HIGH: len(tokenizer), LOW: len(tokenizer) + 1}
    assert report.rows_after == (len(tokenizer) + 2 if spare == 0 else len(tokenizer) + spare)

    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    weight = model.get_input_embeddings().weight.detach()
    assert check_tokenizer(RCSettings(enable=True), tok, embedding_rows=weight.shape[0]) == report.token_ids
    assert tok.decode(tok.encode(f"a {HIGH} b", add_special_tokens=False), skip_special_tokens=True) == "a  b"
    assert torch.equal(weight[: len(tokenizer)], before[: len(tokenizer)])  # the trained rows are untouched
    new = weight[[report.token_ids[HIGH], report.token_ids[LOW]]]
    mean = before[: len(tokenizer)].mean(0)
    assert (
        not torch.equal(new[0], new[1])
        and (new - mean).norm(dim=1).max() < (before[: len(tokenizer)] - mean).norm(dim=1).mean()
    )
    assert model.config.tie_word_embeddings and model.get_output_embeddings().weight.shape == weight.shape

    again = add_reward_tokens(str(tmp_path / "out"), str(tmp_path / "again"))  # idempotent
    assert again.mode == "unchanged" and again.added == () and again.token_ids == report.token_ids


def _trajectories() -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}],
            "extra_info": {"acc": float(i % 4 != 0)},
            "reward": 0.2 * i,
        }
        for i in range(8)
    ]


def test_builder_labels_by_outcome_and_places_the_token(tmp_path):
    rows = _trajectories()
    report = build_rctp(rows, tmp_path / "rctp.parquet", outcome_key="extra_info.acc")
    assert (report.rows, report.high, report.high_share) == (8, 6, 0.75)
    frame = read_trajectories(tmp_path / "rctp.parquet")
    for row, src in zip(frame, rows, strict=True):
        token = HIGH if src["extra_info"]["acc"] > 0.5 else LOW
        assert row["rc_token"] == token and row["outcome"] == src["extra_info"]["acc"]
        assert row["messages"][0] == {"role": "system", "content": token}  # system_suffix, no system message
        assert row["messages"][1:] == src["messages"]  # the trajectory itself is unchanged
    report = build_rctp(rows, tmp_path / "t.parquet", settings=RCSettings(position="user_prefix"), threshold=0.7)
    frame = read_trajectories(tmp_path / "t.parquet")
    assert report.high == 4 and frame[7]["messages"][0]["content"] == f"{HIGH} Q7"  # reward 1.4 > 0.7
    assert frame[3]["messages"][0]["content"] == f"{LOW} Q3"  # reward 0.6


def test_builder_cli_reads_jsonl_and_checks_the_tokenizer(tmp_path, capsys):
    path = tmp_path / "traj.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _trajectories()))
    main([str(path), str(tmp_path / "out.parquet"), "--outcome-key", "extra_info.acc"])
    assert "8 trajectories, high share 0.750" in capsys.readouterr().out
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 8
    _tiny_model(tmp_path / "plain")  # no reward tokens yet
    from grporoc_plugin.rc.settings import RCConfigError

    with pytest.raises(RCConfigError, match=r"algorithm\.rc\.high_token=.* is not one token"):
        main([str(path), str(tmp_path / "x.parquet"), "--tokenizer", str(tmp_path / "plain")])
    with pytest.raises(KeyError, match=r"row 0: no outcome 'score'"):
        main([str(path), str(tmp_path / "x.parquet"), "--outcome-key", "score"])
