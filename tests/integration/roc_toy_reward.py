"""Toy reward with a binary ``acc`` for RoC e2e runs on a random tiny model (which never solves anything).

``acc`` is a deterministic coin of the response text (so groups are mixed), ``p_err`` a second one; the naive
reward manager copies every key of the returned dict into ``reward_extra_info``, which is all RoC needs.
"""

import zlib


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """``{"score": acc, "acc": 0/1, "p_err": 0/0.5, "tool_calls": 0}`` from a CRC of the response."""
    h = zlib.crc32(solution_str.encode())
    acc = float(h % 2)
    return {"score": acc, "acc": acc, "p_err": 0.5 * ((h >> 1) % 2), "tool_calls": 0}
