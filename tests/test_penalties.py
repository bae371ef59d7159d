"""Penalties (spec §1.4): the release's text rules reproduced exactly, the structured counters' paper formula."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from grporoc_plugin.penalties import (
    PenaltyConfig,
    combine_penalties,
    count_answer_tags,
    structured_penalties,
    text_penalties,
)
from grporoc_plugin.reference import release_answer_tag_repetition, release_error_ratio

REPO = Path(__file__).resolve().parents[1]


def _load(rel_path: str, name: str):
    """Import a repo file by path: site-packages ships a top-level ``tests`` package (verl's) that shadows ours, and
    ``benchmarks`` is not installed."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / rel_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---------------------------------------------------------------------------------------------------------------------
# Responses built with the release's chat template: what follows the prompt's "<|im_start|>assistant\n<reason>".

TOOL_OK = "Tool call success\nstdout: 5\nexecution time: 0.03s"
TOOL_NAME_ERROR = "Tool call failure\nreason: \nstderr: NameError at line 1: name 'x' is not defined"
TOOL_ZERO_DIV = "Tool call failure\nreason: \nstderr: ZeroDivisionError at line 2: division by zero"
TOOL_TIMEOUT = "Tool call failure\nreason: worker_timeout\nstdout: Suicide from timeout.\nexecution time: 10.00s"
TOOL_PARSE = "Failed to decode tool call: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
TOOL_FALSE_POS = "Tool call success\nstdout: relative error 1e-9\nexecution time: 0.02s"
ANSWER = "</reason>\n<answer>\\boxed{5}</answer>"


def tool_round(tool_text: str, code: str = "print(2 + 3)") -> str:
    """One assistant turn ending in a tool call, the tool response, and the next assistant header."""
    call = json.dumps({"name": "python_code_with_standard_io", "arguments": {"code": code, "input": ""}})
    return (
        f"Let me compute it.\n<tool_call>\n{call}\n</tool_call><|im_end|>\n"
        f"<|im_start|>user\n<tool_response>\n{tool_text}\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# (response, release p_err, release p_format, structured counters, paper p_err, paper p_format)
# counters: tool_calls, parse, exec, timeout, answer_tags, balanced, assistant_turns, truncated
VECTORS = {
    "no tool, one answer": (f"5 is small. {ANSWER}<|im_end|>", 0.5, 1.0, (0, 0, 0, 0, 1, True, 1, False), 0.5, 0.0),
    "no tool, no answer tag": ("It is 5.<|im_end|>", 0.5, 1.0, (0, 0, 0, 0, 0, True, 1, False), 0.5, 1.0),
    "1 tool success, 1 answer": (
        tool_round(TOOL_OK) + f"So 5. {ANSWER}<|im_end|>",
        0.0,
        0.0,
        (1, 0, 0, 0, 1, True, 2, False),
        0.0,
        0.0,
    ),
    "1 tool NameError, 1 answer": (
        tool_round(TOOL_NAME_ERROR, "print(x)") + f"{ANSWER}<|im_end|>",
        1.0,
        0.0,
        (1, 0, 1, 0, 1, True, 2, False),
        1.0,
        0.0,
    ),
    "1 tool worker_timeout, 1 answer": (
        tool_round(TOOL_TIMEOUT, "while True: pass") + f"{ANSWER}<|im_end|>",
        0.0,
        0.0,
        (1, 0, 0, 1, 1, True, 2, False),
        1.0,
        0.0,
    ),
    "1 tool JSON parse failure, 1 answer": (
        tool_round(TOOL_PARSE).replace('{"name"', "{'name'") + f"{ANSWER}<|im_end|>",
        0.0,
        0.0,
        (1, 1, 0, 0, 1, True, 2, False),
        1.0,
        0.0,
    ),
    "2 tools (1 ZeroDivisionError), 2 answers": (
        tool_round(TOOL_ZERO_DIV, "print(1/0)")
        + "Maybe <answer>\\boxed{4}</answer> but check again."
        + tool_round(TOOL_OK)
        + f"{ANSWER}<|im_end|>",
        0.5,
        0.5,
        (2, 0, 1, 0, 2, True, 3, False),
        0.5,
        1 / 3,
    ),
    "1 tool, unclosed answer": (
        tool_round(TOOL_OK) + "</reason>\n<answer>\\boxed{5}<|im_end|>",
        0.0,
        1.0,
        (1, 0, 0, 0, 0, False, 2, False),
        0.0,
        1.0,
    ),
    "1 tool, final turn truncated, 1 answer": (
        tool_round(TOOL_OK) + f"{ANSWER} and more text that runs out of bud",
        0.0,
        1.0,
        (1, 0, 0, 0, 1, True, 2, True),
        0.0,
        0.0,
    ),
    "1 tool success, stdout 'relative error 1e-9'": (
        tool_round(TOOL_FALSE_POS) + f"{ANSWER}<|im_end|>",
        1.0,
        0.0,
        (1, 0, 0, 0, 1, True, 2, False),
        0.0,
        0.0,
    ),
}
NAMES = list(VECTORS)


def _counters(rows):
    cols = list(zip(*rows, strict=True))
    return dict(
        tool_calls=np.array(cols[0]),
        errors_by_kind={"parse": np.array(cols[1]), "exec": np.array(cols[2]), "timeout": np.array(cols[3])},
        answer_tags=np.array(cols[4]),
        answer_tags_balanced=np.array(cols[5]),
        assistant_turns=np.array(cols[6]),
        truncated=np.array(cols[7]),
    )


def test_spec_vectors_text_penalties_exact():
    texts = [VECTORS[k][0] for k in NAMES]
    p_err, p_format = text_penalties(texts)
    assert p_err.dtype == np.float64 and p_format.dtype == np.float64
    for i, name in enumerate(NAMES):
        _, want_err, want_fmt, *_ = VECTORS[name]
        assert (p_err[i], p_format[i]) == (want_err, want_fmt), name
        # the reference transcription agrees with the spec table too (guards the table itself)
        assert (release_error_ratio(texts[i]), release_answer_tag_repetition(texts[i])[0]) == (want_err, want_fmt)
    total = combine_penalties(p_err, p_format, PenaltyConfig())
    assert total.tolist() == [1.5, 1.5, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_spec_vectors_structured_paper_mode():
    c = _counters([VECTORS[k][3] for k in NAMES])
    p_err, p_format, p_total = structured_penalties(
        c["tool_calls"],
        c["errors_by_kind"],
        c["answer_tags"],
        c["answer_tags_balanced"],
        c["assistant_turns"],
        PenaltyConfig(),
        truncated=c["truncated"],
    )
    for i, name in enumerate(NAMES):
        *_, want_err, want_fmt = VECTORS[name]
        assert p_err[i] == want_err, name
        assert math.isclose(p_format[i], want_fmt, abs_tol=0), name
    np.testing.assert_array_equal(p_total, p_err + p_format)


def test_spec_vectors_structured_release_mode_matches_text():
    """error_kinds=("exec",) + compat turn count reproduce the release on every row but the stdout false positive."""
    c = _counters([VECTORS[k][3] for k in NAMES])
    cfg = PenaltyConfig(error_kinds=("exec",), turn_count="compat")
    p_err, p_format, _ = structured_penalties(
        c["tool_calls"],
        c["errors_by_kind"],
        c["answer_tags"],
        c["answer_tags_balanced"],
        c["assistant_turns"],
        cfg,
        truncated=c["truncated"],
    )
    for i, name in enumerate(NAMES):
        _, want_err, want_fmt, *_ = VECTORS[name]
        if "relative error" in name:
            assert p_err[i] == 0.0  # structured counts the run's outcome, not the word "error" in stdout
        else:
            assert p_err[i] == want_err, name
        assert p_format[i] == want_fmt, name


def test_vectors_through_real_tokenizer_decode():
    """Token ids decoded with skip_special_tokens=False give the same penalties; dropping special tokens breaks the
    turn count (spec §7 row 21: every p_format becomes 1)."""
    tok = _load("tests/assets_tokenizer.py", "grporoc_tests_assets_tokenizer").build_tokenizer()
    texts = [VECTORS[k][0] for k in NAMES]
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    kept = [tok.decode(i, skip_special_tokens=False) for i in ids]
    assert kept == texts
    want = text_penalties(texts)
    got = text_penalties(kept)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    stripped = [tok.decode(i, skip_special_tokens=True) for i in ids]
    assert (text_penalties(stripped)[1] == 1.0).all()


# ---------------------------------------------------------------------------------------------------------------------
# Structured formula


def _sp(tool_calls, errors, tags, balanced, turns, cfg=None, truncated=None):
    errors = {k: np.asarray(v) for k, v in errors.items()}
    return structured_penalties(tool_calls, errors, tags, balanced, turns, cfg, truncated=truncated)


ZERO3 = {"parse": [0], "exec": [0], "timeout": [0]}


def test_no_tool_gets_no_tool_p_err():
    p_err, _, _ = _sp([0, 0], {k: [0, 0] for k in ZERO3}, [1, 1], [True, True], [1, 1])
    assert p_err.tolist() == [0.5, 0.5]
    p_err, _, _ = _sp([0], ZERO3, [1], [True], [1], PenaltyConfig(no_tool_p_err=0.2))
    assert p_err.tolist() == [0.2]


def test_infra_errors_never_count_and_error_kinds_subset():
    errs = {"parse": [1], "exec": [1], "timeout": [1], "infra": [1]}
    p_err, _, _ = _sp([4], errs, [1], [True], [5])
    assert p_err.tolist() == [0.75]  # 3 of 4 calls: infra excluded
    p_err, _, _ = _sp([4], errs, [1], [True], [5], PenaltyConfig(error_kinds=("exec",)))
    assert p_err.tolist() == [0.25]
    p_err, _, _ = _sp([4], errs, [1], [True], [5], PenaltyConfig(error_kinds=()))
    assert p_err.tolist() == [0.0]
    # only the counted kinds need to be present
    p_err, _, _ = _sp([2], {"exec": [1]}, [1], [True], [3], PenaltyConfig(error_kinds=("exec",)))
    assert p_err.tolist() == [0.5]


def test_turn_count_paper_vs_compat():
    # single turn, exactly one clean answer: paper 0, release 1 (its turn regex misses the first header)
    _, fmt, _ = _sp([0], ZERO3, [1], [True], [1])
    assert fmt.tolist() == [0.0]
    _, fmt, _ = _sp([0], ZERO3, [1], [True], [1], PenaltyConfig(turn_count="compat"))
    assert fmt.tolist() == [1.0]
    # 2 tools + 2 answers (3 turns): paper 1/3, release 1/2
    _, fmt, _ = _sp([2], {k: [0] for k in ZERO3}, [2], [True], [3])
    assert fmt.tolist() == [1 / 3]
    _, fmt, _ = _sp([2], {k: [0] for k in ZERO3}, [2], [True], [3], PenaltyConfig(turn_count="compat_regex"))
    assert fmt.tolist() == [0.5]
    # compat: a truncated final turn loses its <|im_end|>, so one turn fewer: 3 turns -> 1 -> min(1/1, 1)
    _, fmt, _ = _sp([2], {k: [0] for k in ZERO3}, [2], [True], [3], PenaltyConfig(turn_count="compat"), [True])
    assert fmt.tolist() == [1.0]
    # many answers saturate at 1
    _, fmt, _ = _sp([1], ZERO3, [7], [True], [2])
    assert fmt.tolist() == [1.0]


def test_unbalanced_nested_or_missing_tags_get_one():
    _, fmt, _ = _sp([1, 1, 1], {k: [0, 0, 0] for k in ZERO3}, [1, 0, 1], [False, False, True], [2, 2, 2])
    assert fmt[:2].tolist() == [1.0, 1.0] and fmt[2] == 0.0
    _, fmt, _ = _sp([1], ZERO3, [0], [True], [2])  # no closed tag at all
    assert fmt.tolist() == [1.0]


def test_count_answer_tags_release_rules():
    assert count_answer_tags("") == (0, True)
    assert count_answer_tags("<answer>5</answer>") == (1, True)
    assert count_answer_tags("<answer>1</answer> then <answer>2</answer>") == (2, True)
    assert count_answer_tags("<answer>5") == (0, False)
    assert count_answer_tags("5</answer>") == (0, False)
    assert count_answer_tags("<answer><answer>5</answer></answer>") == (1, False)  # nested: lazy pairing
    assert count_answer_tags("</answer><answer>") == (0, False)


def test_p_total_flags():
    p_err, fmt, total = _sp([2], {"parse": [1], "exec": [0], "timeout": [0]}, [2], [True], [2])
    assert (p_err[0], fmt[0], total[0]) == (0.5, 0.5, 1.0)
    for use_err, use_fmt, want in ((True, False, 0.5), (False, True, 0.5), (False, False, 0.0)):
        cfg = PenaltyConfig(use_error_ratio=use_err, use_answer_format=use_fmt)
        assert _sp([2], {"parse": [1], "exec": [0], "timeout": [0]}, [2], [True], [2], cfg)[2].tolist() == [want]


def test_malformed_counters_do_not_crash():
    obj = lambda *v: np.array(v, dtype=object)  # noqa: E731 - non_tensor_batch columns are object arrays
    p_err, fmt, total = structured_penalties(
        obj(3, None, -2, 2),
        {"parse": obj(0, 0, 0, "x"), "exec": obj(5, 0, 1, float("nan")), "timeout": obj(-1, 0, 0, 0)},
        obj(1, 1, None, 1),
        obj(True, None, True, 1),
        obj(2, 2, 2, None),
    )
    assert p_err.tolist() == [1.0, 0.5, 0.5, 0.0]  # errors > calls clip to 1; None/negative calls = no tool
    assert fmt.tolist() == [0.0, 1.0, 1.0, 1.0]  # None balanced / None tags / zero turns -> worst
    assert np.isfinite(total).all()


def test_empty_inputs():
    p_err, fmt = text_penalties([])
    assert p_err.shape == fmt.shape == (0,) and p_err.dtype == np.float64
    out = _sp([], {k: [] for k in ZERO3}, [], [], [])
    assert all(a.shape == (0,) for a in out)
    assert [a.tolist() for a in text_penalties(["", None])] == [[0.5, 0.5], [1.0, 1.0]]
    # non_tensor_batch["response_text"] is an object ndarray
    texts = np.array([VECTORS[k][0] for k in NAMES], dtype=object)
    assert text_penalties(texts)[0].tolist() == [VECTORS[k][1] for k in NAMES]


def test_bad_config_fails_naming_the_field():
    with pytest.raises(ValueError, match=r"error_kinds.*'infra'.*not the model's fault"):
        PenaltyConfig(error_kinds=("exec", "infra"))
    with pytest.raises(ValueError, match=r"error_kinds: unknown kind 'exec_error'"):
        PenaltyConfig(error_kinds=["exec_error"])
    with pytest.raises(ValueError, match=r"error_kinds must be a list"):
        PenaltyConfig(error_kinds="exec")
    with pytest.raises(ValueError, match=r"error_kinds has duplicates"):
        PenaltyConfig(error_kinds=("exec", "exec"))
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"no_tool_p_err"):
            PenaltyConfig(no_tool_p_err=bad)
    with pytest.raises(ValueError, match=r"use_error_ratio must be a bool"):
        PenaltyConfig(use_error_ratio="false")
    with pytest.raises(ValueError, match=r"use_answer_format must be a bool"):
        PenaltyConfig(use_answer_format=1)
    with pytest.raises(ValueError, match=r"turn_count must be one of"):
        PenaltyConfig(turn_count="paper")
    assert PenaltyConfig(error_kinds=["timeout", "parse"]).error_kinds == ("timeout", "parse")  # YAML list ok
    with pytest.raises(ValueError, match=r"unknown kinds \['exec_error'\]"):
        _sp([1], {"exec_error": [1], **ZERO3}, [1], [True], [2])
    with pytest.raises(ValueError, match=r"lacks \['timeout'\].*PenaltyConfig.error_kinds"):
        _sp([1], {"parse": [0], "exec": [0]}, [1], [True], [2])
    with pytest.raises(ValueError, match=r"assistant_turns has 2 entries, expected 1"):
        _sp([1], ZERO3, [1], [True], [2, 2])


# ---------------------------------------------------------------------------------------------------------------------
# Fuzz parity of the fast text path with the transcription

TOKENS = [
    "<tool_response>",
    "</tool_response>",
    "<answer>",
    "</answer>",
    "<|im_start|>assistant",
    "<|im_start|>assistant\n",
    "<|im_start|>user\n",
    "<|im_end|>",
    "<|im_start|>",
    "ERROR",
    "error",
    "Error",
    "eRrOr",
    "err",
    "or",
    "answer>",
    "/answer>",
    "<",
    "</",
    "<tool_response",
    "İ",
    "\n",
]
FILLER = st.text(alphabet=st.sampled_from(list("ab <>/|\n\tRrEeOo_é∑İ")), max_size=6)
CHUNKS = [  # well-formed pieces, so multi-answer / multi-turn / multi-tool combinations are common
    "<answer>\\boxed{1}</answer>",
    "<|im_start|>assistant\nstep<|im_end|>\n",
    "<|im_start|>user\n<tool_response>\nTool call failure\nstderr: NameError\n</tool_response><|im_end|>\n",
    "<|im_start|>user\n<tool_response>\nTool call success\nstdout: 1\n</tool_response><|im_end|>\n",
    "<|im_start|>assistant\n",
    "<|im_end|>",
]
TAG = st.sampled_from(TOKENS)
# dense tag sequences explore orderings; filler-rich ones explore near-miss spellings and case variants
TEXT = st.one_of(
    st.lists(TAG, max_size=14).map("".join),
    st.lists(st.one_of(TAG, TAG, FILLER), max_size=30).map("".join),
    st.lists(st.one_of(st.sampled_from(CHUNKS), TAG), max_size=10).map("".join),
)


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=4))
@example(["<answer>5/answer><|im_start|>assistant<|im_end|>"])  # "/answer>" without "<" is no closing tag
@example(["<|im_start|>assistant<answer>1</answer><|im_end|><|im_start|>assistant"])
@example(["<tool_response>İERROR</tool_response><tool_response>x</tool_response>"])
def test_fuzz_text_penalties_match_release(texts):
    p_err, p_format = text_penalties(texts)
    for i, text in enumerate(texts):
        assert p_err[i] == release_error_ratio(text), text
        assert p_format[i] == release_answer_tag_repetition(text)[0], text
        closed = len(re.findall(r"<answer>.*?</answer>", text, re.DOTALL))
        balanced = text.count("<answer>") == closed and text.count("</answer>") == closed
        assert count_answer_tags(text) == (closed, balanced), text


