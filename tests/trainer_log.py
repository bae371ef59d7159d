"""Reading verl's console logger (``trainer.logger=console``) in the end-to-end tests: one step line holds
``key:value`` pairs, values printed plainly or as ``np.float64(...)``."""

from __future__ import annotations

import re


def _value(line: str, key: str, number: str) -> float:
    match = re.search(rf"{re.escape(key)}:(?:np\.float64\()?({number})", line)
    assert match, f"metric {key} missing from: {line[:300]}"
    return float(match.group(1))


def metric(line: str, key: str) -> float:
    """The value of ``key`` on a step line; a missing key or a ``nan`` fails the test."""
    return _value(line, key, r"[-+0-9.eE]+")


def metric_or_nan(line: str, key: str) -> float:
    """Like ``metric``, but ``nan`` is a value (a metric over an empty set, e.g. positives in a step without any)."""
    return _value(line, key, r"[-+0-9.eE]+|nan")
