"""Tiny offline assets for CPU end-to-end runs: tokenizer, random Qwen2 model, arithmetic tool-use dataset.

Everything is built deterministically, offline, in a few seconds::

    python -m grporoc_plugin.demo.assets OUT_DIR        # -> OUT_DIR/tiny_qwen2/, OUT_DIR/data/{train,test}.parquet

* Tokenizer: byte-level BPE (``tokenizers``) trained on rendered tool-using math trajectories, Qwen special tokens
  (``<|endoftext|>`` pad, ``<|im_start|>``, ``<|im_end|>`` eos) and Qwen2.5's Hermes tool tags as added tokens, with
  a Qwen2.5-style chat template (tools in the system prompt, ``<tool_call>`` JSON, tool results as
  ``<|im_start|>user\\n<tool_response>...``); verl's ``hermes`` tool parser and Qwen Continuous-Token builder
  work with it.
* Model: a random ``Qwen2ForCausalLM`` (2 layers, hidden 64, tied embeddings) -- fast CPU steps, not a real policy.
* Data: verl-format parquet (``data_source``, ``prompt``, ``ability``, ``reward_model.ground_truth``, ``extra_info``)
  of small integer arithmetic problems asking for a python tool call and a final ``<answer>\\boxed{N}</answer>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass

DATA_SOURCE = "grporoc/arith"
PAD, BOS_IM, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS_IM, EOS]
#: Qwen2.5 keeps its Hermes tags as single (non-special) added tokens; decode() therefore keeps them in the text.
TOOL_TAGS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
DEFAULT_SYSTEM = "You are a helpful assistant."
#: The code tool schema used in the BPE corpus and the SFT helpers (rStar2-Agent's python tool).
TOOL_NAME = "python_code_with_standard_io"
TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Execute Python code with standard input and capture standard output.",
        "parameters": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "The Python code to execute."},
                "input": {"type": "string", "description": "The standard input for the code."},
            },
            "required": ["code", "input"],
        },
    },
}
INSTRUCTION = "Use the python tool to compute it, then give the final answer as <answer>\\boxed{N}</answer>."

# Qwen2.5-style ChatML + Hermes tools. Consecutive tool messages share one user turn (as in Qwen2.5); a single tool
# message renders as <|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n.
CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content -%}{%- for part in content -%}{%- if part.type == 'text' -%}{{ part.text }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages and messages[0].role == 'system' -%}{{- text(messages[0].content) + '\\n\\n' -}}"
    "{%- else -%}{{- '" + DEFAULT_SYSTEM + "\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- elif messages and messages[0].role == 'system' -%}"
    "{{- '<|im_start|>system\\n' + text(messages[0].content) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' and loop.first -%}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + text(message.content) + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant' -}}"
    "{%- if message.content -%}{{- '\\n' + text(message.content) -}}{%- endif -%}"
    "{%- for call in (message.tool_calls or []) -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + fn.name + \'", "arguments": \' -}}'
    "{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + text(message.content) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: its expression (valid Python) and integer answer."""

    expression: str
    answer: int

    @property
    def question(self) -> str:
        return f"What is {self.expression}? {INSTRUCTION}"


def make_problem(rng: random.Random) -> Problem:
    """A small integer expression with 2 or 3 operands (+, -, *)."""
    n_ops = rng.choice((1, 1, 2))
    terms = [str(rng.randint(1, 30))]
    for _ in range(n_ops):
        terms += [rng.choice(("+", "-", "*")), str(rng.randint(1, 30))]
    expression = " ".join(terms)
    return Problem(expression, int(eval(expression)))  # noqa: S307 - digits and + - * only


def tool_trajectory(problem: Problem, tool_name: str = TOOL_NAME) -> list[dict]:
    """An ideal tool-using conversation for ``problem`` (user, tool call, tool result, final answer)."""
    code = f"print({problem.expression})"
    return [
        {"role": "user", "content": problem.question},
        {
            "role": "assistant",
            "content": "Let me compute it with Python.",
            "tool_calls": [
                {"type": "function", "function": {"name": tool_name, "arguments": {"code": code, "input": ""}}}
            ],
        },
        {"role": "tool", "content": f"{problem.answer}\n"},
        {
            "role": "assistant",
            "content": f"The result is {problem.answer}.\n<answer>\\boxed{{{problem.answer}}}</answer>",
        },
    ]


