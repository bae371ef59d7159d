"""GRPO vs random down-sampling vs GRPO-RoC, trained side by side in miniature (rStar2-Agent Fig. 4).

    python -m grporoc_plugin.experiments.roc_vs_grpo --arms grpo,random,roc --seeds 3 --steps 40 --out DIR

1. task + warm start: the demo's arithmetic tool-use task, an SFT warm start calibrated on the pre-RL criteria only
   (:mod:`grporoc_plugin.experiments.warmstart`), cached so every arm and seed starts from the identical checkpoint;
2. for each seed, each arm (:mod:`grporoc_plugin.experiments.arms`): stock ``python -m verl.trainer.main_ppo`` (V1
   trainer, CPU backend) through ``grporoc_plugin.demo.run.run_grpo``, same prompts (``data.seed``), same selection
   seed, same step count, optimizer and loss; only the selection differs;
3. ``DIR/metrics.csv`` (one row per arm, seed, step), ``DIR/curves.png`` and ``DIR/summary.md``
   (:mod:`grporoc_plugin.experiments.report`). Progress (arm, seed, step, ETA) is printed while it runs; finished
   runs are reused by ``--resume``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from grporoc_plugin.experiments.arms import ARM_REGISTRY, get_arm

__all__ = ["ExperimentConfig", "main", "run_experiment", "trainer_config"]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything a run of the experiment depends on (written to ``DIR/config.json``)."""

    arms: tuple[str, ...] = ("grpo", "random", "roc")
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 4
    """G: rollouts trained on per prompt; the 2G arms generate twice as many."""
    lr: float = 2e-4
    test_freq: int = 10
    """Held-out accuracy every this many steps (and before training, and at the last step)."""
    max_prompt_length: int = 80
    """Prompt tokens (the compact template's prompts are 67 tokens; verl pads every row to this length)."""
    max_response_length: int = 384
    """Response tokens (model + tool); a failed call plus its fix must fit (success must not depend on erring)."""
    timeout_min: float = 30.0
    """Hard limit per trainer run."""


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` -> seeds 0, 1, 2; ``4,7`` -> seeds 4 and 7."""
    if "," in text:
        return tuple(int(s) for s in text.split(",") if s.strip())
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds must be >= 1 or a comma-separated list")
    return tuple(range(n))


def parse_args(argv: list[str] | None):
    from grporoc_plugin.experiments.warmstart import TaskConfig, WarmStartConfig

    exp, ws, task = ExperimentConfig(), WarmStartConfig(), TaskConfig()
    p = argparse.ArgumentParser(
        prog="python -m grporoc_plugin.experiments.roc_vs_grpo", description=__doc__.split("\n")[0]
    )
    p.add_argument("--arms", default=",".join(exp.arms), help=f"comma-separated, from {sorted(ARM_REGISTRY)}")
    p.add_argument("--seeds", type=_seeds, default=exp.seeds, help="count (0..N-1) or comma-separated list")
    p.add_argument("--steps", type=int, default=exp.steps, help="RL steps per run")
    p.add_argument("--out", default="runs/roc_vs_grpo", help="output directory")
    p.add_argument("--prompts-per-step", type=int, default=exp.prompts_per_step)
    p.add_argument("--group-size", type=int, default=exp.group_size, help="G (the 2G arms generate 2G)")
    p.add_argument("--lr", type=float, default=exp.lr, help="actor learning rate")
    p.add_argument("--test-freq", type=int, default=exp.test_freq, help="held-out accuracy every N steps")
    p.add_argument("--max-response-length", type=int, default=exp.max_response_length)
    p.add_argument("--timeout-min", type=float, default=exp.timeout_min, help="hard limit per trainer run")
    p.add_argument("--cache", default=None, help="warm-start cache directory (default: OUT/cache)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs found in OUT/runs")
    g = p.add_argument_group("task and warm start (calibrated on the pre-RL criteria only)")
    g.add_argument("--train-prompts", type=int, default=task.n_train)
    g.add_argument("--val-prompts", type=int, default=task.n_val)
    g.add_argument("--hidden-size", type=int, default=ws.hidden_size)
    g.add_argument("--layers", type=int, default=ws.num_hidden_layers)
    g.add_argument("--sft-steps", type=int, default=ws.sft_steps)
    g.add_argument("--sft-examples", type=int, default=ws.sft_examples)
    g.add_argument("--calib-problems", type=int, default=ws.calib_problems)
    g.add_argument("--init-model", default=None, help="warm-start from this tokenizer + model dir (default: build)")
    args = p.parse_args(argv)
    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
    for arm in arms:
        try:
            get_arm(arm)
        except ValueError as exc:
            p.error(str(exc))
    if args.sft_steps < 0:
        p.error("--sft-steps must be >= 0")
    for name in ("steps", "prompts_per_step", "group_size", "train_prompts", "val_prompts", "sft_examples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    exp = ExperimentConfig(
        arms=arms,
        seeds=args.seeds,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        lr=args.lr,
        test_freq=args.test_freq,
        max_response_length=args.max_response_length,
        timeout_min=args.timeout_min,
    )
    task = dataclasses.replace(task, n_train=args.train_prompts, n_val=args.val_prompts)
    ws = dataclasses.replace(
        ws,
        hidden_size=args.hidden_size,
        intermediate_size=4 * args.hidden_size,
        num_hidden_layers=args.layers,
        sft_steps=args.sft_steps,
        sft_examples=args.sft_examples,
        calib_problems=args.calib_problems,
        init_model=str(Path(args.init_model).resolve()) if args.init_model else None,
    )
    return args, exp, task, ws


class Progress:
    """Echo filter for the trainer's console: one line per step with arm, seed, step and the experiment's ETA."""

    SHOW = ("Traceback", "Error", "error:", "FAILED", "Killed")
    HIDE = ("Warning", "warn(", "DEBUG")

    def __init__(self, total_runs: int, steps: int):
        self.total_runs, self.steps = total_runs, steps
        self.run_walls: dict[str, list[float]] = collections.defaultdict(list)
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=60)
        self.label, self.kind, self.index = "", "", 0
        self.run_started = self.last_step_at = time.monotonic()
        self.step_walls: list[float] = []
        self.errors_shown = 0

    def start_run(self, index: int, arm: str, seed: int, kind: str) -> None:
        self.index, self.label, self.kind = index, f"{arm} seed {seed}", kind
        self.run_started = self.last_step_at = time.monotonic()
        self.step_walls = []
        self.tail.clear()

    def end_run(self) -> float:
        wall = time.monotonic() - self.run_started
        self.run_walls[self.kind].append(wall)
        return wall

    def eta_s(self, done_steps: int) -> float:
        """Seconds left: this run's remaining steps at its pace, then the remaining runs at past runs' walls."""
        per_step = sum(self.step_walls[1:]) / max(1, len(self.step_walls) - 1) if len(self.step_walls) > 1 else None
        elapsed = time.monotonic() - self.run_started
        if per_step is None:
            per_step = elapsed / max(1, done_steps)
        this_run = per_step * (self.steps - done_steps)
        past = [w for walls in self.run_walls.values() for w in walls]
        per_run = sum(past) / len(past) if past else elapsed + this_run
        return this_run + per_run * (self.total_runs - self.index - 1)

    def __call__(self, line: str) -> str | None:
        from grporoc_plugin.demo.summary import parse_console

        self.tail.append(line)
        steps = parse_console([line]) if "step:" in line else []
        if not steps:
            shown = any(m in line for m in self.SHOW) and not any(m in line for m in self.HIDE)
            if shown and self.errors_shown < 40:
                self.errors_shown += 1
                return f"    [trainer] {line.rstrip()}"
            return None
        m = steps[0]
        now = time.monotonic()
        self.step_walls.append(now - self.last_step_at)
        self.last_step_at = now
        done = int(m["step"])

        def get(key: str, fmt: str = "{:.2f}") -> str:
            return fmt.format(m[key]) if key in m else "-"

        val = next((v for k, v in m.items() if k.startswith("val-core/") and "/acc/mean@" in k), None)
        eta = self.eta_s(done)
        return (
            f"[run {self.index + 1}/{self.total_runs} {self.label}] step {done}/{self.steps}: "
            f"acc {get('rollout/acc')} | pos tool-error ratio {get('rollout/pos_tool_error_ratio', '{:.3f}')} | "
            f"pos w/ error {get('rollout/pos_with_error_share')} | len pos {get('rollout/response_len_pos', '{:.0f}')}"
            f" | trained {get('roc/rows_kept', '{:.0f}')}/{get('rollout/sessions', '{:.0f}')}"
            + (f" | held-out acc {val:.3f}" if val is not None else "")
            + f" | {get('timing_s/step', '{:.1f}')}s | elapsed {(now - self.started) / 60:.1f} min, "
            f"ETA {eta / 60:.1f} min"
        )


def _run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / f"{arm}-seed{seed}"


def _finished(run_dir: Path, steps: int) -> bool:
    done = run_dir / "done.json"
    return done.exists() and json.loads(done.read_text()).get("steps") == steps


def trainer_config(
    exp: ExperimentConfig, arm_name: str, seed: int, paths: dict[str, str], model_dir: str, run_dir: Path
):
    """The ``GrpoDemoConfig`` of one run: shared settings, then the arm's selection overrides, then the seed."""
    from grporoc_plugin.demo.run import GrpoDemoConfig

    arm = get_arm(arm_name)
    g = exp.group_size
    overrides = arm.overrides(g)
    return GrpoDemoConfig(
        model_path=model_dir,
        train_file=paths["train"],
        val_file=paths["val"],
        tool_config=paths["tool_config"],
        out_dir=str(run_dir),
        steps=exp.steps,
        prompts_per_step=exp.prompts_per_step,
        group_size=g,
        oversample_n=arm.generated_per_prompt(g),
        roc="algorithm.roc.enable=True" in overrides,
        max_prompt_length=exp.max_prompt_length,
        max_response_length=exp.max_response_length,
        lr=exp.lr,
        seed=seed,
        extra_overrides=(
            *overrides,
            f"algorithm.roc.seed={seed}",
            "trainer.val_before_train=True",
            f"trainer.test_freq={exp.test_freq}",
            "trainer.project_name=grporoc_roc_vs_grpo",
            f"trainer.experiment_name={arm_name}-seed{seed}",
        ),
    )


def collect(out: Path, exp: ExperimentConfig) -> list[dict[str, object]]:
    """metrics.csv rows of every (arm, seed) run found under ``out/runs``."""
    from grporoc_plugin.demo.summary import load_metrics
    from grporoc_plugin.experiments.metrics import rows_from_steps

    rows: list[dict[str, object]] = []
    for seed in exp.seeds:
        for arm in exp.arms:
            path = _run_dir(out, arm, seed) / "metrics.jsonl"
            if path.exists():
                rows += rows_from_steps(arm, seed, load_metrics(path))
    rows.sort(key=lambda r: (exp.arms.index(str(r["arm"])), int(r["seed"]), int(r["step"])))
    return rows


def _warm_start(args, task, ws, out: Path):
    """Phase 1: task files and the (cached) warm start; prints the pre-RL criteria. Returns (paths, warm start)."""
    from grporoc_plugin.experiments.warmstart import build_task, build_warm_start, held_out_expressions

    print(f"=== 1/3 task and warm start ({out}) ===", flush=True)
    paths = build_task(out / "task", task)
    warm = build_warm_start(
        ws, paths["tool_config"], args.cache or out / "cache", exclude=held_out_expressions(paths["val"])
    )
    calib = warm.calibration
    ok_a = 0.30 <= calib["acc"] <= 0.70
    ok_b = calib["pos_error_recovery_share"] >= 0.30
    print(
        f"[warm-start] pre-RL criteria: (a) acc {calib['acc']:.1%} {'ok' if ok_a else 'OUTSIDE 30-70 %'}; "
        f"(b) positives with a failed call then a recovery {calib['pos_error_recovery_share']:.1%} "
        f"{'ok' if ok_b else 'BELOW 30 %'}",
        flush=True,
    )
    return paths, warm


def _train_all(exp: ExperimentConfig, out: Path, paths: dict[str, str], model_dir: str, resume: bool):
    """Phase 2: every (seed, arm) run in turn; returns (wall seconds per run, failed runs)."""
    from grporoc_plugin.demo.run import run_grpo
    from grporoc_plugin.experiments.metrics import write_csv

    plan = [(arm, seed) for seed in exp.seeds for arm in exp.arms]
    print(f"=== 2/3 {len(plan)} trainer runs ({exp.steps} steps each) ===", flush=True)
    progress = Progress(len(plan), exp.steps)
    failures: list[str] = []
    walls: dict[str, float] = {}
    for index, (arm, seed) in enumerate(plan):
        run_dir, name, kind = _run_dir(out, arm, seed), f"{arm}-seed{seed}", str(get_arm(arm).generated_per_prompt(2))
        if resume and _finished(run_dir, exp.steps):
            print(f"[run {index + 1}/{len(plan)} {arm} seed {seed}] finished earlier: reused", flush=True)
            walls[name] = json.loads((run_dir / "done.json").read_text())["wall_s"]
            progress.run_walls[kind].append(walls[name])
            continue
        (run_dir / "done.json").unlink(missing_ok=True)
        progress.start_run(index, arm, seed, kind=kind)
        print(f"[run {index + 1}/{len(plan)} {arm} seed {seed}] starting stock verl.trainer.main_ppo", flush=True)
        rc = run_grpo(
            trainer_config(exp, arm, seed, paths, model_dir, run_dir), echo=progress, timeout_s=exp.timeout_min * 60
        )
        walls[name] = progress.end_run()
        if rc != 0:
            failures.append(f"{name} (exit {rc})")
            print(f"[run {arm} seed {seed}] FAILED with exit code {rc}; last output:\n" + "".join(progress.tail))
        else:
            (run_dir / "done.json").write_text(json.dumps({"steps": exp.steps, "wall_s": walls[name], "rc": rc}))
        write_csv(out / "metrics.csv", collect(out, exp))  # partial results stay readable
    return walls, failures


def run_experiment(argv: list[str] | None = None) -> int:
    """The whole experiment (see the module docstring); returns the exit code."""
    from grporoc_plugin.experiments.metrics import write_csv
    from grporoc_plugin.experiments.report import write_report

    args, exp, task, ws = parse_args(argv)
    t_start = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv_used = argv if argv is not None else sys.argv[1:]
    command = "python -m grporoc_plugin.experiments.roc_vs_grpo " + shlex.join(argv_used)
    previous, resumed_with = out / "command.txt", None
    if args.resume and previous.exists():  # the runs were started by the first command; record both
        first = previous.read_text().splitlines()[0]
        command, resumed_with = first, (command if command != first else None)
    (out / "command.txt").write_text(command + "\n")
    config = {name: dataclasses.asdict(c) for name, c in (("experiment", exp), ("task", task), ("warm_start", ws))}
    (out / "config.json").write_text(json.dumps(config, indent=2))

    paths, warm = _warm_start(args, task, ws, out)
    walls, failures = _train_all(exp, out, paths, warm.model_dir, args.resume)

    print("=== 3/3 metrics.csv, curves.png, summary.md ===", flush=True)
    rows = collect(out, exp)
    write_csv(out / "metrics.csv", rows)
    policy = (
        f"model from {ws.init_model}"
        if ws.init_model
        else f"{ws.num_hidden_layers}-layer hidden-{ws.hidden_size} Qwen2"
    )
    run_info = {
        "command": command,
        "resumed_with": resumed_with,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs while it ran)",
        "calibration": warm.calibration,
        "warm_start": (
            f"{policy}, {ws.sft_steps} SFT steps on {ws.sft_examples} executed trajectories (mix {dict(ws.mix)}), "
            f"SFT loss {warm.sft_losses[0]:.2f} -> {warm.sft_losses[1]:.3f}, built in {warm.build_s / 60:.1f} min"
        ),
        "run_walls_s": walls,
        "failures": failures,
    }
    (out / "run_info.json").write_text(json.dumps(run_info, indent=2))
    if not rows:
        return 1
    png, md = write_report(out)
    print(md.read_text(encoding="utf-8"))
    total = time.monotonic() - t_start
    print(f"wrote {out / 'metrics.csv'}, {png}, {md}; this invocation took {total / 60:.1f} min", flush=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return run_experiment(argv)


if __name__ == "__main__":
    sys.exit(main())
