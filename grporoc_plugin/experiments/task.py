"""The experiment's synthetic tool-use task: fixed-shape arithmetic, solved with the sandboxed python tool.

Problems are ``a + b`` or ``a * b`` with two-digit operands and a three-digit answer, asked exactly like the demo's
(``demo.assets.Problem.question``) and stored in the demo's verl parquet format. The fixed shape is what lets a
2-layer model learn the copies the task needs (question -> code, tool output -> answer) within a CPU-sized SFT: every
copy sits at a constant token distance. Failures therefore come from the policy's choices (answering without the
tool) and its sampling noise, not from problems it cannot represent.

The experiment's model also gets a compact chat template: the demo's template with the tool section of the system
prompt (about 200 tokens of JSON schema that never changes) reduced to the tool names. Same ChatML turns, same
Hermes ``<tool_call>`` / ``<tool_response>`` format, so verl's agent loop and the ``grporoc_hermes`` parser see the
same structure; sequences are about half as long, which halves SFT and RL compute on two CPU cores.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = [
    "COMPACT_TOOLS_SECTION",
    "compact_chat_template",
    "make_problems",
    "make_problem",
    "write_dataset",
]

OPERATORS = ("+", "*")
#: The system prompt's tool section in the compact template: the tool names only.
COMPACT_TOOLS_SECTION = (
    "{{- 'Tools:' -}}{%- for tool in tools -%}{{- ' ' + tool.function.name -}}{%- endfor -%}{{- '<|im_end|>\\n' -}}"
)
_TOOLS_START = "{{- '# Tools"
_TOOLS_END = "{%- elif messages and messages[0].role == 'system' -%}"


def compact_chat_template() -> str:
    """The demo's chat template with the tool schemas in the system prompt replaced by the tool names."""
    from grporoc_plugin.demo.assets import CHAT_TEMPLATE

    start, end = CHAT_TEMPLATE.find(_TOOLS_START), CHAT_TEMPLATE.find(_TOOLS_END)
    if start < 0 or end < start:
        raise RuntimeError(
            "grporoc_plugin.demo.assets.CHAT_TEMPLATE changed: its tools section ('# Tools' ... the system-message "
            "branch) was not found, so the experiment's compact template cannot be derived from it"
        )
    return CHAT_TEMPLATE[:start] + COMPACT_TOOLS_SECTION + CHAT_TEMPLATE[end:]


def make_problem(rng: random.Random):
    """``a op b`` with a, b in 10..99, op in + and *, and an answer in 100..999 (a ``demo.assets.Problem``)."""
    from grporoc_plugin.demo.assets import Problem

    while True:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice(OPERATORS)
        answer = a + b if op == "+" else a * b
        if 100 <= answer <= 999:
            return Problem(f"{a} {op} {b}", answer)


def make_problems(n: int, seed: int):
    """``n`` problems as ``demo.trajectories.MathProblem`` (the SFT and calibration input)."""
    from grporoc_plugin.demo.trajectories import MathProblem

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = make_problem(rng)
        out.append(MathProblem(({"role": "user", "content": p.question},), p.answer, p.expression))
    return out


def write_dataset(out_dir: str | Path, *, n_train: int, n_val: int, seed: int) -> tuple[str, str]:
    """verl parquet (the demo's columns) of distinct train and held-out problems; returns (train, val) paths."""
    import pandas as pd

    from grporoc_plugin.demo.assets import DATA_SOURCE

    rng = random.Random(seed)
    seen: set[str] = set()
    problems = []
    while len(problems) < n_train + n_val:
        p = make_problem(rng)
        if p.expression not in seen:  # held-out problems never appear in training
            seen.add(p.expression)
            problems.append(p)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, chunk in (("train", problems[:n_train]), ("val", problems[n_train:])):
        rows = [
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": p.question}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
                "extra_info": {"split": split, "index": i, "question": p.question, "answer": p.answer},
            }
            for i, p in enumerate(chunk)
        ]
        path = out_dir / f"{split}.parquet"
        pd.DataFrame(rows).to_parquet(path, index=False)
        paths.append(str(path))
    return paths[0], paths[1]
