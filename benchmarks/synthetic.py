"""Seeded synthetic GRPO-RoC batch: P prompts x R rollouts of multi-turn tool-using responses (several KB each).

Each response is what the release decodes after the prompt's ``<|im_start|>assistant\\n<reason>`` (special tokens
kept): reasoning prose, ``<tool_call>`` JSON with Python code, tool responses in the code-judge format (spec §4.3)
appended as ``<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n``, and a
final ``</reason>\\n<answer>...\\boxed{..}...</answer><|im_end|>``. The structured counters (docs/CONTRACTS.md names)
are built from the same choices, so they agree with the text.

With the defaults (``quirks=False``) every exec error carries "Error" in its text and nothing else does, answer tags
appear only in model turns, and ``truncated`` always means "final turn has no ``<|im_end|>``". Then the structured
penalties in release mode (``error_kinds=("exec",)``, ``turn_count="compat"``) equal the release's text penalties
exactly. ``quirks=True`` adds the release's blind spots: stdout containing "error", exception types without "Error",
tool-server failures and hallucinated ``<tool_response>`` blocks.

Usage: ``batch = make_batch(prompts=512, rollouts=32, seed=0)``; generation takes a few seconds and is not timed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np

__all__ = ["SyntheticBatch", "make_batch"]

TOOL_NAME = "python_code_with_standard_io"
MAX_TOOL_RESPONSE_CHARS = 256  # verl default max_tool_response_length, truncated in the middle (spec §4.2)

_WORDS = (
    "let us consider the equation where both sides are positive integers so we can bound the sum from above and "
    "below then check small cases carefully the function is increasing on the interval hence the minimum occurs at "
    "the endpoint substituting gives a quadratic whose discriminant must be a perfect square therefore the number of "
    "solutions equals the count of divisors modulo prime residue triangle circle radius angle chord tangent area "
    "volume probability expected value sequence recurrence induction base case step assume contradiction parity "
    "even odd gcd lcm factorial binomial coefficient polynomial root complex real imaginary vector matrix determinant"
).split()
_MATH = (
    r"$x^2 + y^2 = 25$",
    r"$\frac{a+b}{2} \ge \sqrt{ab}$",
    r"$\binom{10}{3} = 120$",
    r"$n \equiv 3 \pmod{7}$",
    r"$\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$",
    r"$f(x) = 3x^3 - 2x + 1$",
    r"$\angle ABC = 60^\circ$",
    r"$|z|^2 = z\bar{z}$",
)
_UNICODE = ("≤", "≥", "π", "√", "∑", "é", "→", "∞", "×")  # a share of responses are not pure ASCII (UCS-2 strings)
_CODE = (
    "from sympy import *\nx = symbols('x')\nprint(solve(x**2 - {a}*x + {b}, x))",
    "count = 0\nfor n in range(1, {a}):\n    if n % {b} == 3:\n        count += 1\nprint(count)",
    "import math\nprint(math.comb({a}, {b}))",
    "from fractions import Fraction\ns = sum(Fraction(1, k*(k+1)) for k in range(1, {a}))\nprint(s)",
    "def f(n):\n    return n*n + {b}*n + 1\nprint([f(i) for i in range({a} % 9)])",
    "import itertools\nprint(sum(1 for p in itertools.permutations(range({b} % 7)) if p[0] < p[-1]))",
    "a, b = {a}, {b}\nwhile b:\n    a, b = b, a % b\nprint(a)",
    "import numpy as np\nM = np.arange({b}).reshape(-1, 1) @ np.ones((1, 3))\nprint(M.sum())",
)
_EXC = (  # exception types whose name contains "Error" (counted by the release's substring test)
    ("NameError", "name 'x' is not defined"),
    ("ZeroDivisionError", "division by zero"),
    ("TypeError", "unsupported operand type(s) for +: 'int' and 'str'"),
    ("IndexError", "list index out of range"),
    ("ValueError", "math domain error"),
    ("SyntaxError", "invalid syntax"),
)
_EXC_QUIRK = (("StopIteration", ""), ("Exception", "no solution found"))  # exec errors without "Error" in the name
_PARSE_ERRORS = (
    "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    "Expecting ',' delimiter: line 1 column 87 (char 86)",
    "Unterminated string starting at: line 1 column 43 (char 42)",
    "'name'",
)


@dataclass
class SyntheticBatch:
    """Texts plus the matching per-trajectory counters, in rollout order (group = prompt)."""

    #: decoded responses (special tokens kept), one per trajectory
    texts: list[str]
    #: prompt id per trajectory (int64), contiguous blocks of ``rollouts``
    group_ids: np.ndarray
    #: binary outcome (bool)
    correct: np.ndarray
    #: tool responses in the trajectory, malformed calls included (int64)
    tool_calls: np.ndarray
    #: per-kind tool-error counts: parse, exec, timeout, infra (int64 each)
    errors_by_kind: dict[str, np.ndarray]
    #: closed answer tags in model-generated text (int64)
    answer_tags: np.ndarray
    #: release balance rule on model text (bool)
    answer_tags_balanced: np.ndarray
    #: assistant turns, first one included (int64)
    assistant_turns: np.ndarray
    #: response budget hit: final turn has no <|im_end|> (bool)
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def total_chars(self) -> int:
        return sum(len(t) for t in self.texts)


def _middle_truncate(text: str, limit: int = MAX_TOOL_RESPONSE_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "...(truncated)..." + text[-half:]


def _prose(rng: random.Random, n_chars: int, unicode: bool) -> str:
    parts: list[str] = []
    size = 0
    while size < n_chars:
        sentence = " ".join(rng.choices(_WORDS, k=rng.randint(8, 22)))
        if rng.random() < 0.35:
            sentence += " " + rng.choice(_MATH)
        if unicode and rng.random() < 0.3:
            sentence += " " + rng.choice(_UNICODE) + " " + rng.choice(_WORDS)
        sentence = sentence[0].upper() + sentence[1:] + ("." if rng.random() < 0.8 else ":\n")
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)


def _tool_call(rng: random.Random, malformed: bool) -> str:
    code = rng.choice(_CODE).format(a=rng.randint(10, 999), b=rng.randint(2, 60))
    if malformed:  # the classic: single-quoted keys, i.e. not JSON
        body = f"{{'name': '{TOOL_NAME}', 'arguments': {{'code': {code!r}}}}}"
    else:
        body = json.dumps({"name": TOOL_NAME, "arguments": {"code": code, "input": ""}})
    return f"\n<tool_call>\n{body}\n</tool_call>"


def _tool_response(rng: random.Random, outcome: str, quirks: bool) -> str:
    t = f"execution time: {rng.uniform(0.01, 2.5):.2f}s"
    if outcome == "ok":
        out = " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(rng.randint(1, 40)))
        if quirks and rng.random() < 0.15:
            out = f"relative error {rng.random():.1e}\n" + out  # release false positive
        text = f"Tool call success\nstdout: {out}\n{t}"
    elif outcome == "exec":
        exc, msg = rng.choice(_EXC_QUIRK if quirks and rng.random() < 0.2 else _EXC)
        line = rng.randint(1, 9)
        text = f"Tool call failure\nreason: \nstderr: {exc} at line {line}: {msg}\n    x = compute({line})\n{t}"
    elif outcome == "timeout":
        text = "Tool call failure\nreason: worker_timeout\nstdout: Suicide from timeout.\nexecution time: 10.00s"
    elif outcome == "parse":
        text = "Failed to decode tool call: " + rng.choice(_PARSE_ERRORS)
    else:  # infra
        text = "Error when executing tool: ClientConnectorError: Cannot connect to host localhost:8088"
    return f"<|im_start|>user\n<tool_response>\n{_middle_truncate(text)}\n</tool_response><|im_end|>\n"


def _trajectory(rng: random.Random, correct: bool, quirks: bool) -> tuple[str, dict]:
    """One response text and its counters."""
    unicode = rng.random() < 0.2
    n_tools = rng.choices((0, 1, 2, 3, 4), weights=(12, 30, 28, 18, 12))[0]
    outcomes = rng.choices(
        ("ok", "exec", "timeout", "parse", "infra"),
        weights=(70, 15, 6, 7, 2 if quirks else 0),
        k=n_tools,
    )
    truncated = rng.random() < 0.05
    # answer layout: 1 clean (most), a premature extra answer, none, unclosed, nested
    layout = rng.choices(("one", "two", "none", "unclosed", "nested"), weights=(84, 8, 4, 2, 2))[0]
    if truncated:
        layout = rng.choice(("none", "unclosed"))
    answer = rng.randint(-50, 5000)
    boxed = f"\\boxed{{{answer}}}"

    pieces: list[str] = []
    for turn in range(n_tools + 1):
        chunk = _prose(rng, rng.randint(500, 1800), unicode)
        if layout == "two" and turn == 0:
            chunk += f"\nTentatively <answer>{boxed}</answer> but let me verify."
        final = turn == n_tools
        if final:
            chunk += "\n" + _prose(rng, rng.randint(100, 400), unicode)
            if layout == "one" or layout == "two":
                chunk += f"\n</reason>\n<answer>\nThe final answer is {boxed}.\n</answer>"
            elif layout == "unclosed":
                chunk += f"\n</reason>\n<answer>\nThe final answer is {boxed}"
            elif layout == "nested":
                chunk += f"\n</reason>\n<answer>\n<answer>{boxed}</answer>\n</answer>"
            if not truncated:
                chunk += "<|im_end|>"
        else:
            chunk += _tool_call(rng, malformed=outcomes[turn] == "parse") + "<|im_end|>\n"
        pieces.append(chunk)
        if not final:
            pieces.append(_tool_response(rng, outcomes[turn], quirks))
            pieces.append("<|im_start|>assistant\n")
    if quirks and rng.random() < 0.01:  # model hallucinates a tool response in its own text
        fake = "\n<tool_response>\nTool call success\nstdout: 42\n</tool_response>\n"
        pieces.insert(len(pieces) - 1, fake)
    text = "".join(pieces)

    # release tag rules on the model turns: "<answer><answer>x</answer></answer>" pairs lazily into one closed match
    closed, balanced = {"one": (1, True), "two": (2, True), "none": (0, True), "unclosed": (0, False)}.get(
        layout, (1, False)
    )
    counters = {
        "tool_calls": n_tools,
        "parse": outcomes.count("parse"),
        "exec": outcomes.count("exec"),
        "timeout": outcomes.count("timeout"),
        "infra": outcomes.count("infra"),
        "answer_tags": closed,
        "balanced": balanced,
        "assistant_turns": n_tools + 1,
        "truncated": truncated,
        "correct": correct and layout != "none",
    }
    return text, counters


def make_batch(prompts: int = 512, rollouts: int = 32, seed: int = 0, quirks: bool = False) -> SyntheticBatch:
    """Build a seeded batch of ``prompts * rollouts`` trajectories (rollout order: prompt-major, contiguous groups)."""
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    # U-shaped per-prompt solve rates: some all-correct / all-wrong groups, as mid-training
    solve_rate = np_rng.beta(0.7, 0.7, size=prompts)
    texts: list[str] = []
    rows: list[dict] = []
    for p in range(prompts):
        for _ in range(rollouts):
            text, counters = _trajectory(rng, bool(rng.random() < solve_rate[p]), quirks)
            texts.append(text)
            rows.append(counters)

    def col(key: str, dtype) -> np.ndarray:
        return np.fromiter((r[key] for r in rows), dtype=dtype, count=len(rows))

    return SyntheticBatch(
        texts=texts,
        group_ids=np.repeat(np.arange(prompts, dtype=np.int64), rollouts),
        correct=col("correct", bool),
        tool_calls=col("tool_calls", np.int64),
        errors_by_kind={k: col(k, np.int64) for k in ("parse", "exec", "timeout", "infra")},
        answer_tags=col("answer_tags", np.int64),
        answer_tags_balanced=col("balanced", bool),
        assistant_turns=col("assistant_turns", np.int64),
        truncated=col("truncated", bool),
    )
