"""Reward for trajectories that hit the response budget: DAPO's soft overlong ramp and its config checks.

DAPO (arXiv 2503.14476, Eq. 13) with L_max the response budget and L_cache the buffer before it::

    R_len(L) = 0                                     if L <= L_max - L_cache
             = ((L_max - L_cache) - L) / L_cache * f  if L_max - L_cache < L <= L_max
             = -f                                    if L > L_max

The ramp is continuous at both ends (0 at ``L_max - L_cache``, ``-f`` at ``L_max``). verl's ``dapo`` manager computes
the same value inside the budget but keeps falling below ``-f`` past ``L_max``; here it is clamped, as in the paper.
"""

from __future__ import annotations

__all__ = ["dapo_overlong_reward", "validate_overlong"]


def validate_overlong(max_len: int, buffer_len: int, penalty_factor: float, *, prefix: str = "") -> None:
    """Raise ``ValueError`` naming the offending key when the ramp parameters make no sense."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
        raise ValueError(f"{prefix}max_resp_len must be a positive int, got {max_len!r}")
    if isinstance(buffer_len, bool) or not isinstance(buffer_len, int) or buffer_len < 0:
        raise ValueError(f"{prefix}overlong_buffer_len must be an int >= 0, got {buffer_len!r}")
    if buffer_len > max_len:
        raise ValueError(
            f"{prefix}overlong_buffer_len={buffer_len} exceeds max_resp_len={max_len}: the ramp would start before "
            "an empty response"
        )
    if isinstance(penalty_factor, bool) or not isinstance(penalty_factor, int | float) or penalty_factor < 0:
        raise ValueError(f"{prefix}overlong_penalty_factor must be a number >= 0, got {penalty_factor!r}")


def dapo_overlong_reward(length: int, max_len: int, buffer_len: int, penalty_factor: float) -> float:
    """DAPO's soft overlong punishment R_len for a response of ``length`` tokens (always <= 0)."""
    expected = max_len - buffer_len
    if length <= expected:
        return 0.0
    if length > max_len:
        return -float(penalty_factor)
    # Here expected < length <= max_len, so buffer_len >= 1: no division by zero for buffer_len == 0.
    return (expected - length) / buffer_len * float(penalty_factor)
