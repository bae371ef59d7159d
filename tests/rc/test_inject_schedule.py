"""Token placement (shared by the RCTP builder and the rollout hook) and the per-group token draws."""

from __future__ import annotations

import numpy as np
import pytest
from rc_helpers import HIGH, LOW

from grporoc_plugin.rc.inject import inject_token
from grporoc_plugin.rc.schedule import draw_group, row_tokens

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]


def test_system_suffix_and_user_prefix_without_touching_the_input():
    original = [dict(m) for m in PROMPT]
    assert inject_token(PROMPT, HIGH, "system_suffix")[0] == {"role": "system", "content": f"Be brief. {HIGH}"}
    assert inject_token(PROMPT, LOW, "user_prefix", separator="\n")[1]["content"] == f"{LOW}\nWhat is 2 + 2?"
    assert PROMPT == original  # verl shares one prompt object between a group's replicas


def test_system_suffix_adds_a_system_message_when_there_is_none():
    out = inject_token(PROMPT[1:], HIGH, "system_suffix")
    assert out == [{"role": "system", "content": HIGH}, PROMPT[1]]


def test_content_parts_get_a_text_part_and_empty_token_is_a_copy():
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert inject_token(parts, HIGH, "user_prefix")[0]["content"][0] == {"type": "text", "text": f"{HIGH} "}
    copy = inject_token(PROMPT, "", "user_prefix")
    assert copy == PROMPT and copy is not PROMPT and copy[0] is not PROMPT[0]
    with pytest.raises(ValueError, match="no user message"):
        inject_token([{"role": "system", "content": "x"}], HIGH, "user_prefix")


@pytest.mark.parametrize("position", ["system_suffix", "user_prefix"])
def test_the_chat_template_renders_the_token_once_in_the_prompt(tokenizer, position):
    ids = tokenizer.apply_chat_template(inject_token(PROMPT, HIGH, position), add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids).count(tokenizer.convert_tokens_to_ids(HIGH)) == 1


@pytest.mark.parametrize(
    ("n", "p", "high"), [(8, 0.5, 4), (8, 0.0, 0), (8, 1.0, 8), (8, 0.3, 2), (5, 0.5, 3), (1, 0.5, 1)]
)
def test_exact_split_draws_round_p_n_high_tokens(n, p, high):
    for key in range(20):
        assert draw_group("exact_split", n, p, seed=0, step=1, key=key).sum() == high


def test_draws_are_seeded_per_group_and_shuffled():
    a = draw_group("exact_split", 16, 0.5, seed=0, step=3, key=7)
    assert np.array_equal(a, draw_group("exact_split", 16, 0.5, seed=0, step=3, key=7))  # reproducible
    others = [
        draw_group("exact_split", 16, 0.5, seed=s, step=t, key=k) for s, t, k in ((1, 3, 7), (0, 4, 7), (0, 3, 8))
    ]
    assert all(not np.array_equal(a, o) for o in others)  # seed, step and prompt each change the draw
    assert len({tuple(draw_group("exact_split", 8, 0.5, seed=0, step=1, key=k)) for k in range(40)}) > 10
    assert np.array_equal(
        draw_group("exact_split", 4, 0.5, seed=0, step=1, key="a"),
        draw_group("exact_split", 4, 0.5, seed=0, step=1, key="a"),
    )


def test_bernoulli_is_independent_with_probability_p():
    flags = np.concatenate([draw_group("bernoulli", 8, 0.25, seed=0, step=1, key=k) for k in range(500)])
    assert abs(flags.mean() - 0.25) < 0.03
    counts = {int(draw_group("bernoulli", 8, 0.25, seed=0, step=1, key=k).sum()) for k in range(500)}
    assert len(counts) > 3  # not an exact split
    with pytest.raises(ValueError, match="unknown schedule 'round_robin'"):
        draw_group("round_robin", 8, 0.5, seed=0, step=1, key=0)


def test_row_tokens_numbers_each_uids_rows_in_order():
    uids = ["a", "b", "a", "b", "a", "b", "a", "b"]  # interleaved, as verl's repeat(interleave=False) would give
    keys = [10, 11] * 4
    tokens = row_tokens(uids, keys, schedule="exact_split", p_high=0.5, seed=0, step=2, high=HIGH, low=LOW)
    for uid, key in (("a", 10), ("b", 11)):
        rows = [i for i, u in enumerate(uids) if u == uid]
        expected = draw_group("exact_split", 4, 0.5, seed=0, step=2, key=key)
        assert [tokens[r] == HIGH for r in rows] == expected.tolist()
