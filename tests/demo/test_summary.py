"""The demo's summary parser on logs written by verl's own loggers (file logger JSONL and console format)."""

from __future__ import annotations

import math

import pytest
from verl.utils.logger.aggregate_logger import concat_dict_to_str
from verl.utils.tracking import FileLogger

from grporoc_plugin.demo.summary import format_table, load_metrics, main, parse_console, parse_jsonl

STEP1 = {
    "roc/rows_before": 32,
    "roc/rows_kept": 16,
    "roc/rows_dropped": 16,
    "roc/pos_before": 12,
    "roc/kept_pos": 6,
    "roc/groups_rejected_all_correct": 1,
    "roc/groups_rejected_all_wrong": 0,
    "roc/pos_tool_error_ratio_before": 0.25,
    "roc/pos_tool_error_ratio_after": 0.05,
    "roc/time_s": 0.0021,
    "rollout/pos_with_error_share": 0.4,
    "critic/score/mean": 0.375,
    "timing_s/step": 14.2,
}
STEP2 = {**STEP1, "roc/pos_before": 16, "roc/pos_tool_error_ratio_after": 0.0, "timing_s/step": 10.0}
del STEP2["rollout/pos_with_error_share"]  # e.g. no positive in step 2: the metric is absent


def test_jsonl_from_verl_file_logger(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    logger = FileLogger("p", "e")
    logger.log(STEP1, step=1)
    logger.log(STEP2, step=2)
    logger.finish()
    steps = load_metrics(path)
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[0]["roc/acc_before"] == pytest.approx(12 / 32)
    assert steps[0]["roc/acc_after"] == pytest.approx(6 / 16)
    assert steps[0]["roc/groups_rejected"] == 1
    assert steps[0]["roc/time_ms"] == pytest.approx(2.1)
    table = format_table(steps)
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["step", "acc(2G)", "acc(kept)", "pos_err_before", "pos_err_after"]
    assert lines[2].split()[:5] == ["1", "0.375", "0.375", "0.250", "0.050"]
    assert "pos_w_err" in lines[0] and "-" in lines[3].split()  # absent metrics print "-", never a fake 0
    assert lines[4].split()[0] == "mean" and lines[4].split()[1] == f"{(12 / 32 + 16 / 32) / 2:.3f}"


def test_console_lines_with_ray_prefix_and_noise():
    captured = [
        "(TaskRunnerV1 pid=4242) Training Progress:  50%|#####     | 1/2\n",
        f"(TaskRunnerV1 pid=4242) {concat_dict_to_str(STEP1, step=1)}\n",
        "\x1b[36m(TaskRunnerV1 pid=4242)\x1b[0m " + concat_dict_to_str(STEP2, step=2) + "\n",
        "(TaskRunnerV1 pid=4242) step:3 - roc/rows_before:oops - critic/score/mean:0.5\n",
        "unrelated line with step: in it\n",
    ]
    steps = parse_console(captured)
    assert [int(s["step"]) for s in steps] == [1, 2, 3]
    assert steps[1]["roc/pos_tool_error_ratio_after"] == 0.0
    assert steps[1]["roc/acc_before"] == pytest.approx(0.5)
    assert "roc/rows_before" not in steps[2]  # a non-numeric value is skipped, never fatal
    assert steps[2]["critic/score/mean"] == 0.5


def test_torn_jsonl_and_missing_columns(tmp_path, capsys):
    lines = ['{"step": 1, "data": {"critic/score/mean": 0.5, "timing_s/step": 3.0, "flag": true}}\n', '{"step": 2, "da']
    steps = parse_jsonl(lines)
    assert len(steps) == 1 and "flag" not in steps[0]
    table = format_table(steps)
    assert "acc(2G)" not in table and "score" in table and "step_s" in table
    assert math.isclose(steps[0]["timing_s/step"], 3.0)

    empty = tmp_path / "empty.log"
    empty.write_text("no metrics here\n")
    assert main([str(empty)]) == 1
    log = tmp_path / "console.log"
    log.write_text(concat_dict_to_str(STEP1, step=1) + "\n")
    assert main([str(log)]) == 0
    assert "0.050" in capsys.readouterr().out
