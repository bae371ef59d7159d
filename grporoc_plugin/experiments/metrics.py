"""Per-step rows of the experiment (``metrics.csv``) from verl's file-logger output of each run.

Every behaviour column is one of the V1 RoC sampler's ``rollout/*`` metrics, computed over *all* sessions generated
for the train batch before selection (the policy's behaviour, in every arm, RoC enabled or not); step time is
verl's ``timing_s/step``; held-out accuracy is verl's validation metric ``val-core/<data_source>/acc/mean@n``.
A metric a step did not report (e.g. the tool-error ratio of a step whose positives made no tool call) is left empty
in the CSV, never written as 0.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = ["COLUMNS", "METRIC_KEYS", "read_csv", "rows_from_steps", "write_csv"]

#: CSV column -> verl metric key (``val_acc`` is matched by prefix, see :func:`_val_acc`).
METRIC_KEYS: Mapping[str, str] = {
    "acc": "rollout/acc",
    "pos_tool_error_ratio": "rollout/pos_tool_error_ratio",
    "pos_with_error_share": "rollout/pos_with_error_share",
    "response_len_pos": "rollout/response_len_pos",
    "response_len_all": "rollout/response_len_all",
    "tool_calls_per_traj": "rollout/tool_calls_per_traj",
    "step_time_s": "timing_s/step",
    "sessions": "rollout/sessions",
    "trained_sessions": "roc/rows_kept",
}
COLUMNS: tuple[str, ...] = ("arm", "seed", "step", *METRIC_KEYS, "val_acc")
_VAL_PREFIX = "val-core/"


def _val_acc(step: Mapping[str, float]) -> float | None:
    """verl's held-out accuracy (``val-core/<data_source>/acc/mean@n``) of a step, averaged over data sources."""
    values = [v for k, v in step.items() if k.startswith(_VAL_PREFIX) and "/acc/mean@" in k]
    return sum(values) / len(values) if values else None


def rows_from_steps(arm: str, seed: int, steps: Iterable[Mapping[str, float]]) -> list[dict[str, object]]:
    """One CSV row per logged step (step 0 = validation before training, when logged)."""
    rows = []
    for step in steps:
        row: dict[str, object] = {"arm": arm, "seed": seed, "step": int(step["step"])}
        for column, key in METRIC_KEYS.items():
            value = step.get(key)
            row[column] = None if value is None or not math.isfinite(value) else float(value)
        row["val_acc"] = _val_acc(step)
        rows.append(row)
    return rows


def write_csv(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Write ``rows`` (missing values as empty cells), sorted by arm order of appearance, seed, step."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ("" if row.get(c) is None else row[c]) for c in COLUMNS})


def read_csv(path: str | Path) -> list[dict[str, object]]:
    """Rows of a ``metrics.csv``: ``seed``/``step`` as int, metrics as float or None (empty cell)."""
    rows = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, object] = {"arm": raw["arm"], "seed": int(raw["seed"]), "step": int(raw["step"])}
            for column in COLUMNS[3:]:
                cell = raw.get(column, "")
                row[column] = float(cell) if cell not in ("", None) else None
            rows.append(row)
    return rows
