"""Shared fixtures: session-scoped tiny offline assets and an isolated, always-cleaned-up trainer/Ray runner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HEAVY_LOCK = "/tmp/grporoc_heavy.lock"  # one Ray/trainer run at a time on the shared 2-core box


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> dict[str, str]:
    """Tiny tokenizer + random Qwen2 + arithmetic parquet (``build_all``), built once per session (~10 s)."""
    from grporoc_plugin.demo.assets import build_all

    start = time.perf_counter()
    paths = build_all(str(tmp_path_factory.mktemp("tiny_assets")))
    paths["build_s"] = f"{time.perf_counter() - start:.2f}"
    return paths


def sft_policy(tiny_assets: dict, out: Path, *, mix: dict, steps: int = 40, problems: int = 64) -> str:
    """The tiny policy after a short SFT on the quick start's executed trajectories of the given ``mix`` of kinds
    (clean / fix / no_tool); saved with its tokenizer and a tool_config.yaml next to it. ~20 s on 2 free cores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grporoc_plugin.demo.run import write_tool_config
    from grporoc_plugin.demo.sft import SFTConfig, train_sft
    from grporoc_plugin.demo.trajectories import ToolRunner, build_trajectories, make_problems

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    model = AutoModelForCausalLM.from_pretrained(tiny_assets["model"], dtype=torch.float32)
    runner = ToolRunner(str(write_tool_config(out / "tool_config.yaml")))
    try:
        trajectories = build_trajectories(make_problems(problems, seed=1), tokenizer, runner, mix=mix)
    finally:  # this process needs no sandbox any more (the trainer's workers start their own)
        close = getattr(runner.tools[runner.tool_name].executor(), "close", None)
        if close is not None:
            close()
    cfg = SFTConfig(steps=steps, batch_size=8, lr=1e-2, warmup_steps=5)
    train_sft(model, trajectories, tokenizer.pad_token_id, cfg, log=None)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return str(out / "model")


@pytest.fixture(scope="session")
def tool_policy(tiny_assets, tmp_path_factory) -> str:
    """Shared by the end-to-end runs that need tool calls: a 120-step SFT on clean / fix-after-error trajectories,
    so ``grporoc_tool_agent`` sees real ``<tool_call>`` blocks (measured: 40 steps, 0 % of sampled first turns
    parse as a call; 120 steps, ~85 %), some of them running failing code (the "fix" trajectories)."""
    return sft_policy(tiny_assets, tmp_path_factory.mktemp("tool_policy"), mix={"clean": 1, "fix": 1}, steps=120)


@pytest.fixture(scope="session")
def answer_policy(tiny_assets, tmp_path_factory) -> str:
    """A 40-step SFT on answer-only trajectories: the policy ends its first turn with ``<answer>\\boxed{N}</answer>``,
    so every rollout reaches answer verification (the reward-fault run needs that)."""
    return sft_policy(tiny_assets, tmp_path_factory.mktemp("answer_policy"), mix={"no_tool": 1})


@dataclass
class IsolatedRun:
    """Outcome of :func:`run_isolated`."""

    rc: int
    output: str
    wall_s: float
    peak_rss_gib: float
    timed_out: bool


def _pids_matching(needle: str) -> list[int]:
    """PIDs whose command line mentions ``needle`` (our unique Ray temp dir)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:  # field 6 (session id) of /proc/<pid>/stat
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def kill_ray_tree(sid: int, ray_temp_dir: str) -> None:
    """Kill everything a run started: its session (process group leader = sid) and any Ray process using its temp dir.

    Scoped on purpose: a plain ``ray stop`` would also kill other users' clusters on a shared machine.
    """
    for _ in range(3):
        pids = set(_session_pids(sid)) | set(_pids_matching(ray_temp_dir))
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def run_isolated(cmd: list[str], *, env: dict[str, str], timeout_s: float, cwd: str, ray_temp_dir: str) -> IsolatedRun:
    """Run ``cmd`` in its own session under the heavy-job lock; always kill its process tree and Ray processes."""
    import fcntl

    with open(HEAVY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        peak, stop = [0], threading.Event()

        def sample_rss() -> None:
            while not stop.wait(0.5):
                peak[0] = max(
                    peak[0], _rss_bytes(list(set(_session_pids(proc.pid)) | set(_pids_matching(ray_temp_dir))))
                )

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        timed_out = False
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_ray_tree(proc.pid, ray_temp_dir)
            output, _ = proc.communicate()
        finally:
            stop.set()
            sampler.join()
            kill_ray_tree(proc.pid, ray_temp_dir)
            # Killed Ray workers could not close their code-tool sandbox pools: reclaim their cgroups and temp dirs.
            from grporoc_plugin.sandbox.pool import sweep_stale

            sweep_stale()
            fcntl.flock(lock, fcntl.LOCK_UN)
    return IsolatedRun(proc.returncode, output, time.perf_counter() - start, peak[0] / 2**30, timed_out)


@pytest.fixture
def ray_temp_dir():
    """A short, unique Ray temp dir (Unix socket paths must stay < 108 chars), removed afterwards."""
    path = tempfile.mkdtemp(prefix="grr_", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def isolated_run():
    """:func:`run_isolated`: run a trainer/Ray command in its own session, always killing what it started."""
    return run_isolated


@pytest.fixture
def run_trainer(isolated_run, ray_temp_dir):
    """Run a trainer command on the CPU backend; assert it finished with the ``expect_steps`` step lines (default 1
    and 2); return (step lines, output).

    The step lines are verl's console ``step:N - key:value ...`` lines keyed by N; the log lands in tmp_path.
    """
    import re

    from grporoc_plugin.cpu import cpu_env

    def run(cmd: list[str], tmp_path: Path, label: str, expect_steps=(1, 2)) -> tuple[dict[int, str], str]:
        env = {**os.environ, **cpu_env(), "PYTHONUNBUFFERED": "1"}
        result = isolated_run(cmd, env=env, timeout_s=600, cwd=str(tmp_path), ray_temp_dir=ray_temp_dir)
        (tmp_path / "trainer.log").write_text(result.output)
        tail = result.output[-4000:]
        assert not result.timed_out, f"trainer timed out after {result.wall_s:.0f}s:\n{tail}"
        assert result.rc == 0, f"trainer exited {result.rc}:\n{tail}"
        steps = {
            int(m.group(1)): line for line in result.output.splitlines() if (m := re.search(r"\bstep:(\d+) - ", line))
        }
        assert set(expect_steps) <= set(steps), f"no 'step:N' lines for {expect_steps}:\n{tail}"
        print(f"\n[{label}] wall {result.wall_s:.1f}s, peak RSS {result.peak_rss_gib:.2f} GiB")
        return steps, result.output

    return run
