"""Answer verification of the ``grporoc`` reward manager: fast path + verdict cache vs the first release and vs verl.

All in one run, on the same inputs:

1. **Per answer**, ``VerifierPool.averify`` over a batch gathered concurrently (as the reward loop does), cold cache:

   * *first release*: its verifier, reproduced here: a normalised string match (``_legacy_normalize``, copied from
     release 1), else math_verify in the worker pool; everything on the pool's threads;
   * *math_verify only*: every answer to the workers (``fast_path=False``), the reference verdicts;
   * *grporoc*: fast path (plain numbers, normalised exact match) + (answer, ground truth) cache + workers.

   On three inputs. Rollouts: P prompts x G rollouts, answers repeating within a group as they do (the correct
   answer, 10 % of the time in another form such as ``x = 12``, ``12^\\circ``, ``12,000``; one to three recurring
   wrong answers, sometimes a fraction or a radical; a few one-off answers; 5 % without an answer), with integer
   ground truths as in the paper's RL data (§4.2, the target: >= 10x the first release) and with a MATH-like mix
   (30 % fractions, radicals, multiples of pi, intervals, choices; printed, no target). And a seeded sample of the
   answer-pair corpus (``tests/reward/data/answer_pairs.jsonl``: every pair distinct, so no cache hits, and many
   hard forms; no target). The grporoc verdicts must equal math_verify-only's on all three.
2. **End to end** through ``run_single`` of the real reward-loop managers (decode, extraction, verification,
   counters, penalties), all sessions concurrently as ``RewardLoopWorker.compute_score_batch`` runs them, on
   sessions built from the integer rollouts (short responses, half with a tool call and its response, ``model_spans`` as
   ``grporoc_tool_agent`` writes them): ``grporoc`` vs verl's ``naive`` manager routed to ``math_dapo`` (verl's
   default for this data source; it reads the same answer from an ``Answer:`` line). Target: >= 0.9x.

Each timing is the best of ``--repeats`` runs (end to end: twice as many, the two managers interleaved), each with
cold caches. Prints the ratios, the share of answers
decided without math_verify and the cache hit rate; exits 1 when a target is missed or a verdict differs.

Run: ``flock /tmp/grporoc_heavy.lock .venv/bin/python benchmarks/bench_reward.py``
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "reward" / "data"))

from assets_tokenizer import build_tokenizer  # noqa: E402
from make_answer_pairs import load_corpus  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls  # noqa: E402
from verl.utils.reward_score import default_compute_score  # noqa: E402
from verl.utils.reward_score.math_dapo import compute_score as math_dapo_score  # noqa: E402

from grporoc_plugin.reward import fastpath  # noqa: E402
from grporoc_plugin.reward.fastpath import VerdictCache  # noqa: E402
from grporoc_plugin.reward.manager import GrpoRocRewardManager  # noqa: E402
from grporoc_plugin.reward.verify import VerifierPool, VerifyOutcome, ground_truth_candidates  # noqa: E402

PER_ANSWER_TARGET = 10.0  # x the first release's verification throughput, realistic rollouts
END_TO_END_TARGET = 0.9  # x verl naive + math_dapo through run_single

Pair = tuple[str | None, str]  # (extracted answer or None, ground truth)


# ------------------------------------------------------------------------------------------- realistic rollouts
def _integer_problem(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """The paper's RL data (§4.2): integer answers only. (ground truth, other forms of it, plausible wrong answers)"""
    n = rng.choice([rng.randint(0, 999), rng.randint(0, 99), rng.randint(1000, 10**5)])
    alternates = [f"x = {n}", rf"{n}^\circ", rf"\${n}", f"{n}.0", rf"{n} \text{{ cm}}"]
    if n >= 1000:
        alternates.append(f"{n:,}")
    wrong = [str(n + 1), str(n - 1), str(2 * n), str(n // 2), str(n + 10), str(-n)]
    b = rng.randint(2, 9)
    odd = [rf"\frac{{{n * b + 1}}}{{{b}}}", rf"{rng.randint(2, 9)}\sqrt{{{rng.choice([2, 3, 5])}}}", f"{n}.5"]
    return str(n), alternates, wrong + [rng.choice(odd)]


def _mixed_problem(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A MATH-like mix: 70 % integers, the rest fractions, radicals, multiples of pi, intervals, choices."""
    kind = rng.choices(["int", "frac", "radical", "pi", "interval", "choice"], weights=[70, 10, 5, 3, 7, 5])[0]
    if kind == "int":
        return _integer_problem(rng)
    if kind == "frac":
        b = rng.randint(2, 30)
        a = rng.choice([k for k in range(1, 3 * b) if np.gcd(k, b) == 1] or [1])
        gold = rf"\frac{{{a}}}{{{b}}}"
        alternates = [rf"\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", rf"\frac{{{2 * a}}}{{{2 * b}}}"]
        if 10**6 % b == 0:
            alternates.append(str(float(Fraction(a, b))))
        wrong = [rf"\frac{{{b}}}{{{a}}}", rf"\frac{{{a + 1}}}{{{b}}}", f"{float(Fraction(a, b)):.2f}", str(a)]
        return gold, alternates, wrong
    if kind == "radical":
        k, n = rng.randint(2, 6), rng.choice([2, 3, 5, 6, 7])
        gold = rf"{k}\sqrt{{{n}}}"
        return gold, [rf"\sqrt{{{k * k * n}}}", rf"{k} \sqrt{{{n}}}"], [rf"{k + 1}\sqrt{{{n}}}", rf"\sqrt{{{n}}}"]
    if kind == "pi":
        k = rng.randint(2, 12)
        return rf"{k}\pi", [rf"{k} \pi", rf"\pi {k}"], [rf"{k + 1}\pi", rf"{2 * k}\pi", str(k)]
    if kind == "interval":
        a = rng.randint(-9, 5)
        b = a + rng.randint(1, 9)
        gold = f"({a},{b})"
        return gold, [f"({a}, {b})", rf"\left({a},{b}\right)"], [f"[{a},{b}]", f"({a},{b + 1})", f"({b},{a})"]
    letter = rng.choice("ABCDE")
    others = [c for c in "ABCDE" if c != letter]
    return rf"\text{{({letter})}}", [f"({letter})", letter], [rf"\text{{({c})}}" for c in rng.sample(others, 2)]


PROBLEMS = {"integer": _integer_problem, "mixed": _mixed_problem}


def rollouts(prompts: int, group: int, regime: str, seed: int = 0) -> list[Pair]:
    """``prompts`` x ``group`` (answer, ground truth) pairs, group by group; ``regime`` is a key of PROBLEMS."""
    rng = random.Random(seed)
    out: list[Pair] = []
    for _ in range(prompts):
        gold, alternates, wrong = PROBLEMS[regime](rng)
        p_correct = rng.uniform(0.05, 0.95)
        recurring = rng.sample(wrong, k=min(len(wrong), rng.randint(1, 3)))
        for _ in range(group):
            r = rng.random()
            if r < 0.05:
                answer = None
            elif r < 0.05 + 0.95 * p_correct:
                answer = gold if rng.random() < 0.85 else rng.choice(alternates)
            elif rng.random() < 0.8:
                answer = rng.choice(recurring)
            else:  # a one-off answer
                answer = str(rng.randint(-100, 10**4)) if rng.random() < 0.7 else rf"\frac{{{rng.randint(1, 99)}}}{{7}}"
            out.append((answer, gold))
    return out


def corpus_sample(n: int, seed: int = 0) -> list[Pair]:
    pairs = [p for p in load_corpus() if p["mv"] in (True, False) and len(p["golds"]) == 1]
    return [(p["answer"], p["golds"][0]) for p in random.Random(seed).sample(pairs, min(n, len(pairs)))]


# ------------------------------------------------------------------------------------------------ first release
_SPACING = re.compile(r"\\[,!;: ]|\\quad|\\qquad|~|\s+")
_WRAPPERS = re.compile(r"\\(?:left|right|displaystyle)")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _legacy_normalize(answer: str) -> str:
    """Release 1's ``normalize_answer``, verbatim: the string match it tried before math_verify."""
    s = answer.strip().strip("$").strip()
    s = _TEXT.sub(r"\1", s)
    s = _WRAPPERS.sub("", s)
    s = _SPACING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if s.startswith("+"):
        s = s[1:]
    return s


class FirstReleaseVerifier:
    """Release 1's ``VerifierPool.verify`` on top of a math_verify-only pool, run on the pool's threads as it was."""

    def __init__(self, pool: VerifierPool) -> None:
        self.pool = pool
        self.string_matches = 0

    def verify(self, answer: str | None, ground_truth: str) -> VerifyOutcome:
        golds = ground_truth_candidates(ground_truth)
        if answer is not None and answer.strip() and len(answer) <= self.pool.max_answer_chars:
            pred = _legacy_normalize(answer)
            if any(pred == _legacy_normalize(g) for g in golds):
                self.string_matches += 1
                return VerifyOutcome(True, "fast")
        return self.pool.verify(answer, ground_truth)

    async def averify(self, answer: str | None, ground_truth: str) -> VerifyOutcome:
        return await asyncio.get_running_loop().run_in_executor(self.pool._executor, self.verify, answer, ground_truth)


# -------------------------------------------------------------------------------------------------- measurement
def _cold(pool: VerifierPool) -> None:
    """Forget every verdict and normalised string, as at the start of a training step."""
    pool.cache = VerdictCache(pool.cache.maxsize)
    fastpath.clear_caches()


async def _timed(verify: Callable, pairs: list[Pair], repeats: int, reset: Callable[[], None]) -> tuple[float, list]:
    best, outcomes = float("inf"), []
    for _ in range(repeats):
        reset()
        t0 = time.perf_counter()
        outcomes = await asyncio.gather(*[verify(a, g) for a, g in pairs])
        best = min(best, time.perf_counter() - t0)
    return best, outcomes


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:10.0f} /s  ({seconds * 1e3 / n:7.3f} ms each)"


async def per_answer(name: str, pairs: list[Pair], workers: int, repeats: int) -> tuple[float, bool]:
    """Prints one block; returns (grporoc / first release, verdicts identical)."""
    reference = VerifierPool(num_workers=workers, timeout_s=30.0, fast_path=False)
    grporoc = VerifierPool(num_workers=workers, timeout_s=30.0)
    try:
        reference.warm_up()
        grporoc.warm_up()
        legacy = FirstReleaseVerifier(reference)
        for pool in (reference, grporoc):  # first-parse warm-up (lark/antlr) in the workers
            await asyncio.gather(*[pool.averify("x=1", "1") for _ in range(workers)])
        t_ref, ref = await _timed(reference.averify, pairs, repeats, lambda: None)
        t_legacy, old = await _timed(legacy.averify, pairs, repeats, lambda: None)
        stats_before = grporoc.stats.calls
        t_new, new = await _timed(grporoc.averify, pairs, repeats, lambda: _cold(grporoc))
        last = _last_run_stats(grporoc, stats_before, repeats, len(pairs))
    finally:
        reference.close()
        grporoc.close()
    same = [o.correct for o in new] == [o.correct for o in ref]
    legacy_diff = sum(o.correct != r.correct for o, r in zip(old, ref, strict=True))
    answered = sum(a is not None and a.strip() != "" for a, _ in pairs)
    ratio = t_legacy / t_new
    print(f"\n[per answer: {name}, {len(pairs)} answers, {answered} with an answer, averify gathered]")
    print(f"  first release (string match + math_verify)   {rate(len(pairs), t_legacy)}")
    print(f"  math_verify only                             {rate(len(pairs), t_ref)}")
    print(f"  grporoc (fast path + cache + math_verify)    {rate(len(pairs), t_new)}")
    print(f"  ratio grporoc / first release: {ratio:.1f}x    grporoc / math_verify only: {t_ref / t_new:.1f}x")
    hit_rate = last["cache_hits"] / max(1, last["cache_lookups"])
    print(
        f"  decided without math_verify: {last['without'] / max(1, answered):.1%} of answers "
        f"(fast path {last['fast_path'] / max(1, answered):.1%}, cache {last['cache_hits'] / max(1, answered):.1%}); "
        f"cache hit rate {hit_rate:.1%} of lookups; math_verify calls {last['worker_calls']}"
    )
    print(f"  verdicts identical to math_verify only: {same}; first release differs on {legacy_diff}")
    return ratio, same


def math_dapo_per_answer(pairs: list[Pair], repeats: int) -> None:
    """verl's default scorer for this data source on the same answers, for scale (a string comparison)."""
    texts = [(f"so the result follows.\nAnswer: {a}" if a is not None else "I give up.", g) for a, g in pairs]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for text, gold in texts:
            math_dapo_score(text, gold)
        best = min(best, time.perf_counter() - t0)
    print(f"  (verl math_dapo.compute_score, same answers  {rate(len(pairs), best)}; a string comparison)")


def _last_run_stats(pool: VerifierPool, calls_before: int, repeats: int, n: int) -> dict[str, int]:
    """Counters of the last repeat: every repeat is cold, so the totals split evenly."""
    s = pool.stats
    assert s.calls - calls_before == repeats * n
    per = {k: getattr(s, k) // repeats for k in ("cache_hits", "fast_path", "worker_calls", "no_answer", "rejected")}
    per["without"] = per["cache_hits"] + per["fast_path"]
    per["cache_lookups"] = n - per["no_answer"] - per["rejected"]
    return per


# ---------------------------------------------------------------------------------------------------- end to end
TOOL_CALL = (  # model-generated
    "\n<tool_call>\n"
    '{"name": "python_code_with_standard_io", "arguments": {"code": "print(6 * 7)", "input": ""}}\n'
    "</tool_call><|im_end|>\n"
)
TOOL_RESPONSE = (  # the tool's turn, response_mask 0
    "<|im_start|>user\n<tool_response>\nTool call success\nstdout: 42\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)


def sessions(tokenizer, pairs: list[Pair], seed: int = 0) -> list[DataProto]:
    """One DataProto per rollout, shaped like AgentLoopWorker._compute_score's, with model_spans."""
    rng = random.Random(seed)
    words = ["so", "then", "x", "=", "2", "+", "3", "thus", "we", "get", "the", "sum"]
    prompt = torch.tensor(tokenizer.encode("<|im_start|>user\nsolve<|im_end|>\n<|im_start|>assistant\n"))
    out = []
    for answer, gold in pairs:
        reasoning = " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))
        tail = f"<answer>\\boxed{{{answer}}}</answer>\nAnswer: {answer}" if answer is not None else "I give up."
        pieces = [(f"<reason>{reasoning}", True)]
        if rng.random() < 0.5:
            pieces += [(TOOL_CALL, True), (TOOL_RESPONSE, False)]
        pieces.append((f"</reason> {tail}<|im_end|>", True))
        ids, mask = [], []
        for text, is_model in pieces:
            piece = tokenizer.encode(text)
            ids += piece
            mask += [int(is_model)] * len(piece)
        resp = torch.tensor(ids)
        full = torch.cat([prompt, resp])
        batch = TensorDict(
            {
                "prompts": prompt[None],
                "responses": resp[None],
                "input_ids": full[None],
                "attention_mask": torch.ones_like(full)[None],
                "position_ids": torch.arange(full.numel())[None],
            },
            batch_size=1,
        )
        spans = [[s, e] for s, e in _spans(mask)]
        nt = {
            "data_source": np.array(["math_dapo"], dtype=object),
            "reward_model": np.array([{"ground_truth": gold}], dtype=object),
            "extra_info": np.array([{}], dtype=object),
            "__num_turns__": np.array([2]),
            "tool_extra_fields": np.array([{"model_spans": spans}], dtype=object),
            "prompt_len": np.array([prompt.numel()]),
            "response_len": np.array([resp.numel()]),
        }
        out.append(DataProto(batch=batch, non_tensor_batch=nt))
    return out


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    from grporoc_plugin.reward.text import spans_from_mask

    return spans_from_mask(mask)


async def end_to_end(tokenizer, pairs: list[Pair], workers: int, repeats: int) -> float:
    cfg = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"response_length": 4096, "n": 1}},
            "reward": {
                "reward_kwargs": {"verify_workers": workers, "verify_timeout_s": 30.0},
                "custom_reward_function": {"path": None},
                "reward_model": {"enable": False},
            },
            "trainer": {"use_v1": True},
        }
    )
    data = sessions(tokenizer, pairs)
    naive = get_reward_manager_cls("naive")(cfg, tokenizer, default_compute_score)
    grporoc = get_reward_manager_cls("grporoc")(cfg, tokenizer, None)
    assert isinstance(grporoc, GrpoRocRewardManager)
    cfg.reward.reward_kwargs.verify_fast_path = False
    plain = get_reward_manager_cls("grporoc")(cfg, tokenizer, None)
    try:
        for manager in (grporoc, plain):
            manager.verifier.warm_up()

        async def run(manager) -> list[dict]:
            return await asyncio.gather(*[manager.run_single(d) for d in data])

        for manager in (naive, grporoc, plain):
            await asyncio.gather(*[manager.run_single(d) for d in data[:32]])  # warm-up
        t_naive = t_grp = float("inf")
        for _ in range(repeats):  # interleaved, so that a burst of load on the shared machine hits both sides
            t, naive_out = await _timed_runs(lambda: run(naive), 1, lambda: None)
            t_naive = min(t_naive, t)
            t, grp_out = await _timed_runs(lambda: run(grporoc), 1, lambda: _cold(grporoc.verifier))
            t_grp = min(t_grp, t)
        t_plain, _ = await _timed_runs(lambda: run(plain), 1, lambda: None)
    finally:
        grporoc.close()
        plain.close()
    n = len(data)
    acc_naive = np.mean([o["reward_extra_info"]["acc"] for o in naive_out])
    acc_grp = np.mean([o["reward_extra_info"]["acc"] for o in grp_out])
    ratio = t_naive / t_grp
    print(f"\n[end to end: run_single of the reward-loop managers, {n} sessions gathered]")
    print(f"  verl naive + math_dapo                       {rate(n, t_naive)}  acc={acc_naive:.3f}")
    print(f"  grporoc                                      {rate(n, t_grp)}  acc={acc_grp:.3f}")
    print(f"  grporoc, verify_fast_path=False              {rate(n, t_plain)}")
    print(f"  ratio grporoc / naive+math_dapo: {ratio:.2f}x (without the fast path {t_naive / t_plain:.2f}x)")
    disagree = sum(
        a["reward_extra_info"]["acc"] != b["reward_extra_info"]["acc"] for a, b in zip(grp_out, naive_out, strict=True)
    )
    print(f"  sessions where the verdicts differ: {disagree}/{n} (math_dapo compares strings: 0.5 vs \\frac{{1}}{{2}})")
    return ratio