def test_synthetic_batch_text_and_counters_agree():
    """The benchmark's generator: fast text path == transcription on realistic responses (quirks on); counters in
    release mode == text penalties when the release's substring quirks are off."""
    make_batch = _load("benchmarks/synthetic.py", "grporoc_bench_synthetic").make_batch

    b = make_batch(prompts=8, rollouts=16, seed=3, quirks=True)
    p_err, p_format = text_penalties(b.texts)
    assert p_err.tolist() == [release_error_ratio(t) for t in b.texts]
    assert p_format.tolist() == [release_answer_tag_repetition(t)[0] for t in b.texts]

    b = make_batch(prompts=8, rollouts=16, seed=4)
    cfg = PenaltyConfig(error_kinds=("exec",), turn_count="compat")
    s_err, s_fmt, _ = structured_penalties(
        b.tool_calls,
        b.errors_by_kind,
        b.answer_tags,
        b.answer_tags_balanced,
        b.assistant_turns,
        cfg,
        truncated=b.truncated,
    )
    t_err, t_fmt = text_penalties(b.texts)
    np.testing.assert_array_equal(s_err, t_err)
    np.testing.assert_array_equal(s_fmt, t_fmt)
    assert len({v for v in t_err.tolist()}) >= 3 and len({v for v in t_fmt.tolist()}) >= 3  # not a trivial batch
