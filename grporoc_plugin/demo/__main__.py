"""``python -m grporoc_plugin.demo`` (``make demo``): a real GRPO-RoC quick start on a laptop CPU, from nothing.

1. assets: an offline BPE tokenizer with a Hermes tool chat template, a tiny random Qwen2, parquet math data;
2. warm start ("non-reasoning SFT first", in miniature): a short SFT on synthetic tool-using trajectories whose tool
   responses come from really executing the code in the plugin sandbox; then a sanity check of sampled tool calls;
3. GRPO-RoC with stock ``python -m verl.trainer.main_ppo`` (V1 trainer) on the CPU backend: multi-turn rollouts with
   the code tool, the ``grporoc`` reward worker, the RoC sampler (2G generated -> G kept per prompt);
4. a per-step summary table parsed from verl's metric log.

Everything lands in ``--out`` (default ``runs/demo``).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

from grporoc_plugin.demo.summary import format_table, load_metrics, parse_console


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


class TrainerEcho:
    """Filters the trainer's console: a compact line + all ``roc/*`` metrics per step, errors, nothing else."""

    SHOW = ("Traceback", "Error", "error:", "FAILED", "Killed")
    HIDE = ("Warning", "warn(")  # optional-engine import warnings etc.
    MAX_ERROR_LINES = 60

    def __init__(self) -> None:
        self.error_lines = 0
        self.started = time.perf_counter()
        self.tail: collections.deque[str] = collections.deque(maxlen=40)

    def __call__(self, line: str) -> str | None:
        self.tail.append(line)
        steps = parse_console([line]) if "step:" in line else []
        if steps:
            return self.format_step(steps[0])
        shown = any(m in line for m in self.SHOW) and not any(m in line for m in self.HIDE)
        if shown and self.error_lines < self.MAX_ERROR_LINES:
            self.error_lines += 1
            return f"[trainer] {line.rstrip()}"
        return None

    def format_step(self, m: dict[str, float]) -> str:
        def get(key: str, fmt: str = "{:.3f}") -> str:
            return fmt.format(m[key]) if key in m else "-"

        head = (
            f"[grpo] step {int(m['step'])}: acc(2G) {get('roc/acc_before')} -> kept {get('roc/acc_after')} | "
            f"rows {get('roc/rows_before', '{:.0f}')} -> {get('roc/rows_kept', '{:.0f}')} | "
            f"tool-error ratio of positives {get('roc/pos_tool_error_ratio_before')} -> "
            f"{get('roc/pos_tool_error_ratio_after')} | score {get('critic/score/mean')} | "
            f"pg_loss {get('actor/pg_loss', '{:.4f}')} grad_norm {get('actor/grad_norm')} | "
            f"{get('timing_s/step', '{:.1f}')}s (elapsed {time.perf_counter() - self.started:.0f}s)"
        )
        roc = [f"{k[4:]}={v:.4g}" for k, v in sorted(m.items()) if k.startswith("roc/")]
        lines, current = [], "        roc/"
        for item in roc:
            if len(current) + len(item) > 118:
                lines.append(current)
                current = "            "
            current += item + " "
        lines.append(current)
        return head + "\n" + "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m grporoc_plugin.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--steps", type=int, default=10, help="GRPO-RoC steps (default: 10)")
    p.add_argument("--sft-steps", type=int, default=1000, help="SFT optimizer steps (default: 1000)")
    p.add_argument("--sft-examples", type=int, default=2048, help="synthetic SFT trajectories (default: 2048)")
    p.add_argument("--skip-sft", action="store_true", help="RL from the random model (no warm start)")
    p.add_argument(
        "--init-model", default=None, help="RL from this warm-started model dir (the demo's tokenizer; skips SFT)"
    )
    p.add_argument("--prompts-per-step", type=int, default=4, help="prompts per GRPO step (default: 4)")
    p.add_argument("--group-size", type=int, default=4, help="G kept per prompt; 2G are generated (default: 4)")
    p.add_argument("--no-roc", action="store_true", help="baseline: same 2G rollouts, no RoC selection")
    p.add_argument("--lr", type=float, default=2e-4, help="GRPO actor learning rate (default: 2e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-min", type=float, default=20.0, help="hard limit for the GRPO run (minutes)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for SFT (default: all cores)")
    args = p.parse_args(argv)
    for name in ("steps", "prompts_per_step", "group_size", "sft_examples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.sft_steps < 0:
        p.error("--sft-steps must be >= 0")
    if args.init_model is not None and not (Path(args.init_model) / "config.json").is_file():
        p.error(f"--init-model {args.init_model}: no config.json there (a saved Hugging Face model directory)")
    if args.init_model is not None and args.skip_sft:
        p.error("--init-model and --skip-sft are exclusive")
    return args


def warm_start(args: argparse.Namespace, paths: dict[str, str], tool_config: Path, out: Path) -> str:
    """SFT the tiny model on executed tool-use trajectories; return the saved model directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.demo.sft import SFTConfig, rollout_eval, sanity_check, train_sft
    from grporoc_plugin.demo.trajectories import ToolRunner, build_trajectories, make_problems

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    model = AutoModelForCausalLM.from_pretrained(paths["model"], dtype=torch.float32)
    runner = ToolRunner(str(tool_config), max_tool_response_length=256)
    problems = make_problems(args.sft_examples, seed=10_000 + args.seed)
    trajectories = build_trajectories(problems, tokenizer, runner, seed=args.seed)
    kinds = collections.Counter(t.kind for t in trajectories)
    statuses = collections.Counter(s for t in trajectories for s in t.tool_statuses)
    lengths = [len(t.input_ids) - t.prompt_length for t in trajectories]
    print(
        f"[sft] {len(trajectories)} trajectories {dict(kinds)}; {sum(statuses.values())} tool calls executed in the "
        f"sandbox {dict(statuses)}; response tokens mean {sum(lengths) / len(lengths):.0f} max {max(lengths)}; "
        f"built in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    example = next(t for t in trajectories if t.kind == "fix")
    print("[sft] example ('fix') response:\n" + tokenizer.decode(example.input_ids[example.prompt_length :]))
    held_out = make_problems(32, seed=20_000 + args.seed)
    before = sanity_check(model, tokenizer, held_out, runner.schemas, runner.tool_name)
    print(before.line().replace("[sft] sanity", "[sft] before SFT: sanity"), flush=True)
    if args.sft_steps:
        train_sft(model, trajectories, tokenizer.pad_token_id, SFTConfig(steps=args.sft_steps, seed=args.seed))
    report = sanity_check(model, tokenizer, held_out, runner.schemas, runner.tool_name)
    print(report.line(), flush=True)
    print("[sft] sampled first turn: " + repr(report.examples[0]), flush=True)
    rollouts = rollout_eval(model, tokenizer, held_out, runner, seed=args.seed)
    print(rollouts.line(), flush=True)
    close = getattr(runner.tools[runner.tool_name].executor(), "close", None)
    if close is not None:  # the sandbox fork server is not needed by this process any more
        close()
    model_dir = out / "sft_model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    print(f"[sft] saved to {model_dir} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return str(model_dir)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    times: dict[str, float] = {}

    _banner("1/4 assets (tokenizer, tiny Qwen2, parquet data)")
    from grporoc_plugin.demo import assets
    from grporoc_plugin.demo.run import GrpoDemoConfig, run_grpo, write_tool_config

    t0 = time.perf_counter()
    paths = assets.build_all(str(out / "assets"))
    tool_config = write_tool_config(out / "tool_config.yaml")
    times["assets"] = time.perf_counter() - t0
    print(f"[assets] {paths} in {times['assets']:.1f}s", flush=True)

    _banner("2/4 SFT warm start on executed tool-use trajectories")
    t0 = time.perf_counter()
    if args.init_model is not None:
        model_path = str(Path(args.init_model).resolve())
        print(f"[sft] skipped: GRPO starts from {model_path}", flush=True)
    else:
        model_path = paths["model"] if args.skip_sft else warm_start(args, paths, tool_config, out)
    times["sft"] = time.perf_counter() - t0

    mode = "no RoC (baseline)" if args.no_roc else "RoC"
    g = args.group_size
    shape = f"{args.prompts_per_step} prompts x 2G={2 * g} -> G={g}"
    _banner(f"3/4 GRPO-{mode} with stock verl.trainer.main_ppo on CPU: {shape}")
    cfg = GrpoDemoConfig(
        model_path=model_path,
        train_file=paths["train"],
        val_file=paths["test"],
        tool_config=str(tool_config),
        out_dir=str(out / "grpo"),
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        group_size=g,
        oversample_n=2 * g,
        roc=not args.no_roc,
        lr=args.lr,
        seed=args.seed,
    )
    echo = TrainerEcho()
    t0 = time.perf_counter()
    rc = run_grpo(cfg, echo=echo, timeout_s=args.timeout_min * 60)
    times["grpo"] = time.perf_counter() - t0
    print(f"[grpo] trainer exited with {rc} after {times['grpo']:.0f}s; log: {cfg.log_path}", flush=True)
    if rc != 0:
        print("[grpo] last trainer output:\n" + "".join(echo.tail), flush=True)

    _banner("4/4 summary (from verl's metrics log)")
    source = cfg.metrics_path if cfg.metrics_path.exists() else cfg.log_path
    steps = load_metrics(source) if source.exists() else []
    if steps:
        print(format_table(steps))
    else:
        print(f"no step metrics in {source}")
    total = time.perf_counter() - t_start
    print(
        f"\ntimes: assets {times['assets']:.0f}s, SFT {times['sft']:.0f}s, GRPO {times['grpo']:.0f}s "
        f"({len(steps)} steps), total {total:.0f}s ({total / 60:.1f} min)"
    )
    return rc if rc != 0 else (0 if len(steps) >= args.steps else 1)


if __name__ == "__main__":
    sys.exit(main())
