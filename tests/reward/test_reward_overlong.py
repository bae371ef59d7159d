"""DAPO soft overlong ramp: exact piecewise boundaries and config validation."""

from __future__ import annotations

import pytest

from grporoc_plugin.reward.overlong import dapo_overlong_reward, validate_overlong


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (12, 0.0),  # L = Lmax - Lcache: last length without penalty
        (13, -0.5 / 4),  # L = Lmax - Lcache + 1: first step of the ramp, -factor / Lcache
        (14, -1.0 / 4),
        (16, -0.5),  # L = Lmax: exactly -factor
        (17, -0.5),  # L = Lmax + 1: clamped at -factor (verl's dapo manager would give -0.625)
        (1000, -0.5),
    ],
)
def test_ramp_boundaries(length, expected):
    assert dapo_overlong_reward(length, max_len=16, buffer_len=4, penalty_factor=0.5) == pytest.approx(expected)


def test_ramp_matches_verl_dapo_inside_budget():
    """Inside the budget the value equals verl's dapo manager formula min(-(L - (Lmax - Lc)) / Lc * f, 0)."""
    lmax, lc, f = 64, 16, 1.0
    for length in range(lmax + 1):
        verl_value = min(-(length - (lmax - lc)) / lc * f, 0)
        assert dapo_overlong_reward(length, lmax, lc, f) == pytest.approx(verl_value)


def test_zero_buffer_is_a_step_at_lmax():
    assert dapo_overlong_reward(16, 16, 0, 1.0) == 0.0
    assert dapo_overlong_reward(17, 16, 0, 1.0) == -1.0


def test_buffer_equal_to_lmax_starts_at_zero_length():
    assert dapo_overlong_reward(0, 8, 8, 1.0) == 0.0
    assert dapo_overlong_reward(1, 8, 8, 1.0) == pytest.approx(-1 / 8)
    assert dapo_overlong_reward(8, 8, 8, 1.0) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ((16, 17, 1.0), "overlong_buffer_len=17 exceeds max_resp_len=16"),
        ((16, -1, 1.0), "overlong_buffer_len"),
        ((0, 0, 1.0), "max_resp_len"),
        ((16, 4, -0.1), "overlong_penalty_factor"),
        ((16, 4.0, 1.0), "overlong_buffer_len"),
    ],
)
def test_validation_names_the_key(args, key):
    with pytest.raises(ValueError, match=key):
        validate_overlong(*args)


def test_valid_edges_pass():
    validate_overlong(16, 0, 0.0)
    validate_overlong(16, 16, 1.0)
