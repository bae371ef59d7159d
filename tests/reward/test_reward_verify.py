"""Answer extraction (paper vs release), normalisation, and the verifier pool's equivalences and timeouts."""

from __future__ import annotations

import time

import pytest

from grporoc_plugin.reward.verify import (
    VerifierPool,
    extract_answer,
    ground_truth_candidates,
    last_boxed,
    normalize_answer,
)

PAPER, RELEASE = "boxed_in_last_answer_tag", "last_boxed_anywhere"


@pytest.fixture(scope="module")
def pool():
    p = VerifierPool(num_workers=1, timeout_s=2.0)
    p.warm_up()
    yield p
    p.close()


# ------------------------------------------------------------------------------------------------------ extraction
def test_answer_outside_tags_paper_none_release_found():
    text = "so x = 4, hence \\boxed{4}."
    assert extract_answer(text, PAPER) is None
    assert extract_answer(text, RELEASE) == "4"


def test_multiple_boxed_takes_last_and_paper_only_inside_last_answer_tag():
    text = "<answer>\\boxed{1}</answer> retry \\boxed{2} <answer>first \\boxed{3} then \\boxed{5}</answer> \\boxed{7}"
    assert extract_answer(text, PAPER) == "5"
    assert extract_answer(text, RELEASE) == "7"


def test_nested_braces_fbox_and_unclosed_tail():
    assert last_boxed("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{x^{2}}") == "x^{2}"
    # truncated mid-answer: the unclosed last box is skipped, the previous complete one counts
    assert last_boxed("\\boxed{4} and finally \\boxed{12") == "4"
    assert last_boxed("no box") is None


def test_unclosed_answer_tag_gives_none():
    assert extract_answer("<answer>\\boxed{4}", PAPER) is None
    assert extract_answer("</answer>\\boxed{4}", PAPER) is None


def test_pathological_text_is_cheap():
    text = "\\boxed{" * 200_000
    t0 = time.perf_counter()
    assert last_boxed(text) is None
    assert time.perf_counter() - t0 < 1.0


def test_normalisation():
    assert normalize_answer("1 000") == normalize_answer("1,000") == normalize_answer("1\\,000") == "1000"
    assert normalize_answer("$\\dfrac{1}{2}$") == "\\frac{1}{2}"
    assert normalize_answer("90^\\circ") == "90"
    assert normalize_answer("1,2") == "1,2"  # a pair, not a thousands separator


def test_ground_truth_candidates():
    import numpy as np

    assert ground_truth_candidates("  5 ") == ["5"]
    assert ground_truth_candidates(5.0) == ["5"]
    assert ground_truth_candidates(np.int64(7)) == ["7"]
    assert ground_truth_candidates(["3", None, ""]) == ["3"]
    for bad in (None, "", "   ", {"a": 1}, True, []):
        assert ground_truth_candidates(bad) == []


# ------------------------------------------------------------------------------------------------------ verifier
@pytest.mark.parametrize(
    ("answer", "gt"),
    [
        ("0.5", "1/2"),
        ("\\frac12", "0.5"),
        ("\\frac{1}{2}", "\\dfrac{1}{2}"),
        ("1 000", "1000"),
        ("1,000", 1000),
        ("3.0", "3"),
        ("x=2", "2"),
        ("2^{1/2}", "\\sqrt{2}"),
        ("7", ["6", "7"]),
    ],
)
def test_equivalent(pool, answer, gt):
    outcome = pool.verify(answer, gt)
    assert outcome.correct, outcome


@pytest.mark.parametrize(("answer", "gt"), [("5", "6"), ("1,2", "12"), ("0.51", "1/2"), ("x", "2")])
def test_not_equivalent(pool, answer, gt):
    outcome = pool.verify(answer, gt)
    assert not outcome.correct and outcome.status == "verified", outcome


def test_malformed_inputs_never_raise(pool):
    assert pool.verify("4", None).status == "error"
    assert pool.verify("4", {"x": 1}).status == "error"
    assert pool.verify(None, "4").status == "no_answer"
    assert pool.verify("   ", "4").status == "no_answer"
    assert pool.verify("1" * 5000, "4").status == "error"  # longer than max_answer_chars
    assert not pool.verify("\\frac{", "4").correct


def test_soft_timeout_fires_and_worker_survives():
    timeout_s = 1.0
    p = VerifierPool(num_workers=1, timeout_s=timeout_s)
    try:
        p.warm_up()
        t0 = time.perf_counter()
        outcome = p.verify("9^{9^{9^{9}}}", "5")  # sympy would grind for minutes
        elapsed = time.perf_counter() - t0
        assert outcome.status == "timeout" and not outcome.correct
        assert elapsed < timeout_s + 0.5
        assert p.stats.timeouts == 1 and p.stats.respawns == 0
        assert p.verify("0.5", "1/2").correct  # same worker, still healthy
    finally:
        p.close()


def test_hard_timeout_kills_and_replaces_the_worker():
    """With the in-worker alarm set past the hard deadline, the parent must kill the stuck worker and respawn."""
    timeout_s = 0.5
    p = VerifierPool(num_workers=1, timeout_s=timeout_s, soft_timeout_fraction=100.0)
    try:
        p.warm_up()
        pid = p._all[0].proc.pid
        t0 = time.perf_counter()
        outcome = p.verify("10^{10^{10}}", "5")
        elapsed = time.perf_counter() - t0
        assert outcome.status == "timeout" and "hard" in outcome.detail
        assert elapsed < timeout_s + 0.5
        assert p.stats.hard_timeouts == 1 and p.stats.respawns == 1
        assert p._all[0].proc.pid != pid
        assert p.verify("0.5", "1/2").correct  # the replacement works (waits for its import, not the deadline)
    finally:
        p.close()


async def test_async_concurrency_and_close(pool):
    import asyncio

    outcomes = await asyncio.gather(*[pool.averify(str(i % 3), str(i % 2)) for i in range(30)])
    assert [o.correct for o in outcomes] == [(i % 3) == (i % 2) for i in range(30)]
    closed = VerifierPool(num_workers=1, timeout_s=1.0)
    closed.close()
    assert closed.verify("1", "2").status == "error"
    assert closed.verify("2", "2").correct  # fast path needs no worker
