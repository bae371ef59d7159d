"""RCTP data builder: trajectories with outcomes -> verl SFT data whose prompts carry the reward token of the outcome.

    python -m grporoc_plugin.rc.builder TRAJECTORIES OUT.parquet [--outcome-key reward] [--threshold 0.5]
        [--position system_suffix|user_prefix] [--separator " "] [--high-token ...] [--low-token ...]
        [--tokenizer MODEL_DIR]

Input: a parquet or jsonl file in verl's multi-turn SFT format (``messages``: a list of ``{"role", "content", ...}``
dicts, optionally ``tools``) plus an outcome per row (``--outcome-key``; a dotted key reaches into a dict column,
e.g. ``extra_info.acc``). Each row is labelled with the high token if its outcome is strictly above ``--threshold``,
else the low token, and the token is placed in its prompt by the same function the RL rollout uses
(:func:`grporoc_plugin.rc.inject.inject_token`). Output: a parquet for ``verl.trainer.sft_trainer``
(``data.train_files``) with ``messages`` (conditioned), ``tools`` when given, ``rc_token`` and ``outcome``.

Mixed quality is the point (RC-GRPO, arXiv 2602.03025): failures stay in, labelled low, so the policy learns both
behaviours on demand; the builder prints the high share (third-party implementations use it as ``p_high``). With
``--tokenizer`` it first checks that the tokens exist and the chat template can take the position.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grporoc_plugin.rc.inject import POSITION_REGISTRY, inject_token
from grporoc_plugin.rc.settings import RC_TOKEN_FIELD, RCSettings

__all__ = ["BuildReport", "build_rctp", "main", "read_trajectories"]


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_rctp` wrote."""

    rows: int
    """Trajectories written."""
    high: int
    """Rows labelled with the high token (outcome above the threshold)."""
    out_path: str
    """The parquet written."""

    @property
    def high_share(self) -> float:
        return self.high / self.rows if self.rows else math.nan


def read_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.parquet`` or ``.jsonl`` file as plain dicts (numpy arrays from parquet become lists)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if path.suffix == ".parquet":
        import pandas as pd
        from verl.utils.py_functional import convert_nested_value_to_list_recursive

        frame = pd.read_parquet(path)
        return [convert_nested_value_to_list_recursive(row) for row in frame.to_dict(orient="records")]
    raise ValueError(f"{path}: expected a .parquet or .jsonl file of trajectories")


def _outcome(row: Mapping[str, Any], key: str, index: int) -> float:
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"row {index}: no outcome {key!r} (columns: {sorted(row)}); set --outcome-key")
        value = value[part]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {index}: outcome {key!r} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"row {index}: outcome {key!r} = {value!r} is not finite")
    return number


def build_rctp(
    rows: list[Mapping[str, Any]],
    out_path: str | Path,
    *,
    settings: RCSettings | None = None,
    outcome_key: str = "reward",
    threshold: float = 0.5,
    messages_key: str = "messages",
    tools_key: str = "tools",
) -> BuildReport:
    """Label, condition and write ``rows`` (see the module docstring); ``settings`` gives tokens and position."""
    import pandas as pd

    settings = settings if settings is not None else RCSettings()
    if not rows:
        raise ValueError("build_rctp: no trajectories")
    out = []
    for index, row in enumerate(rows):
        if messages_key not in row:
            raise KeyError(f"row {index}: no {messages_key!r} column (verl's multi-turn SFT format)")
        outcome = _outcome(row, outcome_key, index)
        token = settings.high_token if outcome > threshold else settings.low_token
        record = {
            messages_key: inject_token(row[messages_key], token, settings.position, settings.separator),
            RC_TOKEN_FIELD: token,
            "outcome": outcome,
        }
        if row.get(tools_key) is not None:
            record[tools_key] = row[tools_key]
        out.append(record)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(out).to_parquet(out_path, index=False)
    return BuildReport(len(out), sum(r[RC_TOKEN_FIELD] == settings.high_token for r in out), str(out_path))


def main(argv: list[str] | None = None) -> BuildReport:
    defaults = RCSettings()
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.rc.builder", description=__doc__.split("\n")[0])
    parser.add_argument("trajectories", help=".parquet or .jsonl in verl's SFT format, with an outcome per row")
    parser.add_argument("out", help="output parquet (verl SFT data.train_files)")
    parser.add_argument("--outcome-key", default="reward", help="outcome column; dotted keys reach into dicts")
    parser.add_argument("--threshold", type=float, default=0.5, help="high token when outcome > threshold")
    parser.add_argument("--position", default=defaults.position, choices=sorted(POSITION_REGISTRY))
    parser.add_argument("--separator", default=defaults.separator)
    parser.add_argument("--high-token", default=defaults.high_token)
    parser.add_argument("--low-token", default=defaults.low_token)
    parser.add_argument("--vocab", default=defaults.vocab, choices=["special", "text"])
    parser.add_argument("--tokenizer", default=None, help="model dir: check the tokens and the chat template first")
    args = parser.parse_args(argv)
    from grporoc_plugin.rc.settings import check_tokenizer, resolve_rc_settings

    settings = resolve_rc_settings(
        {
            "high_token": args.high_token,
            "low_token": args.low_token,
            "position": args.position,
            "separator": args.separator,
            "vocab": args.vocab,
        }
    )
    if args.tokenizer:
        from transformers import AutoTokenizer

        check_tokenizer(settings, AutoTokenizer.from_pretrained(args.tokenizer))
    report = build_rctp(
        read_trajectories(args.trajectories),
        args.out,
        settings=settings,
        outcome_key=args.outcome_key,
        threshold=args.threshold,
    )
    print(f"RCTP data: {report.rows} trajectories, high share {report.high_share:.3f} -> {report.out_path}")
    return report


if __name__ == "__main__":
    main()
