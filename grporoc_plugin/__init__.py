"""GRPO-RoC (Group Relative Policy Optimization with Resample-on-Correct, rStar2-Agent) for verl.

Kept import-light on purpose: ``import verl`` imports :mod:`grporoc_plugin.register` through the ``verl.plugins``
entry point in every process (driver, TaskRunner, Ray workers). Heavy pieces live in sub-modules.
"""

__version__ = "0.1.0"
