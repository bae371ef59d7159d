"""Checkpoint and resume (issue 11.2): selection depends on (inputs, seed, global step) only, never process state.

The unit test drives the adapter directly; the slow test checkpoints a real ``main_ppo`` run with verl's own
checkpointing on the CPU backend, resumes it from step 1, and replays every logged selection (``algorithm.roc.
dump_dir``) in a fresh process: each equals what the trainer kept, so the resumed step 2 selects exactly as an
uninterrupted run would given the same rollouts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from grporoc_plugin.adapter import RoCStage, Sessions, replay_dump
from grporoc_plugin.config import resolve_settings

RANDOM_MODES = {"positive_mode": "inverse_penalty", "negative_mode": "uniform", "min_pos": 1, "min_neg": 1}


def _sessions(seed: int) -> Sessions:
    rng = np.random.default_rng(seed)
    groups = [f"u{g}" for g in range(6) for _ in range(8)]
    counters = [
        {"tool_calls": c, "tool_errors_exec": rng.integers(0, c + 1), "tool_errors_parse": 0, "tool_errors_timeout": 0,
         "tool_errors_infra": 0, "assistant_turns": c + 1, "answer_tags": 1, "answer_tags_balanced": True}
        for c in rng.integers(0, 4, size=48)
    ]  # fmt: skip
    return Sessions(groups, rng.integers(0, 2, size=48).astype(float), counters)


def test_selection_is_a_function_of_inputs_seed_and_step_only(tmp_path):
    settings = resolve_settings({**RANDOM_MODES, "seed": 3, "dump_dir": str(tmp_path)}, rollout_n=4)
    long_lived = RoCStage(settings)
    for step in range(1, 4):  # a process that has been selecting for a while ...
        long_lived.select(_sessions(step), step=step)
    resumed = RoCStage(resolve_settings({**RANDOM_MODES, "seed": 3}, rollout_n=4))  # ... and one just restarted
    after = long_lived.select(_sessions(4), step=4).kept
    np.testing.assert_array_equal(resumed.select(_sessions(4), step=4).kept, after)
    assert not np.array_equal(resumed.select(_sessions(4), step=5).kept, after)  # the step does enter the RNG
    records = [json.loads(line) for line in (tmp_path / "selection.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        np.testing.assert_array_equal(replay_dump(record, resumed), record["kept"])


@pytest.mark.slow
def test_resume_from_a_verl_checkpoint_selects_like_an_uninterrupted_run(
    tiny_assets, ray_temp_dir, run_trainer, tmp_path
):
    from test_e2e_trainer import _command
    from trainer_log import metric as _metric

    ckpt, dumps = tmp_path / "ckpt", tmp_path / "dumps"
    base = [
        *_command(tiny_assets, ray_temp_dir, tmp_path), "trainer.use_v1=True", "actor_rollout_ref.rollout.n=4",
        "algorithm.roc.oversample_n=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "algorithm.roc.empty_batch=keep_one",
        *(f"algorithm.roc.{k}={v}" for k, v in RANDOM_MODES.items()), "algorithm.roc.seed=11",
        f"trainer.default_local_dir={ckpt}",
    ]  # fmt: skip
    first, _ = run_trainer(
        [*base, "trainer.save_freq=1", f"algorithm.roc.dump_dir={dumps / 'first'}"], tmp_path, "ckpt"
    )
    assert (ckpt / "global_step_1").is_dir() and (ckpt / "global_step_2").is_dir()
    resumed_cmd = [
        *base, "trainer.resume_mode=resume_path", f"trainer.resume_from_path={ckpt / 'global_step_1'}",
        f"algorithm.roc.dump_dir={dumps / 'resumed'}",
    ]  # fmt: skip
    resumed, output = run_trainer(resumed_cmd, tmp_path, "resume", expect_steps=(2,))
    assert set(resumed) == {2}, "the resumed run must continue at global step 2, not restart at 1"
    stage = RoCStage(resolve_settings({**RANDOM_MODES, "seed": 11}, rollout_n=4))  # a fresh process's selection
    for run in ("first", "resumed"):
        for record in map(json.loads, (dumps / run / "selection.jsonl").read_text().splitlines()):
            np.testing.assert_array_equal(replay_dump(record, stage), record["kept"], err_msg=f"{run} {record['step']}")
    assert _metric(resumed[2], "roc/rows_before") == 4 * 8 and _metric(first[2], "roc/rows_before") == 4 * 8
