"""Which reward token each replica of a group is conditioned on: schedules (a registry) and seeded per-group draws.

A schedule is ``(n, p_high, rng) -> (n,) bool`` (True = high token), verl ``core_algos.py`` style:

* ``exact_split``: exactly ``round(p_high * n)`` high tokens (half up), positions shuffled;
* ``bernoulli``: each replica high with probability ``p_high``, independently.

Every group draws from its own generator, seeded by ``(algorithm.rc.seed, global step, the prompt's dataset
index)``: a run is reproducible, a resumed run draws what an uninterrupted one would, and the draw does not depend
on which worker or in which order the group is generated. Pure numpy.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SCHEDULE_REGISTRY",
    "draw_group",
    "get_schedule",
    "group_rng",
    "register_schedule",
    "row_tokens",
]

Schedule = Callable[[int, float, np.random.Generator], np.ndarray]
SCHEDULE_REGISTRY: dict[str, Schedule] = {}


def register_schedule(name: str) -> Callable[[Schedule], Schedule]:
    """Register a schedule ``(n, p_high, rng) -> (n,) bool`` (``algorithm.rc.schedule``)."""

    def decorator(fn: Schedule) -> Schedule:
        if name in SCHEDULE_REGISTRY and SCHEDULE_REGISTRY[name] is not fn:
            raise ValueError(f"schedule {name!r} is already registered by {SCHEDULE_REGISTRY[name].__module__}")
        SCHEDULE_REGISTRY[name] = fn
        return fn

    return decorator


def get_schedule(name: str) -> Schedule:
    if name not in SCHEDULE_REGISTRY:
        raise ValueError(f"unknown schedule {name!r}; registered: {sorted(SCHEDULE_REGISTRY)}")
    return SCHEDULE_REGISTRY[name]


@register_schedule("exact_split")
def exact_split(n: int, p_high: float, rng: np.random.Generator) -> np.ndarray:
    """``floor(p_high * n + 0.5)`` high tokens at shuffled positions."""
    high = np.zeros(n, dtype=bool)
    high[: int(np.floor(p_high * n + 0.5))] = True
    return rng.permutation(high)


@register_schedule("bernoulli")
def bernoulli(n: int, p_high: float, rng: np.random.Generator) -> np.ndarray:
    """Each replica high with probability ``p_high``."""
    return rng.random(n) < p_high


def _key_int(key: Any) -> int:
    """A stable non-negative int of a dataset index (int, numpy int, str, ...)."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        return int(key) % (2**63)
    return zlib.crc32(str(key).encode())


def group_rng(seed: int, step: int, key: Any) -> np.random.Generator:
    """The generator of one group: seeded by (base seed, global step, the prompt's dataset index)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), max(int(step), 0), _key_int(key)]))


def draw_group(schedule: str, n: int, p_high: float, *, seed: int, step: int, key: Any) -> np.ndarray:
    """(n,) bool, True = high token, for the replicas of one group in rollout (session) order."""
    flags = np.asarray(get_schedule(schedule)(int(n), float(p_high), group_rng(seed, step, key)), dtype=bool)
    if flags.shape != (n,):
        raise ValueError(f"schedule {schedule!r} returned shape {flags.shape} for a group of {n}")
    return flags


def row_tokens(
    group_ids: Sequence[Hashable],
    keys: Sequence[Any],
    *,
    schedule: str,
    p_high: float,
    seed: int,
    step: int,
    high: str,
    low: str,
) -> np.ndarray:
    """Token text of every row of a batch whose groups were repeated by the caller (verl V0: ``uid`` per row).

    Rows of one group are its replicas in order; ``keys[i]`` is the dataset index of row ``i``'s prompt (the first
    row of a group seeds it). Rows of a group need not be contiguous.
    """
    rows_of: dict[Hashable, list[int]] = {}
    for row, group in enumerate(group_ids):
        rows_of.setdefault(group, []).append(row)
    tokens = np.empty(len(group_ids), dtype=object)
    for rows in rows_of.values():
        flags = draw_group(schedule, len(rows), p_high, seed=seed, step=step, key=keys[rows[0]])
        tokens[rows] = [high if flag else low for flag in flags]
    return tokens
