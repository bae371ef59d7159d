"""``curves.png`` and ``summary.md`` of the experiment, from ``metrics.csv`` alone (so they always match it).

``python -m grporoc_plugin.experiments.report DIR`` rebuilds both from ``DIR/metrics.csv``.

Summary statistics: a seed's value over a window is the mean of its steps in the window (missing steps skipped);
arms are summarised as mean +/- sample std over seeds. End-of-run differences (RoC - GRPO, RoC - random) are paired
by seed (same seed = same prompt order and selection seed) with a percentile bootstrap over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grporoc_plugin.experiments.metrics import read_csv

__all__ = [
    "PANELS",
    "bootstrap_mean_ci",
    "end_difference",
    "header_text",
    "plot_curves",
    "summarise",
    "verdict",
    "write_report",
]


@dataclass(frozen=True)
class Panel:
    column: str
    title: str
    fmt: str = "{:.3f}"


#: One panel per metric, in plot order; the first two are the paper's Fig. 4 quantity and its per-trajectory form.
PANELS: tuple[Panel, ...] = (
    Panel("pos_tool_error_ratio", "tool-error ratio of positives\n(failed calls / calls, paper Fig. 4)"),
    Panel("pos_with_error_share", "share of positives with\n>= 1 failed tool call"),
    Panel("acc", "rollout accuracy\n(all sessions, before selection)"),
    Panel("val_acc", "held-out accuracy\n(verl validation, greedy)"),
    Panel("response_len_pos", "response length of positives\n(tokens, model + tool)", "{:.1f}"),
    Panel("response_len_all", "response length, all rollouts\n(tokens, model + tool)", "{:.1f}"),
    Panel("tool_calls_per_traj", "tool calls per trajectory", "{:.2f}"),
    Panel("step_time_s", "wall time per step (s)", "{:.1f}"),
)
COLORS = {"grpo": "tab:blue", "random": "tab:orange", "roc": "tab:green"}
WINDOW = 10
SMOOTH = 5


def _series(rows: Sequence[Mapping[str, object]]) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """arm -> seed -> step -> {column: value} (None cells dropped)."""
    out: dict[str, dict[int, dict[int, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        values = {k: float(v) for k, v in row.items() if k not in ("arm", "seed", "step") and v is not None}
        out[str(row["arm"])][int(row["seed"])][int(row["step"])] = values
    return out


def window_means(
    per_step: Mapping[int, Mapping[str, float]], column: str, first: tuple[int, int], last: tuple[int, int]
) -> tuple[float, float]:
    """A seed's mean of ``column`` over steps in ``first`` and in ``last`` (inclusive bounds); NaN if none."""

    def mean(lo: int, hi: int) -> float:
        values = [v[column] for s, v in per_step.items() if lo <= s <= hi and column in v]
        return float(np.mean(values)) if values else math.nan

    return mean(*first), mean(*last)


