"""CPU backend rollout benchmark: 64 concurrent agent-loop requests, batched vs one at a time, same run, same requests.

Two ``hf`` rollout servers (``grporoc_plugin.cpu.backend.HFRolloutServer``) run as Ray actors, exactly as the CPU
backend deploys them, on the same tiny offline model: one batches concurrent requests (the default: up to 64 per
``generate``, 10 ms collection window), the other serves them one at a time (``hf_max_batch_size=1``, no window).
Both get the same 64 first-turn agent-loop prompts (the quick-start questions under the chat template with the code
tool's schema) with greedy sampling and log-probs, sent concurrently like verl's agent-loop workers do. Reported:
wall time and generated tokens/s of each (median of ``--repeats`` rounds, the two servers alternating), the
speed-up, the servers' own ``generate()`` counts (``get_stats``), and whether every request's greedy tokens are
identical (and the largest log-prob difference).

Exits non-zero when the tokens differ or the speed-up misses the target (>= 5x).

    flock /tmp/grporoc_heavy.lock python benchmarks/bench_cpu_rollout.py [--repeats 3] [--requests 64] [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

TARGET_SPEEDUP = 5.0


def build_prompts(model_dir: str, train_file: str, n: int) -> list[list[int]]:
    """The agent loop's first-turn prompt ids for the first ``n`` training questions (cycled if fewer)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from grporoc_plugin.demo.assets import TOOL_SCHEMA

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    questions = [[dict(m) for m in p] for p in pd.read_parquet(train_file)["prompt"]]
    prompts = []
    for i in range(n):
        text = tokenizer.apply_chat_template(
            questions[i % len(questions)], tools=[TOOL_SCHEMA], add_generation_prompt=True, tokenize=False
        )
        prompts.append(tokenizer.encode(text, add_special_tokens=False))
    return prompts


async def run_round(server, prompts: list[list[int]], max_tokens: int) -> tuple[float, list]:
    """All requests at once (as concurrent agent loops send them); returns (wall seconds, outputs in order)."""
    params = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "logprobs": True, "max_tokens": max_tokens}
    start = time.perf_counter()
    outs = await asyncio.gather(
        *[
            server.generate.remote(request_id=f"r{i}", prompt_ids=p, sampling_params=params)
            for i, p in enumerate(prompts)
        ]
    )
    return time.perf_counter() - start, outs


def start_server(ray, model_dir: str, max_batch: int, window_ms: float, prompt_len: int, max_tokens: int):
    from verl.workers.config import HFModelConfig, RolloutConfig

    from grporoc_plugin.cpu.backend import HFRolloutServer

    config = RolloutConfig(
        name="hf",
        prompt_length=prompt_len,
        response_length=max_tokens,
        tensor_model_parallel_size=1,
        custom={"hf_max_batch_size": max_batch, "hf_batch_window_ms": window_ms},
    )
    actor = ray.remote(HFRolloutServer).options(num_cpus=0, max_concurrency=1000)
    return actor.remote(config=config, model_config=HFModelConfig(path=model_dir), replica_rank=0)


async def bench(ray, args, model_dir: str, prompts: list[list[int]]) -> int:
    prompt_len = max(len(p) for p in prompts)
    servers = {
        "batched": start_server(ray, model_dir, 64, 10.0, prompt_len, args.tokens),
        "one at a time": start_server(ray, model_dir, 1, 0.0, prompt_len, args.tokens),
    }
    for server in servers.values():  # warm-up (model load, first-call allocations), not timed
        await run_round(server, prompts[:2], 4)
    before = {name: await s.get_stats.remote() for name, s in servers.items()}
    walls: dict[str, list[float]] = {name: [] for name in servers}
    outputs: dict[str, list] = {}
    for r in range(args.repeats):
        order = list(servers) if r % 2 == 0 else list(reversed(servers))  # alternate: load drifts on a shared box
        for name in order:
            wall, outs = await run_round(servers[name], prompts, args.tokens)
            walls[name].append(wall)
            outputs.setdefault(name, outs)
    print(
        f"{len(prompts)} concurrent requests, prompts {min(map(len, prompts))}-{prompt_len} tokens, greedy, "
        f"{args.tokens} new tokens max, {args.repeats} rounds"
    )
    for name, server in servers.items():
        stats = await server.get_stats.remote()
        batches = (stats["batches"] - before[name]["batches"]) / args.repeats
        tokens = sum(len(o.token_ids) for o in outputs[name])
        wall = statistics.median(walls[name])
        rounds = " ".join(f"{w:.2f}" for w in walls[name])
        print(
            f"  {name:13s}: {wall:6.2f} s (rounds: {rounds})  {tokens / wall:7.0f} tok/s  "
            f"{batches:.0f} generate() calls per round, largest batch {stats['max_batch']}"
        )
    speedup = statistics.median(walls["one at a time"]) / statistics.median(walls["batched"])
    same = [b.token_ids == s.token_ids for b, s in zip(outputs["batched"], outputs["one at a time"], strict=True)]
    diff = max(
        abs(x - y)
        for b, s in zip(outputs["batched"], outputs["one at a time"], strict=True)
        for x, y in zip(b.log_probs, s.log_probs, strict=True)
    )
    ok_tokens, ok_speed = all(same), speedup >= args.target
    print(
        f"greedy tokens identical: {sum(same)}/{len(same)} requests ({'PASS' if ok_tokens else 'FAIL'}); "
        f"largest log-prob difference {diff:.2e}"
    )
    print(
        f"speed-up batched vs one at a time: {speedup:.1f}x (target >= {args.target:g}x: "
        f"{'PASS' if ok_speed else 'FAIL'})"
    )
    for server in servers.values():
        ray.kill(server)
    return 0 if ok_tokens and ok_speed else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=64, help="concurrent requests (default: 64)")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens per request (default: 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per server (default: 3)")
    ap.add_argument("--target", type=float, default=TARGET_SPEEDUP, help=f"speed-up target (default: {TARGET_SPEEDUP})")
    args = ap.parse_args()
    import ray

    from grporoc_plugin.demo.assets import build_all

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; server threads 1 (the default)")
    with tempfile.TemporaryDirectory(prefix="grr_bench_") as tmp:
        paths = build_all(os.path.join(tmp, "assets"))
        prompts = build_prompts(paths["model"], paths["train"], args.requests)
        ray_tmp = tempfile.mkdtemp(prefix="grr_", dir="/tmp")  # short: Unix socket paths stay < 108 chars
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
        try:
            return asyncio.run(bench(ray, args, paths["model"], prompts))
        finally:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
