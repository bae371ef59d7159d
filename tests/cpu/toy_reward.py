"""Dense toy reward for CPU e2e runs: a random tiny model never answers, so reward digits to get non-zero advantages."""

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """1.0 for ``\\boxed{ground_truth}``, else the share of digit characters in the response (in [0, 1))."""
    match = re.search(r"\\boxed\{(-?\d+)\}", solution_str)
    if match and match.group(1) == str(ground_truth):
        return 1.0
    return 0.9 * sum(c.isdigit() for c in solution_str) / max(1, len(solution_str))