def bootstrap_mean_ci(
    values: Sequence[float], *, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap CI of the mean, resampling ``values`` (one per seed)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def _last_step(series: Mapping[str, Mapping[int, Mapping[int, object]]]) -> int:
    return max((s for seeds in series.values() for steps in seeds.values() for s in steps), default=0)


def _fmt_pm(values: Sequence[float], fmt: str) -> str:
    x = [v for v in values if math.isfinite(v)]
    if not x:
        return "-"
    std = float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
    return f"{fmt.format(float(np.mean(x)))} ± {fmt.format(std) if math.isfinite(std) else '-'}"


def summarise(rows: Sequence[Mapping[str, object]], *, header: str = "") -> str:
    """The markdown summary: per arm first/last window mean +/- std over seeds, then RoC - control at the end."""
    series = _series(rows)
    last = _last_step(series)
    first_w, last_w = (0, min(WINDOW, last)), (max(1, last - WINDOW + 1), last)
    arms = [a for a in ("grpo", "random", "roc") if a in series] + sorted(set(series) - {"grpo", "random", "roc"})
    seeds = sorted({s for a in series.values() for s in a})
    lines = [header] if header else []
    lines += [f"**Finding:** {verdict(rows)}", ""]
    lines += [
        f"Arms: {', '.join(arms)}; seeds: {', '.join(map(str, seeds))}; steps: {last}. First window = steps "
        f"{first_w[0]}-{first_w[1]} (step 0 only carries the held-out accuracy before training), last window = steps "
        f"{last_w[0]}-{last_w[1]}. A seed's value is its mean over the window; cells are mean ± std over seeds.",
        "",
        "| metric | arm | first | last |",
        "|---|---|---|---|",
    ]
    ends: dict[str, dict[str, dict[int, float]]] = defaultdict(dict)
    for panel in PANELS:
        for arm in arms:
            firsts, lasts = [], []
            ends[panel.column][arm] = {}
            for seed, per_step in sorted(series[arm].items()):
                f, l_ = window_means(per_step, panel.column, first_w, last_w)
                firsts.append(f)
                lasts.append(l_)
                ends[panel.column][arm][seed] = l_
            lines.append(f"| {panel.column} | {arm} | {_fmt_pm(firsts, panel.fmt)} | {_fmt_pm(lasts, panel.fmt)} |")
    lines += [
        "",
        f"End-of-run differences (last window, paired by seed, 95 % percentile bootstrap over {len(seeds)} seeds; "
        "with this few seeds the interval is coarse):",
        "",
        "| metric | difference | mean | 95 % CI | per seed |",
        "|---|---|---|---|---|",
    ]
    for panel in PANELS:
        for control in ("grpo", "random"):
            if "roc" not in ends[panel.column] or control not in ends[panel.column]:
                continue
            roc, ctl = ends[panel.column]["roc"], ends[panel.column][control]
            diffs = [roc[s] - ctl[s] for s in sorted(set(roc) & set(ctl))]
            mean, lo, hi = bootstrap_mean_ci(diffs)
            per_seed = ", ".join(panel.fmt.format(d) if math.isfinite(d) else "-" for d in diffs)
            lines.append(
                f"| {panel.column} | roc - {control} | {panel.fmt.format(mean)} | "
                f"[{panel.fmt.format(lo)}, {panel.fmt.format(hi)}] | {per_seed} |"
            )
    return "\n".join(lines) + "\n"


def end_difference(rows: Sequence[Mapping[str, object]], column: str, control: str) -> tuple[float, float, float]:
    """(mean, low, high) of roc - ``control`` on ``column`` over the last window, paired by seed."""
    series = _series(rows)
    last = _last_step(series)
    window = (max(1, last - WINDOW + 1), last)
    roc = {s: window_means(v, column, window, window)[1] for s, v in series.get("roc", {}).items()}
    ctl = {s: window_means(v, column, window, window)[1] for s, v in series.get(control, {}).items()}
    return bootstrap_mean_ci([roc[s] - ctl[s] for s in sorted(set(roc) & set(ctl))])


#: The separation criterion fixed in DESIGN.md before the full run: on this metric, over the last window, the 95 %
#: bootstrap CI of RoC - GRPO and of RoC - random must both lie entirely below zero.
PRIMARY = "pos_tool_error_ratio"


def verdict(rows: Sequence[Mapping[str, object]]) -> str:
    """One line: the end-of-run RoC - control differences on the primary metric and whether RoC separates."""
    parts, separated = [], True
    for control in ("grpo", "random"):
        mean, lo, hi = end_difference(rows, PRIMARY, control)
        if not math.isfinite(mean):
            return f"not enough data for a verdict on {PRIMARY} (needs the roc, grpo and random arms)"
        parts.append(f"RoC - {control} = {mean:+.3f} [95 % CI {lo:+.3f}, {hi:+.3f}]")
        separated &= hi < 0
    outcome = "RoC separates from both controls" if separated else "RoC does NOT separate from both controls"
    return f"{outcome} on the tool-error ratio of positives over the last {WINDOW} steps: " + "; ".join(parts) + "."


def header_text(run_info: Mapping[str, object]) -> str:
    """The top of summary.md from ``run_info.json``: how it was produced, the pre-RL calibration, wall times."""
    calibration = run_info["calibration"]
    walls = run_info["run_walls_s"]
    lines = [
        "# GRPO vs random down-sampling vs GRPO-RoC (summary)",
        "",
        f"Command: `{run_info['command']}`"
        + (f" (report rebuilt with `{run_info['resumed_with']}`)" if run_info.get("resumed_with") else "")
        + "  ",
        f"Machine: {run_info['machine']}. Trainer runs: {sum(walls.values()) / 60:.1f} min in all ("
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in walls.items())
        + " min).",
        "",
        f"Warm start (shared by every run): {run_info['warm_start']}. Pre-RL calibration on "
        f"{int(calibration['samples'])} sampled rollouts of fresh problems: (a) accuracy {calibration['acc']:.1%} "
        f"(target 30-70 %); (b) positives with a failed tool call followed by a recovery "
        f"{calibration['pos_error_recovery_share']:.1%} (target >= 30 %); tool-error ratio of positives "
        f"{calibration['pos_tool_error_ratio']:.3f}; accuracy after a clean / a failed first call "
        f"{calibration['acc_after_clean_first_call']:.1%} / {calibration['acc_after_failed_first_call']:.1%}.",
        "",
    ]
    if run_info.get("notes"):  # added by hand to run_info.json: what happened during the run
        lines += ["Notes on this run:", "", *(f"- {note}" for note in run_info["notes"]), ""]
    if run_info.get("failures"):
        lines += [f"**Failed runs (missing from the tables):** {', '.join(run_info['failures'])}", ""]
    return "\n".join(lines)


