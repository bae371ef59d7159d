"""Answer extraction (paper vs release), and the verifier pool's equivalences, timeouts and fault handling."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from reward_helpers import verifier_workers

from grporoc_plugin.reward.verify import (
    VerifierPool,
    extract_answer,
    ground_truth_candidates,
    last_boxed,
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
    assert extract_answer(text, RELEASE) == extract_answer(text, "last_boxed_full_text") == "7"
    with pytest.raises(ValueError, match="answer_extraction"):
        extract_answer(text, "first_boxed")


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
        ("1,000", 1000),
        ("1{,}000", "1000"),
        ("3.0", "3"),
        ("x=2", "2"),
        ("2^{1/2}", "\\sqrt{2}"),
        ("7", ["6", "7"]),
    ],
)
def test_equivalent(pool, answer, gt):
    outcome = pool.verify(answer, gt)
    assert outcome.correct, outcome


@pytest.mark.parametrize(
    ("answer", "gt"),
    [
        ("5", "6"),
        ("1,2", "12"),
        ("0.51", "1/2"),
        ("x", "2"),
        ("1 000", "1000"),  # math_verify reads "1 000" as the product 1*0 (the first release's string path said 1000)
        ("5.", "5"),  # math_verify cannot parse "5." (the first release's string path stripped the period)
    ],
)
def test_not_equivalent(pool, answer, gt):
    outcome = pool.verify(answer, gt)
    assert not outcome.correct and outcome.status in ("fast", "verified"), outcome


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
    assert closed.verify("\\sqrt{8}", "2\\sqrt{2}").status == "error"  # needs math_verify: no worker any more
    assert (await closed.averify("\\sqrt{8}", "2\\sqrt{2}")).status == "error"
    assert closed.verify("2", "2").correct  # fast path needs no worker


# ------------------------------------------------------------------------------------------------------ faults
def test_replacement_worker_outlives_the_thread_that_replaced_it():
    """PR_SET_PDEATHSIG is tied to the forking *thread*: a worker replaced from a short-lived caller thread must not
    die with it (the pool's own spawner thread forks every worker)."""
    p = VerifierPool(num_workers=1, timeout_s=0.5, soft_timeout_fraction=100.0)
    try:
        p.warm_up()

        def hang_then_wait_for_the_replacement():
            p.verify("10^{10^{10}}", "5")  # hard timeout: the worker is replaced while this thread handles the call
            p.warm_up()  # the replacement has armed PR_SET_PDEATHSIG before this thread exits

        t = threading.Thread(target=hang_then_wait_for_the_replacement)
        t.start()
        t.join()
        assert p.stats.hard_timeouts == 1 and p.stats.respawns == 1
        time.sleep(0.3)  # the thread is gone
        p.timeout_s, p.soft_timeout_s = 30.0, 27.0  # a fresh worker's first sympy call may take a while here
        outcome = p.verify("\\sqrt{8}", "2\\sqrt{2}")
        assert outcome.status == "verified" and outcome.correct, outcome
    finally:
        p.close()


def test_pool_created_in_a_worker_thread_serves_from_others():
    import asyncio

    p = asyncio.run(asyncio.to_thread(VerifierPool, num_workers=1, timeout_s=5.0))  # asyncio.run ends that thread
    try:
        time.sleep(0.3)
        outcome = asyncio.run(p.averify("\\sqrt{8}", "2\\sqrt{2}"))
        assert outcome.status == "verified" and outcome.correct, outcome
    finally:
        p.close()


def test_close_ends_hung_calls_and_starts_no_replacement():
    before = verifier_workers()
    p = VerifierPool(num_workers=2, timeout_s=30.0, soft_timeout_fraction=100.0)
    p.warm_up()
    assert set(p.worker_pids) <= verifier_workers()
    with ThreadPoolExecutor(3) as ex:
        hung = [ex.submit(p.verify, "10^{10^{10}}", "5") for _ in range(2)]
        queued = ex.submit(p.verify, "10^{10^{11}}", "5")  # waits for a free worker
        time.sleep(0.5)
        t0 = time.perf_counter()
        p.close()
        outcomes = [f.result(timeout=5) for f in [*hung, queued]]
    assert time.perf_counter() - t0 < 2.0
    assert [o.status for o in outcomes] == ["error"] * 3 and not any(o.correct for o in outcomes)
    assert p.stats.respawns == 2  # the two killed workers were retired ...
    time.sleep(0.2)
    assert not p.worker_pids and verifier_workers() == before  # ... and not replaced
