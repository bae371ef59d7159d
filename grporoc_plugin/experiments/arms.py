"""The arms of the GRPO vs random down-sampling vs GRPO-RoC experiment, as a registry (``core_algos.py`` style).

Every arm trains the same warm-started policy on the same prompts with the same seeds, step count, optimizer and
loss; an arm only decides *which rollouts of each prompt the update sees*. Each arm is a function of the kept group
size G returning the hydra overrides that differ from the shared run (``grporoc_plugin.demo.run.build_overrides``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ARM_REGISTRY", "Arm", "get_arm", "register_arm"]


@dataclass(frozen=True)
class Arm:
    """One arm: its name, what it trains on, and how it is configured."""

    name: str
    generated_per_prompt: Callable[[int], int]
    """Sessions generated per prompt as a function of G."""
    overrides: Callable[[int], tuple[str, ...]]
    """Hydra overrides (``algorithm.roc.*``) as a function of G."""
    trains_on: str
    """One sentence: what the policy update sees (the design doc quotes it)."""


ARM_REGISTRY: dict[str, Arm] = {}


def register_arm(name: str, *, generated: Callable[[int], int], trains_on: str):
    """Decorator: register ``fn(G) -> overrides`` as arm ``name``."""

    def decorator(fn: Callable[[int], tuple[str, ...]]) -> Callable[[int], tuple[str, ...]]:
        if name in ARM_REGISTRY:
            raise ValueError(f"arm {name!r} is already registered")
        ARM_REGISTRY[name] = Arm(name=name, generated_per_prompt=generated, overrides=fn, trains_on=trains_on)
        return fn

    return decorator


def get_arm(name: str) -> Arm:
    """The registered arm ``name``; unknown names raise ValueError listing the known ones."""
    try:
        return ARM_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown arm {name!r}; known arms: {sorted(ARM_REGISTRY)}") from None


@register_arm(
    "grpo",
    generated=lambda g: g,
    trains_on="all G rollouts of every prompt, including groups whose outcomes are all equal (zero advantage)",
)
def _grpo(g: int) -> tuple[str, ...]:
    # RoC disabled: the oversampling manager generates rollout.n = G sessions, the sampler keeps everything but
    # still reports its per-step rollout/* metrics.
    return ("algorithm.roc.enable=False", f"algorithm.roc.oversample_n={g}")


@register_arm(
    "random",
    generated=lambda g: 2 * g,
    trains_on=(
        "G of 2G rollouts per prompt: groups with all-equal outcomes dropped, RoC's per-sign counts (release_round, "
        "floors 2/2), positives and negatives both drawn uniformly at random (seeded)"
    ),
)
def _random(g: int) -> tuple[str, ...]:
    return (
        "algorithm.roc.enable=True",
        f"algorithm.roc.oversample_n={2 * g}",
        "algorithm.roc.positive_mode=uniform",
        "algorithm.roc.negative_mode=uniform",
    )


@register_arm(
    "roc",
    generated=lambda g: 2 * g,
    trains_on=(
        "G of 2G rollouts per prompt: groups with all-equal outcomes dropped, the same per-sign counts, the "
        "positives with the lowest penalty (tool-error ratio + answer-format penalty), the first negatives in "
        "rollout order (release defaults)"
    ),
)
def _roc(g: int) -> tuple[str, ...]:
    return (
        "algorithm.roc.enable=True",
        f"algorithm.roc.oversample_n={2 * g}",
        "algorithm.roc.positive_mode=topk",
        "algorithm.roc.negative_mode=first_k",
    )
