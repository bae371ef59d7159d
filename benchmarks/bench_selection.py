"""Cost of RoC down-sampling per training step, one CPU core: the plugin's two paths against the release's.

    python benchmarks/bench_selection.py [--prompts 512 --rollouts 32 --repeat 5 --cpu N]

(a) structured penalties (per-trajectory counters) + ``grporoc_plugin.roc.select_rollouts``;
(b) ``text_penalties`` on the decoded responses + ``select_rollouts``;
(c) the release, transcribed in-process: ``reject_equal_reward``'s per-uid loop (reject_sampling.py:11-46), its
    regex penalty passes over the surviving texts (roc.py:80-138) and its per-group Python loop with list sorts
    (roc.py:41-76, negatives unsorted as after commit 5e95b19). It is a conservative baseline: 1-D numpy rewards
    instead of torch ``token_level_scores[uid_mask].sum(-1)``, no DataProto filtering, no tokenizer decode.

All three run interleaved in each repeat (so background load hits them alike); medians are reported. Targets:
(a) <= 20 ms and >= 50x faster than (c); (b) >= 3x faster than (c). Exit status 1 if a target or a parity check
fails. Parity: with the release's settings (RoCConfig defaults; PenaltyConfig error_kinds=("exec",),
turn_count="compat" on a batch without the release's substring quirks) all three keep the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys

# Pin to one core and one BLAS/OpenMP thread before numpy is imported (thread pools read these at import).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import gc  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.synthetic import SyntheticBatch, make_batch  # noqa: E402
from grporoc_plugin.penalties import PenaltyConfig, combine_penalties, structured_penalties, text_penalties  # noqa: E402
from grporoc_plugin.reference import release_down_sample, release_error_ratio, release_format  # noqa: E402
from grporoc_plugin.roc import RoCConfig, select_rollouts  # noqa: E402

RELEASE_PENALTY = PenaltyConfig(error_kinds=("exec",), turn_count="compat")  # what the release's substrings see
TARGET_A_MS = 20.0
TARGET_A_RATIO = 50.0
TARGET_B_RATIO = 3.0


# ---------------------------------------------------------------------------------------------------------------------
# (a) and (b): the plugin


def run_structured(b: SyntheticBatch, pcfg: PenaltyConfig, rcfg: RoCConfig) -> tuple[np.ndarray, np.ndarray]:
    p_err, p_format, p_total = structured_penalties(
        b.tool_calls,
        b.errors_by_kind,
        b.answer_tags,
        b.answer_tags_balanced,
        b.assistant_turns,
        pcfg,
        truncated=b.truncated,
    )
    stats = {"tool_calls": b.tool_calls, "tool_errors": b.errors_by_kind["exec"], "p_err": p_err, "p_format": p_format}
    kept, _ = select_rollouts(b.group_ids, b.correct, p_total, config=rcfg, seed=0, stats=stats)
    return kept, p_total


def run_text(b: SyntheticBatch, rcfg: RoCConfig) -> tuple[np.ndarray, np.ndarray]:
    p_err, p_format = text_penalties(b.texts)
    p_total = combine_penalties(p_err, p_format, RELEASE_PENALTY)
    kept, _ = select_rollouts(
        b.group_ids, b.correct, p_total, config=rcfg, seed=0, stats={"p_err": p_err, "p_format": p_format}
    )
    return kept, p_total


# ---------------------------------------------------------------------------------------------------------------------
# (c): the release, transcribed in grporoc_plugin.reference (behaviour of microsoft/rStar rstar2_agent/down_sample at
# ecbfb943): reject loop -> regex penalties on the survivors -> per-group loop, asserting like the release.


def run_release(b: SyntheticBatch, n: int = 16, min_zero: int = 2, min_nz: int = 2) -> tuple[np.ndarray, None]:
    """reject_equal_reward -> filter -> penalties on the survivors -> resample_of_correct; returns (kept, None)."""
    kept, _ = release_down_sample(b.group_ids, b.correct.astype(np.float32), n, min_zero, min_nz, texts=b.texts)
    return kept, None


def release_penalties_all(texts: list[str]) -> np.ndarray:
    """The release's two regex passes alone, over every text (for the penalty-only comparison with (b))."""
    return np.array([release_error_ratio(t) for t in texts]) + release_format(texts)[0]


# ---------------------------------------------------------------------------------------------------------------------


