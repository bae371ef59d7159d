"""Verifications/s of the ``grporoc`` reward manager against verl's default ``math_dapo`` scorer, same inputs.

Three levels, all in one run on the same synthetic responses (integer, fractional and symbolic answers; right,
wrong, equivalent-in-another-form and missing):

1. verifier alone: grporoc extraction + VerifierPool (math_verify in subprocesses, hard timeout) vs
   ``verl.utils.reward_score.math_dapo.compute_score``; plus math_verify called in-process, to price the IPC;
2. end to end through ``run_single`` (decode, extraction, verification, counters, penalties), concurrently as
   ``RewardLoopWorker.compute_score_batch`` does: ``grporoc`` vs verl's ``naive`` manager routed to math_dapo.

Run: ``flock /tmp/grporoc_heavy.lock .venv/bin/python benchmarks/bench_reward.py [--n 600]``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from assets_tokenizer import build_tokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls  # noqa: E402
from verl.utils.reward_score import default_compute_score  # noqa: E402
from verl.utils.reward_score.math_dapo import compute_score as math_dapo_score  # noqa: E402

from grporoc_plugin.reward.manager import GrpoRocRewardManager  # noqa: E402
from grporoc_plugin.reward.verify import VerifierPool, extract_answer  # noqa: E402

# (ground truth, answer written by the model): right, right in another form, wrong, missing
_CASES = [
    ("42", "42"),
    ("1000", "1 000"),
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{3}{4}", "\\dfrac{3}{4}"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("17", "18"),
    ("\\frac{1}{3}", "0.33"),
    ("12", None),
]


def synthetic(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(response text, ground truth) pairs; text in the rStar2 format, readable by both scorers."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        gt, ans = rng.choice(_CASES)
        reasoning = " ".join(
            rng.choice(["so", "then", "x", "=", "2", "+", "3", "thus"]) for _ in range(rng.randint(20, 80))
        )
        # math_dapo reads the "Answer: ..." line (Minerva), grporoc the box in the answer tag: same answer for both
        tail = f"<answer>\\boxed{{{ans}}}</answer>\nAnswer: {ans}" if ans is not None else "I give up."
        out.append((f"<reason>{reasoning}</reason> {tail}", gt))
    return out


def as_session(tokenizer, text: str, gt: str) -> DataProto:
    """One trajectory shaped like AgentLoopWorker._compute_score's DataProto."""
    prompt = torch.tensor(tokenizer.encode("<|im_start|>user\nsolve<|im_end|>\n<|im_start|>assistant\n"))
    resp = torch.tensor(tokenizer.encode(text + "<|im_end|>"))
    ids = torch.cat([prompt, resp])
    batch = TensorDict(
        {
            "prompts": prompt[None],
            "responses": resp[None],
            "input_ids": ids[None],
            "attention_mask": torch.ones_like(ids)[None],
            "position_ids": torch.arange(ids.numel())[None],
        },
        batch_size=1,
    )
    nt = {
        "data_source": np.array(["math_dapo"], dtype=object),
        "reward_model": np.array([{"ground_truth": gt}], dtype=object),
        "extra_info": np.array([{}], dtype=object),
        "__num_turns__": np.array([2]),
        "tool_extra_fields": np.array([{}], dtype=object),
        "prompt_len": np.array([prompt.numel()]),
        "response_len": np.array([resp.numel()]),
    }
    return DataProto(batch=batch, non_tensor_batch=nt)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10.1f} /s  ({seconds * 1e3 / n:7.3f} ms each)"


