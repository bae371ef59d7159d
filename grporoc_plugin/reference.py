"""The public release's down-sampling, transcribed line by line: the reference, never used in training.

microsoft/rStar at ecbfb943, ``rstar2_agent/down_sample/``: ``reject_sampling.py:11-46`` (``reject_equal_reward``) and
``roc.py:41-138`` (``resample_of_correct`` with its regex penalties; negatives unsorted since commit 5e95b19). The
selection engine (:mod:`grporoc_plugin.roc`) and the text penalties (:func:`grporoc_plugin.penalties.text_penalties`)
are tested for exact parity against these functions, and ``benchmarks/bench_selection.py`` times them as the
baseline. Kept deliberately naive (per-uid Python loops, ``re.findall``) so that it reads like the original: only
1-D numpy rewards stand in for ``token_level_scores[uid_mask].sum(-1)``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "ReleaseAssertionError",
    "release_answer_tag_repetition",
    "release_down_sample",
    "release_error_ratio",
    "release_format",
    "release_reject_equal",
    "release_resample_of_correct",
]


class ReleaseAssertionError(AssertionError):
    """The release's ``assert len(choices) == down_sample_to_n`` fired for a group."""


def release_error_ratio(text: str) -> float:
    """roc.py:80-101: p_err = errors / tool responses by substring test, 0.5 without any tool response."""
    matches = re.findall(r"<tool_response>.*?</tool_response>", text, re.DOTALL)
    error_count = len([m for m in matches if "error" in m.lower()])
    return 0.5 if len(matches) == 0 else error_count / len(matches)


def release_answer_tag_repetition(text: str) -> tuple[float, int]:
    """roc.py:104-120: (p_format, closed answer tags); the turn count misses the prompt's assistant header."""
    answer_tags = ["<answer>", "</answer>"]
    if any(tag not in text for tag in answer_tags):
        return 1.0, 0
    counts = [text.count(tag) for tag in answer_tags]
    closed = len(re.findall(r"<answer>.*?</answer>", text, re.DOTALL))
    if any(c != closed for c in counts):
        return 1.0, closed
    num_turns = len(re.findall(r"<\|im_start\|>assistant.*?<\|im_end\|>", text, re.DOTALL))
    if num_turns == 0:
        return 1.0, closed
    return min((closed - 1) / num_turns, 1.0), closed


def release_format(texts: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
    """The answer-format pass over a batch with its ``roc_answer_format/*`` metrics."""
    weights, total, zero, one, many = [], 0, 0, 0, 0
    for text in texts:
        weight, closed = release_answer_tag_repetition(text)
        weights.append(weight)
        total += closed
        zero += closed == 0
        one += closed == 1
        many += closed > 1
    metrics = {
        "roc_answer_format/answer_per_rollout_mean": total / len(texts) if texts else 0.0,
        "roc_answer_format/zero_answer_count": zero,
        "roc_answer_format/one_answer_count": one,
        "roc_answer_format/gt_one_answer_count": many,
    }
    return np.array(weights, dtype=np.float64), metrics


def release_reject_equal(uids: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """reject_sampling.py:11-46: False for every row of a uid whose rewards are all equal (``torch.allclose``)."""
    valid = np.ones(len(uids), dtype=bool)
    for uid in dict.fromkeys(np.asarray(uids, dtype=object).tolist()):
        mask = np.asarray(uids, dtype=object) == uid
        group = rewards[mask]
        if np.allclose(group[0], group):
            valid[mask] = False
    return valid


def release_resample_of_correct(
    uids: Sequence[Hashable],
    rewards: np.ndarray,
    penalty: np.ndarray,
    n: int,
    min_zero: int,
    min_non_zero: int,
    *,
    on_assert: str = "raise",
) -> tuple[np.ndarray, set]:
    """roc.py:41-76 per uid: (valid mask, uids whose assert fired).

    ``on_assert="raise"`` raises :class:`ReleaseAssertionError` like the release; ``"record"`` leaves such a group
    unselected and reports its uid instead (for parity tests on compositions the release cannot handle).
    """
    uids = np.asarray(uids, dtype=object)
    valid = np.zeros(len(uids), dtype=bool)
    asserted: set = set()
    for uid in dict.fromkeys(uids.tolist()):
        indices = np.where(uids == uid)[0]
        if len(indices) < n:  # the group is dropped
            continue
        if len(indices) == n:
            valid[indices] = True
            continue
        zero_pairs = [(i, penalty[i]) for i in indices if rewards[i] <= 0]
        non_zero_pairs = [(i, penalty[i]) for i in indices if rewards[i] > 0]
        non_zero_pairs.sort(key=lambda x: x[1])
        zero_num = round(len(zero_pairs) * n / len(indices))
        non_zero_num = round(len(non_zero_pairs) * n / len(indices))
        if zero_num < min_zero and non_zero_num < min_non_zero:
            valid[indices] = True
            continue
        if zero_num <= min(min_zero, len(zero_pairs)):
            zero_num = min(min_zero, len(zero_pairs))
            non_zero_num = n - zero_num
        if non_zero_num <= min(min_non_zero, len(non_zero_pairs)):
            non_zero_num = min(min_non_zero, len(non_zero_pairs))
            zero_num = n - non_zero_num
        choices = [p[0] for p in non_zero_pairs[:non_zero_num]] + [p[0] for p in zero_pairs[:zero_num]]
        if len(choices) != n:
            if on_assert == "raise":
                raise ReleaseAssertionError(f"{n=} != {len(choices)} for uid {uid!r}")
            asserted.add(uid)
            continue
        valid[choices] = True
    return valid, asserted


def release_down_sample(
    uids: Sequence[Hashable],
    rewards: np.ndarray,
    n: int,
    min_zero: int,
    min_non_zero: int,
    *,
    texts: Sequence[str] | None = None,
    penalty: np.ndarray | None = None,
    reject_equal: bool = True,
    on_assert: str = "raise",
) -> tuple[np.ndarray, set]:
    """The release's ``_down_sample_batch``: reject equal groups, then RoC on the survivors; (kept rows, asserted).

    Penalties come from ``texts`` (the regex passes, computed on the survivors as the release does) or are given.
    """
    uids = np.asarray(uids, dtype=object)
    rewards = np.asarray(rewards, dtype=np.float64)
    rows = np.flatnonzero(release_reject_equal(uids, rewards)) if reject_equal else np.arange(len(uids))
    if texts is not None:
        survivors = [texts[i] for i in rows]
        pen = np.array([release_error_ratio(t) for t in survivors]) + release_format(survivors)[0]
    else:
        pen = np.asarray(penalty, dtype=np.float64)[rows]
    valid, asserted = release_resample_of_correct(
        uids[rows], rewards[rows], pen, n, min_zero, min_non_zero, on_assert=on_assert
    )
    return rows[valid], asserted
