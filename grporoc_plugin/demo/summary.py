"""Per-step summary of a GRPO-RoC run, parsed from verl's own logs.

verl's ``file`` logger writes one JSON object per step (``{"step": n, "data": {metric: value}}``) and its ``console``
logger prints ``step:n - key:value - ...``; both carry the sampler's ``roc/*`` metrics and verl's ``timing_s/*``.
``python -m grporoc_plugin.demo.summary <metrics.jsonl | console.log>`` prints the table for a finished run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# ``(TaskRunnerV1 pid=123) step:3 - a:1.0 - b:2`` (Ray prefixes and ANSI colours are tolerated).
_STEP_LINE = re.compile(r"(?:^|\s|\))step:(\d+) - (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Column:
    """One summary column: the first metric key present in a step wins."""

    header: str
    keys: tuple[str, ...]
    fmt: str = "{:.3f}"


#: Columns of the demo's table: the RoC sampler's ``roc/*`` and ``rollout/*`` metrics (grporoc_plugin/roc.py,
#: grporoc_plugin/adapter.py) and verl's own. ``pos_err_*`` is the paper's Fig. 4 quantity: failed tool calls / tool
#: calls of the positive trajectories, in all 2G rollouts (before) and in the kept ones (after); "-" when the
#: positives made no tool call (never a fake 0).
COLUMNS: tuple[Column, ...] = (
    Column("acc(2G)", ("rollout/acc", "roc/acc_before")),
    Column("acc(kept)", ("roc/acc_after",)),
    Column("pos_err_before", ("roc/pos_tool_error_ratio_before",)),
    Column("pos_err_after", ("roc/pos_tool_error_ratio_after",)),
    Column("pos_w_err", ("rollout/pos_with_error_share",)),
    Column("pos_notool", ("roc/pos_no_tool_share_before",)),
    Column("calls/traj", ("rollout/tool_calls_per_traj",), "{:.2f}"),
    Column("rows", ("roc/rows_before",), "{:.0f}"),
    Column("kept", ("roc/rows_kept",), "{:.0f}"),
    Column("dropped", ("roc/rows_dropped",), "{:.0f}"),
    Column("grp_rejected", ("roc/groups_rejected",), "{:.0f}"),
    Column("score", ("critic/score/mean",)),
    Column("roc_ms", ("roc/time_ms",), "{:.1f}"),
    Column("step_s", ("timing_s/step",), "{:.1f}"),
)


def derive(row: dict[str, float]) -> dict[str, float]:
    """Add the ratios the table shows but the sampler reports as counts (in place; returns ``row``)."""
    if row.get("roc/rows_before"):
        row.setdefault("roc/acc_before", row.get("roc/pos_before", math.nan) / row["roc/rows_before"])
    if row.get("roc/rows_kept"):
        row.setdefault("roc/acc_after", row.get("roc/kept_pos", math.nan) / row["roc/rows_kept"])
    rejected = [row[k] for k in ("roc/groups_rejected_all_correct", "roc/groups_rejected_all_wrong") if k in row]
    if rejected:
        row.setdefault("roc/groups_rejected", sum(rejected))
    if "roc/time_s" in row:
        row.setdefault("roc/time_ms", 1000.0 * row["roc/time_s"])
    return row


def parse_console(lines: Iterable[str]) -> list[dict[str, float]]:
    """Metrics per step from verl's console logger lines (other lines are ignored)."""
    steps: dict[int, dict[str, float]] = {}
    for raw in lines:
        match = _STEP_LINE.search(_ANSI.sub("", raw.rstrip("\n")))
        if match is None:
            continue
        row: dict[str, float] = {"step": float(match.group(1))}
        for item in match.group(2).split(" - "):
            key, sep, value = item.rpartition(":")
            if not sep or not key:
                continue
            try:
                row[key.strip()] = float(value)
            except ValueError:
                continue  # non-numeric fragment (e.g. a key containing " - "); skip, never crash
        steps.setdefault(int(row["step"]), {}).update(row)
    return [derive(steps[s]) for s in sorted(steps)]


def parse_jsonl(lines: Iterable[str]) -> list[dict[str, float]]:
    """Metrics per step from verl's file logger (``{"step": n, "data": {...}}`` per line)."""
    steps: dict[int, dict[str, float]] = {}
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        try:
            record = json.loads(raw)
            step, data = int(record["step"]), record["data"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed run
        row = {"step": float(step)}
        row.update({k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)})
        steps.setdefault(step, {}).update(row)
    return [derive(steps[s]) for s in sorted(steps)]


def load_metrics(path: str | Path) -> list[dict[str, float]]:
    """Metrics per step from a ``.jsonl`` file-logger file or a console log."""
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    if path.suffix == ".jsonl":
        return parse_jsonl(lines)
    return parse_console(lines)


def _fmt(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def _mean(values: Sequence[float]) -> float | None:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def format_table(steps: Sequence[dict[str, float]], columns: Sequence[Column] = COLUMNS) -> str:
    """A plain-text table, one row per step plus a mean row; columns absent from every step are omitted."""
    resolved: list[tuple[Column, str]] = []
    for col in columns:
        key = next((k for k in col.keys if any(k in s for s in steps)), None)
        if key is not None:
            resolved.append((col, key))
    headers = ["step"] + [c.header for c, _ in resolved]
    rows = [[str(int(s["step"]))] + [_fmt(s.get(k), c.fmt) for c, k in resolved] for s in steps]
    if len(steps) > 1:
        rows.append(["mean"] + [_fmt(_mean([s[k] for s in steps if k in s]), c.fmt) for c, k in resolved])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    legend = ", ".join(f"{c.header}={k}" for c, k in resolved)
    return "\n".join(lines) + (f"\n(columns: {legend})" if legend else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.demo.summary", description=__doc__)
    parser.add_argument("log", help="verl file-logger .jsonl or a console log")
    args = parser.parse_args(argv)
    steps = load_metrics(args.log)
    if not steps:
        print(f"no 'step:' metrics found in {args.log}", file=sys.stderr)
        return 1
    print(format_table(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