def in_process_math_verify(answer: str | None, gt: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    if answer is None:
        return False
    gold = parse("\\boxed{" + gt + "}", extraction_config=[LatexExtractionConfig()])
    pred = parse("\\boxed{" + answer + "}", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    return bool(gold and pred and verify(gold, pred))


async def end_to_end(manager, sessions: list[DataProto]) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    outs = await asyncio.gather(*[manager.run_single(s) for s in sessions])
    return time.perf_counter() - t0, [float(o["reward_extra_info"]["acc"]) for o in outs]


async def main(n: int, workers: int) -> None:
    data = synthetic(n)
    tokenizer = build_tokenizer()
    print(f"{n} synthetic responses, {len(_CASES)} answer cases, verify_workers={workers}")

    # ---- 1. verifier alone
    t0 = time.perf_counter()
    dapo_acc = [float(math_dapo_score(text, gt)["acc"]) for text, gt in data]
    t_dapo = time.perf_counter() - t0

    pool = VerifierPool(num_workers=workers, timeout_s=5.0)
    pool.warm_up()
    pool.verify("0.5", "1/2")  # first-parse warm-up (lark grammar) in one worker
    answers = [extract_answer(text, "boxed_in_last_answer_tag") for text, _ in data]
    t0 = time.perf_counter()
    seq_acc = [float(pool.verify(a, gt).correct) for a, (_, gt) in zip(answers, data, strict=True)]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    par = await asyncio.gather(*[pool.averify(a, gt) for a, (_, gt) in zip(answers, data, strict=True)])
    t_par = time.perf_counter() - t0
    assert [float(o.correct) for o in par] == seq_acc
    slow = [
        (a, gt)
        for a, (_, gt) in zip(answers, data, strict=True)
        if a is not None and pool.verify(a, gt).status == "verified"
    ]
    in_process_math_verify("0.5", "1/2")
    t0 = time.perf_counter()
    for a, gt in slow:
        in_process_math_verify(a, gt)
    t_inproc = time.perf_counter() - t0
    t0 = time.perf_counter()
    for a, gt in slow:
        pool.verify(a, gt)
    t_pool_slow = time.perf_counter() - t0
    stats = pool.stats
    pool.close()

    print("\n[verifier alone]")
    print(f"  math_dapo.compute_score (string match)       {rate(n, t_dapo)}  acc={np.mean(dapo_acc):.3f}")
    print(f"  grporoc VerifierPool, sequential             {rate(n, t_seq)}  acc={np.mean(seq_acc):.3f}")
    print(f"  grporoc VerifierPool, concurrent (averify)   {rate(n, t_par)}")
    print(f"  ratio grporoc/math_dapo: sequential {t_dapo / t_seq:.3f}x, concurrent {t_dapo / t_par:.3f}x")
    fast = stats.fast_path / max(1, stats.calls)
    print(f"  fast string path share: {fast:.2f}; answers reaching math_verify: {len(slow)}")
    if slow:
        print(f"  math_verify in-process (no timeout safety)   {rate(len(slow), t_inproc)}")
        print(f"  math_verify via worker process (hard timeout){rate(len(slow), t_pool_slow)}")
        print(f"  process-pool overhead per math_verify call: {(t_pool_slow - t_inproc) * 1e3 / len(slow):.3f} ms")

    # ---- 2. end to end through run_single
    cfg = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"response_length": 4096, "n": 1}},
            "reward": {
                "reward_kwargs": {"verify_workers": workers},
                "custom_reward_function": {"path": None},
                "reward_model": {"enable": False},
            },
            "trainer": {"use_v1": True},
        }
    )
    sessions = [as_session(tokenizer, text, gt) for text, gt in data]
    grporoc = get_reward_manager_cls("grporoc")(cfg, tokenizer, None)
    assert isinstance(grporoc, GrpoRocRewardManager)
    grporoc.verifier.warm_up()
    await end_to_end(grporoc, sessions[:20])  # warm-up
    naive = get_reward_manager_cls("naive")(cfg, tokenizer, default_compute_score)
    await end_to_end(naive, sessions[:20])
    t_naive, naive_acc = await end_to_end(naive, sessions)
    t_grp, grp_acc = await end_to_end(grporoc, sessions)
    grporoc.close()
    print("\n[end to end: run_single, all sessions concurrently]")
    print(f"  verl naive + math_dapo                       {rate(n, t_naive)}  acc={np.mean(naive_acc):.3f}")
    print(f"  grporoc                                      {rate(n, t_grp)}  acc={np.mean(grp_acc):.3f}")
    print(f"  ratio grporoc/naive+math_dapo: {t_naive / t_grp:.3f}x")
    disagree = sum(a != b for a, b in zip(grp_acc, naive_acc, strict=True))
    print(f"  samples where the verdicts differ: {disagree}/{n} (math_dapo misses forms like 0.5 vs \\frac{{1}}{{2}})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.workers))
