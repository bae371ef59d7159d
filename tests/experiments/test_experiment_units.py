"""The side-by-side experiment's parts: arms (composed through the plugin's real hydra config), metric rows, the
report's statistics and plot, the pre-RL calibration counts, progress lines. Fast (no trainer run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grporoc_plugin.config import resolve_settings
from grporoc_plugin.demo.run import PLUGIN_CONFIG_DIR, PLUGIN_CONFIG_NAME, build_overrides
from grporoc_plugin.experiments.arms import ARM_REGISTRY, get_arm
from grporoc_plugin.experiments.metrics import COLUMNS, read_csv, rows_from_steps, write_csv
from grporoc_plugin.experiments.report import bootstrap_mean_ci, end_difference, summarise, verdict, write_report
from grporoc_plugin.experiments.roc_vs_grpo import ExperimentConfig, Progress, parse_args, trainer_config
from grporoc_plugin.experiments.rollouts import TrajectoryRecord, calibrate


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(PLUGIN_CONFIG_DIR), version_base=None):
        return compose(config_name=PLUGIN_CONFIG_NAME, overrides=overrides)


def _flat(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """Each arm's full trainer config, composed like ``main_ppo`` composes it (files need not exist)."""
    tmp = tmp_path_factory.mktemp("arms")
    exp = ExperimentConfig(group_size=4, prompts_per_step=8, steps=5)
    paths = {"train": "/data/train.parquet", "val": "/data/val.parquet", "tool_config": "/data/tool.yaml"}
    out = {}
    for arm in ("grpo", "random", "roc"):
        cfg = trainer_config(exp, arm, 3, paths, "/model", tmp / arm)
        out[arm] = _compose(build_overrides(cfg))
    return out


def test_each_arm_resolves_to_its_selection(composed):
    settings = {
        arm: resolve_settings(cfg.algorithm.roc, rollout_n=cfg.actor_rollout_ref.rollout.n)
        for arm, cfg in composed.items()
    }
    grpo, rand, roc = settings["grpo"], settings["random"], settings["roc"]
    assert not grpo.enable and grpo.keep_n == 4 and grpo.oversample_n == 4
    assert rand.enable and rand.oversample_n == 8 and rand.keep_n == 4
    assert roc.enable and roc.oversample_n == 8 and roc.keep_n == 4
    assert (rand.roc_config().positive_mode, rand.roc_config().negative_mode) == ("uniform", "uniform")
    assert (roc.roc_config().positive_mode, roc.roc_config().negative_mode) == ("topk", "first_k")
    # the release defaults are what the roc arm runs
    assert roc.roc_config().count_rule == rand.roc_config().count_rule == "release_round"
    assert {s.seed for s in settings.values()} == {3}
    for arm, cfg in composed.items():
        assert cfg.trainer.val_before_train and cfg.trainer.test_freq == 10, arm
        assert cfg.data.seed == 3 and cfg.actor_rollout_ref.rollout.n == 4, arm


def test_arms_differ_only_in_selection(composed):
    flat = {arm: _flat(OmegaConf.to_container(cfg, resolve=False)) for arm, cfg in composed.items()}
    allowed = {
        "algorithm.roc.enable",
        "algorithm.roc.oversample_n",
        "algorithm.roc.positive_mode",
        "algorithm.roc.negative_mode",
        "trainer.experiment_name",
        "trainer.default_local_dir",
    }
    for arm in ("random", "roc"):
        keys = set(flat["grpo"]) | set(flat[arm])
        differing = {k for k in keys if flat["grpo"].get(k) != flat[arm].get(k)}
        assert differing, arm
        assert differing <= allowed, sorted(differing - allowed)


def test_unknown_arm_is_rejected_with_the_known_names(capsys):
    with pytest.raises(ValueError, match=r"unknown arm 'pods'; known arms: \['grpo', 'random', 'roc'\]"):
        get_arm("pods")
    assert set(ARM_REGISTRY) >= {"grpo", "random", "roc"}
    with pytest.raises(SystemExit):
        parse_args(["--arms", "grpo,nope"])
    assert "unknown arm 'nope'" in capsys.readouterr().err


def test_seeds_argument_count_or_list():
    _, exp, _, _ = parse_args(["--seeds", "3", "--steps", "7"])
    assert exp.seeds == (0, 1, 2) and exp.steps == 7
    _, exp, _, _ = parse_args(["--seeds", "4,9"])
    assert exp.seeds == (4, 9)


def _steps(values: dict[int, dict[str, float]]) -> list[dict[str, float]]:
    return [{"step": float(s), **v} for s, v in sorted(values.items())]