def _render(conversations: list[list[dict]], tools: list[dict] | None) -> list[str]:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=conversations, tools=tools, chat_template=CHAT_TEMPLATE)
    return rendered


def _corpus(seed: int, n: int = 1500) -> list[str]:
    rng = random.Random(seed)
    other_tool = {**TOOL_SCHEMA, "function": {**TOOL_SCHEMA["function"], "name": "code_interpreter"}}
    docs = []
    for i in range(n):
        problem = make_problem(rng)
        conv = tool_trajectory(problem, tool_name=TOOL_NAME if i % 4 else "code_interpreter")
        docs += _render([conv], [TOOL_SCHEMA if i % 4 else other_tool])
        if i % 3 == 0:  # also plain (tool-free) answers and wrong/failed tool output text
            docs += _render([[conv[0], {"role": "assistant", "content": conv[-1]["content"]}]], None)
            docs.append(f"Traceback (most recent call last):\nNameError: name 'x{i % 7}' is not defined\n")
    return docs


def build_tokenizer(out_dir: str, vocab_size: int = 1536, seed: int = 0):
    """Train and save (to ``out_dir``) the byte-level BPE tokenizer; returns the ``PreTrainedTokenizerFast``."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(seed), trainer)
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TOOL_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, pad_token=PAD, additional_special_tokens=[BOS_IM], padding_side="left"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_model(
    out_dir: str,
    tokenizer,
    hidden_size: int = 64,
    intermediate_size: int = 256,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 2048,
    seed: int = 0,
):
    """Save (to ``out_dir``) a random tied-embedding ``Qwen2ForCausalLM`` matching ``tokenizer``; returns it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    return model


def build_reward_model(
    out_dir: str,
    tokenizer,
    num_labels: int = 1,
    hidden_size: int = 64,
    intermediate_size: int = 256,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 2048,
    seed: int = 1,
):
    """Save (to ``out_dir``) a random ``Qwen2ForSequenceClassification`` plus ``tokenizer``; returns the model.

    A stand-in discriminative reward model for CPU runs with ``reward.reward_model.enable=True``: verl loads the
    reward model's tokenizer (and chat template) from the same directory. Its scores are random but deterministic.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        num_labels=num_labels,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model


def _rows(problems: list[Problem], split: str, agent_name: str | None) -> list[dict]:
    rows = []
    for index, problem in enumerate(problems):
        row = {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": problem.question}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(problem.answer)},
            "extra_info": {"split": split, "index": index, "question": problem.question, "answer": problem.answer},
        }
        if agent_name:
            row["agent_name"] = agent_name
        rows.append(row)
    return rows


def build_dataset(out_dir: str, n_train: int = 64, n_test: int = 16, seed: int = 1, agent_name: str | None = None):
    """Write ``train.parquet`` / ``test.parquet`` in verl's RL format to ``out_dir``; returns their paths."""
    import pandas as pd

    rng = random.Random(seed)
    problems = [make_problem(rng) for _ in range(n_train + n_test)]
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for split, chunk in (("train", problems[:n_train]), ("test", problems[n_train:])):
        paths[split] = os.path.join(out_dir, f"{split}.parquet")
        pd.DataFrame(_rows(chunk, split, agent_name)).to_parquet(paths[split], index=False)
    return paths["train"], paths["test"]


def build_all(out_dir: str, **model_sizes) -> dict[str, str]:
    """Build tokenizer + model (``OUT/tiny_qwen2``) and data (``OUT/data``); returns the paths by name."""
    model_dir, data_dir = os.path.join(out_dir, "tiny_qwen2"), os.path.join(out_dir, "data")
    tokenizer = build_tokenizer(model_dir)
    build_model(model_dir, tokenizer, **model_sizes)
    train, test = build_dataset(data_dir)
    return {"model": model_dir, "train": train, "test": test}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m grporoc_plugin.demo.assets", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = build_all(args.out_dir)
    print(json.dumps(paths, indent=2), f"\nbuilt in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
