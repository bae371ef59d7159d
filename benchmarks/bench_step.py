"""Step time of GRPO-RoC vs. plain GRPO on the same oversampled rollouts, in one invocation (CPU demo backend).

    python benchmarks/bench_step.py [--steps 4] [--model runs/demo/sft_model] [--out runs/bench_step]

Two runs of stock ``python -m verl.trainer.main_ppo`` (V1 trainer, CPU backend, real code tool / sandbox / reward
worker), identical except for RoC:

* ``roc``:      2G rollouts per prompt, the RoC sampler keeps G (``algorithm.roc.enable=True``);
* ``baseline``: the same 2G rollouts per prompt, no selection (``rollout.n=2G``, ``algorithm.roc.enable=False``):
  plain GRPO over the whole group.

From verl's metric log it reports the mean step time and its phases (warm-up step 1 excluded), the ratio RoC /
baseline, and the plugin's own overhead on the step's critical path: the time the sampler spends reading
TransferQueue, selecting and clearing (``roc/time_s``; regeneration after an all-rejected batch is rollout time and
reported apart as ``roc/refill_time_s``) as a share of the step time, which must stay <= 2 %. The reward worker is
not counted here: it replaces verl's scorer and runs inside the streaming reward loop, overlapped with generation;
its cost against verl's ``math_dapo`` is measured by ``benchmarks/bench_reward.py``. A metric the plugin does not
emit is reported as missing (and the check as not measurable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from grporoc_plugin.demo.run import GrpoDemoConfig, run_grpo, write_tool_config
from grporoc_plugin.demo.summary import load_metrics

PHASES = ("timing_s/step", "timing_s/gen", "timing_s/old_log_prob", "timing_s/adv", "timing_s/update_actor")
OVERHEAD_KEYS = ("roc/time_s",)
MAX_OVERHEAD = 0.02


def mean_after_warmup(steps: list[dict[str, float]], key: str) -> float:
    values = [s[key] for s in steps[1:] if key in s] or [s[key] for s in steps if key in s]
    return sum(values) / len(values) if values else math.nan


def prepare(out: Path, model: str | None, seed: int) -> tuple[str, dict[str, str], Path]:
    """Assets + (unless given) the demo's SFT warm start, so rollouts really call the tool."""
    from grporoc_plugin.demo import assets

    paths = assets.build_all(str(out / "assets"))
    tool_config = write_tool_config(out / "tool_config.yaml")
    if model is None:
        from grporoc_plugin.demo.__main__ import parse_args, warm_start

        model = warm_start(parse_args(["--out", str(out), "--seed", str(seed)]), paths, tool_config, out)
    return model, paths, tool_config


def run_variant(name: str, base: dict, out: Path, roc: bool, g: int, timeout_s: float) -> list[dict[str, float]]:
    cfg = GrpoDemoConfig(
        **base,
        out_dir=str(out / name),
        roc=roc,
        group_size=g if roc else 2 * g,
        oversample_n=2 * g,
    )
    t0 = time.perf_counter()
    rc = run_grpo(cfg, echo=lambda line: None, timeout_s=timeout_s)
    wall = time.perf_counter() - t0
    steps = load_metrics(cfg.metrics_path) if cfg.metrics_path.exists() else []
    print(f"[{name}] rc={rc} steps={len(steps)} wall={wall:.0f}s log={cfg.log_path}", flush=True)
    if rc != 0 or len(steps) < base["steps"]:
        raise SystemExit(f"[{name}] trainer failed (rc={rc}); see {cfg.log_path}")
    return steps


def report(results: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    roc, base = results["roc"], results["baseline"]
    print(f"\n{'metric (mean, step>=2)':<28}{'roc':>10}{'baseline':>10}{'roc/base':>10}")
    summary: dict[str, float] = {}
    for key in PHASES:
        a, b = mean_after_warmup(roc, key), mean_after_warmup(base, key)
        ratio = a / b if b else math.nan
        summary[f"{key}/ratio"] = ratio
        print(f"{key:<28}{a:>10.3f}{b:>10.3f}{ratio:>10.3f}")
    for key in ("roc/rows_before", "roc/rows_kept"):
        print(f"{key:<28}{mean_after_warmup(roc, key):>10.1f}{mean_after_warmup(base, key):>10.1f}")
    step_s = mean_after_warmup(roc, "timing_s/step")
    overhead = 0.0
    missing = []
    for key in OVERHEAD_KEYS:
        value = mean_after_warmup(roc, key)
        if math.isnan(value):
            missing.append(key)
            print(f"{key:<28}{'missing':>10}")
        else:
            overhead += value
            print(f"{key:<28}{value:>10.4f}   ({value / step_s:.3%} of the step)")
    summary["overhead_ratio"] = overhead / step_s if not missing else math.nan
    if missing:
        print(f"\nplugin overhead: NOT MEASURABLE, metric(s) {missing} not emitted")
    else:
        verdict = "OK" if summary["overhead_ratio"] <= MAX_OVERHEAD else "TOO HIGH"
        print(f"\nplugin overhead: {summary['overhead_ratio']:.3%} of step time (limit {MAX_OVERHEAD:.0%}): {verdict}")
    summary["step_ratio"] = summary["timing_s/step/ratio"]
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4, help="steps per variant (step 1 is warm-up, excluded)")
    p.add_argument("--model", default=None, help="HF model dir (default: build the demo's SFT warm start)")
    p.add_argument("--out", default="runs/bench_step")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--group-size", type=int, default=4, help="G (2G generated per prompt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-min", type=float, default=15.0, help="per variant")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model, paths, tool_config = prepare(out, args.model, args.seed)
    base = dict(
        model_path=model,
        train_file=paths["train"],
        val_file=paths["test"],
        tool_config=str(tool_config),
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        seed=args.seed,
    )
    results = {}
    for name, roc in (("roc", True), ("baseline", False)):
        results[name] = run_variant(name, base, out, roc, args.group_size, args.timeout_min * 60)
    summary = report(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    # a missing overhead metric is a failure: the benchmark could not check its target
    return 0 if summary["overhead_ratio"] <= MAX_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