def test_rows_map_sampler_metrics_and_keep_missing_values_empty(tmp_path):
    steps = _steps(
        {
            0: {"val-core/grporoc/arith/acc/mean@1": 0.25},
            1: {
                "rollout/acc": 0.5,
                "rollout/pos_tool_error_ratio": 0.2,
                "rollout/pos_with_error_share": 0.4,
                "rollout/response_len_pos": 120.0,
                "rollout/response_len_all": 100.0,
                "rollout/tool_calls_per_traj": 1.3,
                "rollout/sessions": 32.0,
                "roc/rows_kept": 16.0,
                "timing_s/step": 6.5,
            },
            2: {"rollout/acc": 0.0, "rollout/sessions": 32.0, "timing_s/step": 6.0},
        }
    )
    rows = rows_from_steps("roc", 1, steps)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["val_acc"] == 0.25 and rows[0]["acc"] is None
    assert rows[1]["pos_tool_error_ratio"] == 0.2 and rows[1]["trained_sessions"] == 16.0
    assert rows[1]["step_time_s"] == 6.5 and rows[1]["val_acc"] is None
    # no positives at step 2: the positive-only metrics are absent, not 0
    assert rows[2]["acc"] == 0.0 and rows[2]["pos_tool_error_ratio"] is None
    write_csv(tmp_path / "metrics.csv", rows)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS
    assert read_csv(tmp_path / "metrics.csv") == rows


def test_bootstrap_ci_brackets_the_mean_and_collapses_for_equal_values():
    mean, lo, hi = bootstrap_mean_ci([-0.1, -0.2, -0.3])
    assert mean == pytest.approx(-0.2) and -0.3 <= lo < mean < hi <= -0.1
    assert bootstrap_mean_ci([0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))


def _synthetic_rows(roc_drop: float, steps: int = 20) -> list[dict[str, object]]:
    """Three seeds per arm; the roc arm's tool-error ratio falls by ``roc_drop`` over the run, the others stay."""
    rows = []
    for arm in ("grpo", "random", "roc"):
        for seed in range(3):
            rows += rows_from_steps(arm, seed, [{"step": 0.0, "val-core/x/acc/mean@1": 0.3}])
            for step in range(1, steps + 1):
                ratio = 0.3 + 0.01 * seed - (roc_drop * step / steps if arm == "roc" else 0.0)
                values = {"rollout/pos_tool_error_ratio": ratio, "rollout/acc": 0.5, "timing_s/step": 5.0}
                rows += rows_from_steps(arm, seed, [{"step": float(step), **values}])
    return rows


def test_verdict_follows_the_design_criterion():
    separated = _synthetic_rows(roc_drop=0.2)
    mean, lo, hi = end_difference(separated, "pos_tool_error_ratio", "grpo")
    assert mean == pytest.approx(-0.2 * 15.5 / 20) and hi < 0
    assert verdict(separated).startswith("RoC separates from both controls")
    assert verdict(_synthetic_rows(roc_drop=0.0)).startswith("RoC does NOT separate")