def _timed(fn, *args):
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--rollouts", type=int, default=32)
    ap.add_argument("--keep-n", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: first allowed core)")
    args = ap.parse_args(argv)

    cpu = min(os.sched_getaffinity(0)) if args.cpu is None else args.cpu
    os.sched_setaffinity(0, {cpu})

    t0 = time.perf_counter()
    b = make_batch(args.prompts, args.rollouts, seed=args.seed)
    gen_s = time.perf_counter() - t0
    rcfg = RoCConfig(keep_n=args.keep_n)
    n = len(b)
    ascii_share = sum(t.isascii() for t in b.texts) / n
    print(f"batch: {args.prompts} prompts x {args.rollouts} rollouts = {n} trajectories, keep_n={args.keep_n}")
    print(
        f"       mean response {b.total_chars / n / 1024:.2f} KiB ({b.total_chars / 2**20:.1f} MiB total, "
        f"{ascii_share:.0%} pure ASCII), mean tool calls {b.tool_calls.mean():.2f}, "
        f"correct {b.correct.mean():.1%}; generated in {gen_s:.1f} s (not timed)"
    )
    print(f"pinned to CPU {cpu} (affinity {sorted(os.sched_getaffinity(0))}), OMP/MKL/OPENBLAS threads = 1")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"numpy {np.__version__}, python {sys.version.split()[0]}, repeats {args.repeat} (median [min..max])")
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other processes share the pinned core)\n")

    times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "b_pen": [], "c_pen": []}
    outs: dict[str, tuple] = {}
    for _ in range(args.repeat):
        t, outs["a"] = _timed(run_structured, b, RELEASE_PENALTY, rcfg)
        times["a"].append(t)
        t, outs["b"] = _timed(run_text, b, rcfg)
        times["b"].append(t)
        t, outs["c"] = _timed(run_release, b, args.keep_n)
        times["c"].append(t)
        t, _ = _timed(text_penalties, b.texts)
        times["b_pen"].append(t)
        t, outs["c_pen"] = _timed(release_penalties_all, b.texts)
        times["c_pen"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}

    # memory of (a): Python-heap peak (tracemalloc) and resident-set growth over one call
    gc.collect()
    rss0 = _rss_kib()
    tracemalloc.start()
    run_structured(b, RELEASE_PENALTY, rcfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_delta = _rss_kib() - rss0

    def ms(k: str) -> str:
        spread = f"[{min(times[k]) * 1e3:.1f}..{max(times[k]) * 1e3:.1f}]"
        return f"{med[k] * 1e3:9.1f} ms  {spread}"

    print(f"(a) structured penalties + select_rollouts    {ms('a')}")
    print(f"(b) text_penalties + select_rollouts          {ms('b')}")
    print(f"(c) release: reject loop + regex + group loop {ms('c')}")
    print(f"    penalty pass only: text_penalties         {ms('b_pen')}")
    print(f"    penalty pass only: release regex passes   {ms('c_pen')}")
    ratio_a = med["c"] / med["a"]
    ratio_b = med["c"] / med["b"]
    ratio_pen = med["c_pen"] / med["b_pen"]
    print(f"\n(c)/(a) = {ratio_a:.1f}x   (c)/(b) = {ratio_b:.1f}x   penalty pass only: {ratio_pen:.1f}x")
    print(f"(c) throughput {n / med['c']:.0f} rollouts/s; (b) {n / med['b']:.0f} rollouts/s; (a) {n / med['a']:.0f}")
    print(f"(a) memory: tracemalloc peak {peak / 2**20:.2f} MiB, RSS delta {rss_delta / 1024:+.2f} MiB\n")

    kept_a, pen_a = outs["a"]
    kept_b, pen_b = outs["b"]
    kept_c, _ = outs["c"]
    pen_release = outs["c_pen"]
    checks = {
        "text_penalties == release regex penalties (all rows, exact)": np.array_equal(pen_b, pen_release),
        "structured (release mode) == release penalties (exact)": np.array_equal(pen_a, pen_release),
        "kept(a) == kept(c)": np.array_equal(kept_a, kept_c),
        "kept(b) == kept(c)": np.array_equal(kept_b, kept_c),
    }
    targets = {
        f"(a) <= {TARGET_A_MS:.0f} ms on one core ({med['a'] * 1e3:.1f} ms)": med["a"] * 1e3 <= TARGET_A_MS,
        f"(c)/(a) >= {TARGET_A_RATIO:.0f}x ({ratio_a:.1f}x)": ratio_a >= TARGET_A_RATIO,
        f"(c)/(b) >= {TARGET_B_RATIO:.0f}x ({ratio_b:.1f}x)": ratio_b >= TARGET_B_RATIO,
    }
    print(f"kept rows: {kept_c.size} of {n}")
    ok = True
    for name, passed in {**checks, **targets}.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
        ok &= bool(passed)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