def _smooth(steps: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """Trailing mean over the last ``width`` logged steps (NaNs skipped)."""
    out = np.full(values.shape, np.nan)
    for i in range(len(values)):
        window = values[max(0, i - width + 1) : i + 1]
        window = window[np.isfinite(window)]
        if window.size:
            out[i] = window.mean()
    return out


def plot_curves(rows: Sequence[Mapping[str, object]], path: str | Path, *, title: str = "") -> None:
    """One panel per metric: per arm, the mean over seeds (line) and +/- one std over seeds (band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(rows)
    last = _last_step(series)
    cols = 4
    nrows = math.ceil(len(PANELS) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, PANELS, strict=False):
        for arm, seeds in series.items():
            steps = np.arange(0, last + 1)
            curves = []
            for per_step in seeds.values():
                values = np.array([per_step.get(int(s), {}).get(panel.column, np.nan) for s in steps])
                if panel.column != "val_acc":
                    values = _smooth(steps, values, SMOOTH)
                curves.append(values)
            data = np.vstack(curves)
            present = np.isfinite(data).any(axis=0)
            if not present.any():
                continue
            with np.errstate(invalid="ignore"):
                mean = np.nanmean(data[:, present], axis=0)
                std = np.nanstd(data[:, present], axis=0, ddof=1) if data.shape[0] > 1 else np.zeros(mean.shape)
            x = steps[present]
            color = COLORS.get(arm)
            ax.plot(x, mean, label=f"{arm} (n={data.shape[0]})", color=color, marker="o" if x.size < 12 else None)
            ax.fill_between(x, mean - np.nan_to_num(std), mean + np.nan_to_num(std), color=color, alpha=0.2)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(PANELS) :]:
        ax.axis("off")
    handles: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper right", ncol=len(handles), fontsize=9)
    suffix = f"lines: mean over seeds of each seed's trailing {SMOOTH}-step mean; bands: ± 1 std over seeds"
    fig.suptitle(f"{title}\n{suffix}" if title else suffix, fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str | Path, *, title: str = "GRPO vs random down-sampling vs GRPO-RoC") -> tuple[Path, Path]:
    """Write ``curves.png`` and ``summary.md`` from ``metrics.csv`` (+ ``run_info.json`` for the header, if any)."""
    out_dir = Path(out_dir)
    info = out_dir / "run_info.json"
    header = header_text(json.loads(info.read_text())) if info.exists() else ""
    rows = read_csv(out_dir / "metrics.csv")
    if not rows:
        raise ValueError(f"{out_dir / 'metrics.csv'} has no rows")
    png, md = out_dir / "curves.png", out_dir / "summary.md"
    plot_curves(rows, png, title=title)
    md.write_text(summarise(rows, header=header), encoding="utf-8")
    return png, md


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.experiments.report", description=__doc__)
    parser.add_argument("out_dir", help="directory holding metrics.csv")
    args = parser.parse_args(argv)
    png, md = write_report(args.out_dir)
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {png} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
