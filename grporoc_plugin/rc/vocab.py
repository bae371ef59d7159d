"""Add the reward tokens to a checkpoint: tokenizer + embedding rows, saved so verl loads it unchanged.

    python -m grporoc_plugin.rc.vocab MODEL_DIR OUT_DIR [--tokens "<|high_reward|>" "<|low_reward|>"]

Each token missing from the tokenizer is added as a *special* added token (never split, stripped by
``skip_special_tokens`` decoding, so reward functions never see it). Its id is ``len(tokenizer)`` at the time:

* when the model has spare embedding rows (Qwen2.5: 151,936 rows for a ~151.7K tokenizer) the new ids fall into
  them and the embedding matrix keeps its shape (``spare rows``);
* otherwise the input (and, if untied, output) embeddings are resized to ``len(tokenizer)`` (``resized``).

Either way the new tokens' rows (untrained spare rows included) are set to the mean of the rows of the existing
vocabulary plus a small seeded perturbation (0.1 x the per-dimension std), so the tokens start near the data
distribution yet distinct from each other. The model and tokenizer are written with ``save_pretrained``: a plain
Hugging Face directory (``config.json``, safetensors, tokenizer files, chat template) for
``actor_rollout_ref.model.path`` and ``model.path`` of verl's SFT trainer.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from grporoc_plugin.rc.settings import RCSettings

__all__ = ["VocabReport", "add_reward_tokens", "main"]


@dataclass(frozen=True)
class VocabReport:
    """What :func:`add_reward_tokens` did."""

    token_ids: dict[str, int]
    """Every requested token and its id in the saved tokenizer."""
    added: tuple[str, ...]
    """Tokens that were new to the tokenizer."""
    rows_before: int
    """Input embedding rows of the original model."""
    rows_after: int
    """Input embedding rows of the saved model."""
    mode: str
    """"spare rows" (the matrix kept its shape), "resized", or "unchanged" (no token was new)."""


def add_reward_tokens(
    model_dir: str, out_dir: str, tokens: tuple[str, ...] | None = None, seed: int = 0
) -> VocabReport:
    """Add ``tokens`` (default: ``algorithm.rc``'s high/low tokens) to the checkpoint at ``model_dir``; save to
    ``out_dir``. Tokens already in the tokenizer keep their id and their trained row."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM, AutoTokenizer

    defaults = RCSettings()
    tokens = tuple(tokens or (defaults.high_token, defaults.low_token))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
    old_len = len(tokenizer)
    new = [t for t in tokens if len(tokenizer.encode(t, add_special_tokens=False)) != 1]
    if new:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True)
    rows_before = model.get_input_embeddings().weight.shape[0]
    mode = "unchanged"
    if new:
        mode = "spare rows"
        if len(tokenizer) > rows_before:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            mode = "resized"
        new_ids = [tokenizer.convert_tokens_to_ids(t) for t in new]
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            matrices = [model.get_input_embeddings().weight]
            output = model.get_output_embeddings()
            if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():  # untied head
                matrices.append(output.weight)
            for weight in matrices:
                trained = weight[: min(old_len, rows_before)].float()
                mean, std = trained.mean(0), trained.std(0)
                for token_id in new_ids:
                    noise = torch.randn(weight.shape[1], generator=generator)
                    weight[token_id] = (mean + 0.1 * std * noise).to(weight.dtype)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    return VocabReport(ids, tuple(new), rows_before, model.get_input_embeddings().weight.shape[0], mode)


def main(argv: list[str] | None = None) -> VocabReport:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.rc.vocab", description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="Hugging Face model directory (tokenizer + weights)")
    parser.add_argument("out_dir", help="where to save the model and tokenizer with the reward tokens")
    parser.add_argument("--tokens", nargs="+", default=None, help="tokens to add (default: the high/low tokens)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new rows' perturbation")
    args = parser.parse_args(argv)
    report = add_reward_tokens(args.model_dir, args.out_dir, tuple(args.tokens) if args.tokens else None, args.seed)
    print(json.dumps(asdict(report), indent=2))
    return report


if __name__ == "__main__":
    main()
