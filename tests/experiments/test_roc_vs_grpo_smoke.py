"""The side-by-side experiment at smoke size: 1 seed, 2 steps, the GRPO and RoC arms through stock ``main_ppo`` on CPU.

Minimal everything (the full experiment's own warm start, shipped in ``tests/assets/arith_policy``: it solves ~70 %
of the task, so groups hold both outcomes; no further SFT, 2 prompts per step, G = 4): it checks the pipeline (warm
start -> two trainer runs -> metrics.csv / curves.png / summary.md, progress with ETA) and that every arm trained on
a real learning signal (rewarded rollouts, tool calls run in the sandbox, non-zero advantages), not the result.
The random arm is the RoC arm's 2G -> G path with another selection rule (``tests/experiments/test_experiment_units``
resolves each arm's settings; its end-to-end run and the "roc - random" rows are left to `make experiment`), which
keeps CI a trainer launch shorter. About 3 minutes on 2 free cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from grporoc_plugin.demo.summary import load_metrics
from grporoc_plugin.experiments.metrics import COLUMNS, read_csv

ARITH_POLICY = Path(__file__).resolve().parents[1] / "assets" / "arith_policy"
ARMS = ("grpo", "roc")


@pytest.mark.slow
def test_grpo_and_roc_arms_two_steps_end_to_end(tmp_path, isolated_run, ray_temp_dir):
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "grporoc_plugin.experiments.roc_vs_grpo", "--arms", "grpo,roc"]
    cmd += ["--seeds", "1", "--steps", "2", "--out", str(out), "--prompts-per-step", "2", "--group-size", "4"]
    cmd += ["--test-freq", "2", "--train-prompts", "16", "--val-prompts", "4", "--init-model", str(ARITH_POLICY)]
    cmd += ["--sft-steps", "0", "--sft-examples", "4", "--calib-problems", "2", "--timeout-min", "8"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    result = isolated_run(cmd, env=env, timeout_s=1500, cwd=str(tmp_path), ray_temp_dir=ray_temp_dir)
    tail = result.output[-5000:]
    assert not result.timed_out and result.rc == 0, tail
    print(f"\n[experiment smoke] wall {result.wall_s:.0f}s, peak RSS {result.peak_rss_gib:.2f} GiB")

    # progress: arm, seed, step and ETA for every step of every run
    for index, arm in enumerate(ARMS, start=1):
        for step in (1, 2):
            line = next(
                (x for x in result.output.splitlines() if x.startswith(f"[run {index}/2 {arm} seed 0] step {step}/2")),
                None,
            )
            assert line is not None and "ETA" in line, (arm, step, tail)

    rows = read_csv(out / "metrics.csv")
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    by_arm = {arm: [r for r in rows if r["arm"] == arm and r["step"] > 0] for arm in ARMS}
    for arm, arm_rows in by_arm.items():
        assert [r["step"] for r in arm_rows] == [1, 2], arm
        for r in arm_rows:
            # behaviour metrics come from every generated session, before selection
            assert r["sessions"] == (8 if arm == "grpo" else 16), (arm, r)
            assert 0.0 <= r["acc"] <= 1.0 and r["response_len_all"] > 0 and r["step_time_s"] > 0, (arm, r)
            assert r["tool_calls_per_traj"] is not None and r["tool_calls_per_traj"] >= 0, (arm, r)
            if arm == "grpo":  # plain GRPO trains on every rollout
                assert r["trained_sessions"] == 8, r
            else:  # the 2G arm keeps at most G per prompt
                assert r["trained_sessions"] <= 8, (arm, r)
    # a real learning signal in every arm: scored rollouts with both outcomes, tool calls run in the sandbox, and
    # non-zero advantages in the update (the 2G arms over the rollouts they kept)
    for arm in ARMS:
        steps = load_metrics(out / "runs" / f"{arm}-seed0" / "metrics.jsonl")
        train = [s for s in steps if "critic/advantages/max" in s]
        assert len(train) == 2, (arm, [sorted(s) for s in steps])
        assert any(s["critic/advantages/max"] > 0 > s["critic/advantages/min"] for s in train), (arm, train)
        assert all(s["rollout/executed_tool_calls_per_traj"] > 0 for s in train), arm
        assert all(s["rollout/tool_errors_infra"] == 0 for s in train), arm
        assert any(0 < s["rollout/acc"] < 1 for s in train), arm
        if arm != "grpo":  # RoC kept G of 2G per mixed group, dropping the rest
            assert all(s["roc/rows_dropped"] > 0 for s in train), arm
    vals = {(r["arm"], r["step"]) for r in rows if r["val_acc"] is not None}
    assert {(arm, s) for arm in by_arm for s in (0, 2)} <= vals  # before training and at the last step

    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (out / "summary.md").read_text()
    assert "| pos_tool_error_ratio | roc - grpo |" in summary and "| acc | roc - grpo |" in summary
    assert "Pre-RL calibration" in summary and (out / "command.txt").read_text().startswith("python -m grporoc")
