"""``python -m grporoc_plugin.demo`` end to end with minimal sizes (1 GRPO step): ~2-3 min, Ray always cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from grporoc_plugin.demo.summary import load_metrics


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    before = {p.pid for p in psutil.process_iter()}
    proc = subprocess.run(
        [sys.executable, "-m", "grporoc_plugin.demo", "--out", str(out), "--steps", "1"]
        + ["--sft-steps", "30", "--sft-examples", "48", "--prompts-per-step", "2", "--group-size", "4"],
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stdout = proc.stdout
    for marker in ("1/4 assets", "2/4 SFT", "[sft] step   30/30", "parseable tool call", "3/4 GRPO-RoC", "4/4 summary"):
        assert marker in stdout, marker
    assert "[grpo] step 1:" in stdout and "roc/" in stdout and "times: assets" in stdout

    steps = load_metrics(out / "grpo" / "metrics.jsonl")
    assert len(steps) == 1
    step = steps[0]
    # 2 prompts x 2G = 8 rollouts each; the RoC sampler saw all 16 and verl trained on what it kept
    assert step["roc/rows_before"] >= 16 and step["roc/enabled"] == 1
    assert step["roc/rows_kept"] + step["roc/rows_dropped"] == step["roc/rows_before"]
    assert "timing_s/step" in step and "actor/pg_loss" in step
    assert (out / "sft_model" / "config.json").exists() and (out / "tool_config.yaml").exists()

    # no Ray daemon / worker of the run survives it
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before and "ray_grporoc_" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []
