"""``python -m grporoc_plugin.demo`` end to end at minimal size (1 GRPO step): what the quick start exists to show.

The GRPO stage starts from a competent warm start (``--init-model tests/assets/arith_policy``, the side-by-side
experiment's SFT'd policy): the demo's own 1000-step SFT is too slow for CI, and a CI-sized one solves nothing
(measured: 120 steps, 6 % parseable first turns and 0 % correct; 120 steps at lr 1e-2 on clean / fix
trajectories: 1.3 calls per rollout, 0 % correct), so every group would be all-wrong and the update would have no
signal. On the demo's problems the shipped policy solves ~20 % (measured 0.22 over 32 rollouts), so with 4 groups of
8 at least one group is mixed except with probability ~1e-3. The SFT stage itself is covered by ``test_sft.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from grporoc_plugin.demo.summary import load_metrics

PROMPTS, G = 4, 4
ARITH_POLICY = Path(__file__).resolve().parents[1] / "assets" / "arith_policy"


def _run_demo(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grporoc_plugin.demo", "--out", str(out), *args],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_demo_trains_on_selected_tool_rollouts(tmp_path):
    out = tmp_path / "demo"
    before = {p.pid for p in psutil.process_iter()}
    args = ["--steps", "1", "--init-model", str(ARITH_POLICY), "--prompts-per-step", str(PROMPTS)]
    args += ["--group-size", str(G)]
    proc = _run_demo(out, *args)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stdout = proc.stdout
    for marker in ("1/4 assets", "[sft] skipped", "3/4 GRPO-RoC", "[grpo] step 1:", "roc/", "4/4 summary", "times:"):
        assert marker in stdout, marker

    steps = load_metrics(out / "grpo" / "metrics.jsonl")
    assert len(steps) == 1
    step = steps[0]
    assert step["roc/enabled"] == 1
    # every one of the 2G sessions of every prompt came back with a reward, and was either kept or dropped
    assert step["roc/sessions_expected"] >= PROMPTS * 2 * G and step["roc/sessions_missing"] == 0
    assert step["roc/rows_kept"] + step["roc/rows_dropped"] == step["roc/rows_before"] == step["roc/sessions_expected"]
    # RoC dropped rollouts (2G -> G, or whole all-equal groups) and the reward worker scored every session
    assert step["roc/rows_dropped"] > 0
    assert "rollout/acc" in step and "critic/score/mean" in step
    # the policy's tool calls really ran in the sandbox, with no infrastructure failure
    assert step["rollout/executed_tool_calls_per_traj"] > 0
    assert step["rollout/tool_errors_infra"] == 0
    # RoC kept at least one mixed group, so the update had a learning signal
    assert step["roc/groups_kept"] >= 1 and step["roc/kept_pos"] >= 1 and step["roc/kept_neg"] >= 1
    assert step["critic/advantages/max"] > 0 > step["critic/advantages/min"]
    assert step["actor/grad_norm"] > 0
    # the quick start's log shows no sandbox fork server restart (issue 7.1)
    trainer_log = (out / "grpo" / "grpo.log").read_text()
    assert "restarting it" not in trainer_log and "sandbox_error" not in trainer_log
    assert (out / "tool_config.yaml").exists()

    # no Ray daemon / worker of the run survives it
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before and "ray_grporoc_" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_init_model_must_be_a_saved_model(tmp_path):
    proc = _run_demo(tmp_path / "demo", "--init-model", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "--init-model" in proc.stderr and "config.json" in proc.stderr