def test_summary_and_curves_are_written_from_the_csv(tmp_path):
    write_csv(tmp_path / "metrics.csv", _synthetic_rows(roc_drop=0.2))
    calibration = {"samples": 256, "acc": 0.5, "pos_error_recovery_share": 0.4, "pos_tool_error_ratio": 0.3}
    calibration |= {"acc_after_clean_first_call": 0.9, "acc_after_failed_first_call": 0.8}
    run_info = {"command": "python -m x", "machine": "m", "calibration": calibration, "warm_start": "w"}
    run_info |= {"run_walls_s": {"grpo-seed0": 60.0, "roc-seed0": 120.0}, "failures": []}
    (tmp_path / "run_info.json").write_text(json.dumps(run_info))
    png, md = write_report(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = md.read_text()
    assert text.startswith("# GRPO vs random down-sampling vs GRPO-RoC (summary)")
    assert "Trainer runs: 3.0 min in all (grpo-seed0 1.0, roc-seed0 2.0 min)" in text
    assert "(a) accuracy 50.0%" in text and "recovery 40.0%" in text
    assert "**Finding:** RoC separates" in text
    assert "| pos_tool_error_ratio | roc | 0.255 ± 0.010 | 0.155 ± 0.010 |" in text
    assert "| pos_tool_error_ratio | roc - grpo | -0.155 |" in text
    assert "| val_acc | grpo | 0.300 ± 0.000 | - |" in text
    assert summarise(read_csv(tmp_path / "metrics.csv")) in text


def test_calibration_counts_recoveries_among_positives():
    def rec(answer_text: str, statuses: list[str]) -> TrajectoryRecord:
        return TrajectoryRecord(answer=7, text=f"\\boxed{{{answer_text}}}", statuses=statuses, response_tokens=10)

    records = [
        rec("7", ["ok"]),  # clean positive
        rec("7", ["exec_error", "ok"]),  # failed call, then a recovery
        rec("7", ["ok", "exec_error"]),  # error after the successful call: not a recovery
        rec("7", []),  # no tool
        rec("8", ["exec_error", "ok"]),  # negative
        rec("8", ["ok"]),
    ]
    c = calibrate(records)
    assert c.samples == 6 and c.acc == pytest.approx(4 / 6)
    assert c.pos_error_recovery_share == pytest.approx(1 / 4)
    assert c.pos_with_error_share == pytest.approx(2 / 4)
    assert c.pos_tool_error_ratio == pytest.approx(2 / 5)
    assert c.acc_after_clean_first_call == pytest.approx(2 / 3)
    assert c.acc_after_failed_first_call == pytest.approx(1 / 2)
    assert c.no_tool_share == pytest.approx(1 / 6) and c.tool_calls_per_traj == pytest.approx(8 / 6)


def test_progress_prints_arm_seed_step_and_eta():
    progress = Progress(total_runs=3, steps=4)
    progress.start_run(0, "roc", 1, kind="8")
    assert progress("INFO some trainer chatter\n") is None
    line = progress(
        "(TaskRunner pid=1) step:1 - rollout/acc:0.5 - rollout/pos_tool_error_ratio:0.25 - rollout/sessions:32 - "
        "roc/rows_kept:16 - timing_s/step:6.0\n"
    )
    assert line is not None and line.startswith("[run 1/3 roc seed 1] step 1/4: acc 0.50")
    assert "pos tool-error ratio 0.250" in line and "trained 16/32" in line and "ETA" in line
    assert "Traceback" in progress("Traceback (most recent call last):\n")


def test_command_line_defaults_are_the_committed_design():
    """The defaults are what docs/experiments/roc_vs_grpo/DESIGN.md states (the committed run uses them)."""
    design = (Path(__file__).resolve().parents[2] / "docs/experiments/roc_vs_grpo/DESIGN.md").read_text()
    _, exp, task, ws = parse_args([])
    for text in (
        f"G = {exp.group_size}",
        f"{exp.prompts_per_step} prompts per step",
        f"{exp.steps} steps",
        f"learning rate {exp.lr:g}",
        f"{task.n_val} held-out prompts",
        f"{ws.sft_steps} SFT steps",
    ):
        assert text in design, text


@pytest.fixture(scope="module")
def compact_tokenizer(tiny_assets):
    """The session's tiny tokenizer as verl loads it, with the experiment's compact chat template."""
    from transformers import AutoTokenizer

    from grporoc_plugin.experiments.task import compact_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    tokenizer.chat_template = compact_chat_template()
    return tokenizer


def test_task_copies_sit_at_a_constant_token_distance(tmp_path, compact_tokenizer):
    """The design claim behind the fixed-shape task: question -> code and tool output -> answer copies are at the same
    token distance in every clean trajectory (verl's token builder, tool really executed)."""
    from grporoc_plugin.demo.assets import TOOL_SCHEMA
    from grporoc_plugin.demo.run import write_tool_config
    from grporoc_plugin.demo.trajectories import ToolRunner, build_trajectories
    from grporoc_plugin.experiments.task import make_problems

    problems = make_problems(24, seed=5)
    assert all(100 <= p.answer <= 999 and len(p.expression) == 7 for p in problems)
    runner = ToolRunner(str(write_tool_config(tmp_path / "tool.yaml")))
    trajectories = build_trajectories(problems, compact_tokenizer, runner, mix={"clean": 1.0}, seed=0)
    rendered = compact_tokenizer.decode(trajectories[0].input_ids)
    assert "Tools: " + TOOL_SCHEMA["function"]["name"] in rendered and '"parameters"' not in rendered
    distances = set()
    for t in trajectories:
        ids, tok = t.input_ids, compact_tokenizer
        expr = tok.encode(" " + t.problem.expression, add_special_tokens=False)
        answer = tok.encode(str(t.problem.answer), add_special_tokens=False)
        starts = [i for i in range(len(ids)) if ids[i : i + len(expr)] == expr]
        answers = [i for i in range(len(ids)) if ids[i : i + len(answer)] == answer]
        assert len(starts) == 1 and len(answers) >= 3, tok.decode(ids)  # prompt; tool output, sentence, box
        distances.add((len(ids), t.prompt_length, tuple(a - answers[0] for a in answers)))
    assert len(distances) == 1, distances


def test_dataset_keeps_held_out_prompts_out_of_training(tmp_path):
    import pandas as pd

    from grporoc_plugin.experiments.task import write_dataset
    from grporoc_plugin.experiments.warmstart import held_out_expressions

    train, val = write_dataset(tmp_path, n_train=40, n_val=10, seed=3)
    held_out = held_out_expressions(val)
    train_questions = set(pd.read_parquet(train)["extra_info"].map(lambda info: info["question"]))
    assert len(held_out) == 10 and len(train_questions) == 40
    assert not any(f"What is {e}?" in q for q in train_questions for e in held_out)
    assert pd.read_parquet(val)["reward_model"].iloc[0]["ground_truth"].isdigit()
