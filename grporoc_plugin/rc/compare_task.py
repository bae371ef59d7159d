"""The miniature task of the RC-GRPO comparison (:mod:`grporoc_plugin.rc.compare`), and its reward function.

"What is 7?" -> ``<answer>\\boxed{7}</answer>``: copy a digit from the question into the boxed answer, which a small
model learns in a few hundred SFT steps on CPU (a phase transition around step 300). RCTP trajectories are of mixed
quality, half correct (labelled with the high token) and half a wrong digit (labelled low), so the warm start answers
correctly on demand under ``<|high_reward|>`` and wrongly under ``<|low_reward|>``: the peaked SFT policy of the
paper's "paradox of perfection", whose GRPO groups are mostly all-correct. Pure Python plus pandas for the files.

``compute_score`` is verl's ``custom_reward_function`` (``reward.custom_reward_function.path`` = this file):
``acc`` 1 when the last ``\\boxed{}`` holds the ground truth.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

DATA_SOURCE = "grporoc/rc_copy"
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def question(n: int) -> str:
    return f"What is {n}?"


def answer(n: int) -> str:
    return f"<answer>\\boxed{{{n}}}</answer>"


def rctp_trajectories(count: int, seed: int, correct_share: float = 0.5) -> list[dict]:
    """``count`` single-turn trajectories in verl's SFT format with ``reward`` 1 (right digit) or 0 (another one)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        n = rng.randint(1, 9)
        ok = rng.random() < correct_share
        shown = n if ok else rng.choice([m for m in range(1, 10) if m != n])
        messages = [{"role": "user", "content": question(n)}, {"role": "assistant", "content": answer(shown)}]
        rows.append({"messages": messages, "reward": float(ok)})
    return rows


def write_rl_data(out_dir: str | Path, n_train: int = 256, n_val: int = 36, seed: int = 1) -> tuple[str, str]:
    """verl RL parquets (``prompt``, ``reward_model.ground_truth``, ``extra_info.index``); returns (train, val)."""
    import pandas as pd

    rng = random.Random(seed)
    paths = []
    for split, size in (("train", n_train), ("val", n_val)):
        digits = [rng.randint(1, 9) for _ in range(size)] if split == "train" else [1 + i % 9 for i in range(size)]
        rows = [
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": question(n)}],
                "ability": "copy",
                "reward_model": {"style": "rule", "ground_truth": str(n)},
                "extra_info": {"split": split, "index": i},
            }
            for i, n in enumerate(digits)
        ]
        path = Path(out_dir) / f"{split}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path, index=False)
        paths.append(str(path))
    return paths[0], paths[1]


def is_correct(text: str, ground_truth: str) -> bool:
    found = _BOXED.findall(text)
    return bool(found) and found[-1].strip() == str(ground_truth).strip()


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """verl custom reward: ``{"score": acc, "acc": acc}``."""
    acc = float(is_correct(solution_str, ground_truth))
    return {"score": acc, "acc": acc}