async def _timed_runs(run: Callable, repeats: int, reset: Callable[[], None]) -> tuple[float, list]:
    best, out = float("inf"), []
    for _ in range(repeats):
        reset()
        t0 = time.perf_counter()
        out = await run()
        best = min(best, time.perf_counter() - t0)
    return best, out


async def main(args: argparse.Namespace) -> int:
    rl = rollouts(args.prompts, args.group, "integer")
    print(
        f"rollouts: {args.prompts} prompts x {args.group}; corpus sample: {args.corpus}; "
        f"verify_workers={args.workers}; best of {args.repeats}"
    )
    ratio_rl, same_rl = await per_answer("rollouts, integer answers (paper §4.2)", rl, args.workers, args.repeats)
    math_dapo_per_answer(rl, args.repeats)
    mixed = rollouts(args.prompts, args.group, "mixed")
    _, same_mixed = await per_answer("rollouts, MATH-like mix (no target)", mixed, args.workers, args.repeats)
    corpus = corpus_sample(args.corpus)
    _, same_corpus = await per_answer("answer-pair corpus sample (no target)", corpus, args.workers, args.repeats)
    ratio_e2e = await end_to_end(build_tokenizer(), rl, args.workers, 2 * args.repeats)  # ~1 s a run: cheap
    checks = [
        (f"per answer >= {PER_ANSWER_TARGET:.0f}x the first release (integer rollouts)", ratio_rl >= PER_ANSWER_TARGET),
        (f"end to end >= {END_TO_END_TARGET}x naive+math_dapo (integer rollouts)", ratio_e2e >= END_TO_END_TARGET),
        ("verdicts identical to math_verify (all three inputs)", same_rl and same_mixed and same_corpus),
    ]
    print()
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--corpus", type=int, default=600, help="corpus pairs timed (math_verify-only is slow)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
