"""Offline tiny tokenizer for tests: byte-level BPE with a Qwen2.5-style (ChatML + hermes tools) chat template.

No hub access: the BPE is trained in-process with ``tokenizers`` on a small fixed corpus (deterministic, < 1 s).
Any text round-trips (byte-level), ``"\\n"`` is one token, ``<|im_start|>``/``<|im_end|>``/``<|endoftext|>`` are
special tokens and ``<tool_call>``/``</tool_call>``/``<tool_response>``/``</tool_response>`` are added (non-special)
tokens, as in Qwen2.5. The template renders tools in the system prompt, assistant tool calls as
``<tool_call>\\n{json}\\n</tool_call>`` and tool results as
``<|im_start|>user\\n<tool_response>\\n...\\n</tool_response><|im_end|>``, so verl's ``ToolAgentLoop`` with the
``QwenContinuousTokenBuilder`` (``hf_model_type="qwen2"``) and the hermes parsers work on it unchanged.

Usage::

    from tests.assets_tokenizer import build_tokenizer, save_tokenizer
    tok = build_tokenizer()              # PreTrainedTokenizerFast, cached per process
    path = save_tokenizer(tmp_path)      # directory loadable with AutoTokenizer.from_pretrained(path)
"""

from __future__ import annotations

import functools
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# Qwen2.5-Instruct's template structure (tools in the system prompt, hermes tool calls, grouped tool responses).
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- else %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}{{- \'", "arguments": \' }}'
    "{%- if tool_call.arguments is string %}{{- tool_call.arguments }}"
    "{%- else %}{{- tool_call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CORPUS_LINES = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "<|im_start|>user\nWhat is 2 + 2? Use the python tool.<|im_end|>\n",
    '<|im_start|>assistant\n<tool_call>\n{"name": "python_code_with_standard_io", "arguments": '
    '{"code": "print(2 + 2)", "input": ""}}\n</tool_call><|im_end|>\n',
    "<|im_start|>user\n<tool_response>\nTool call success\nstdout: 4\n\nexecution time: 0.01s\n</tool_response>"
    "<|im_end|>\n",
    "<|im_start|>assistant\n<reason>2 + 2 = 4</reason> <answer>\\boxed{4}</answer><|im_end|>\n",
    "import sys\nx = int(input())\nprint(x * x)\nraise ValueError('bad')\nwhile True: pass\n",
    'Traceback (most recent call last):\n  File "<string>", line 1, in <module>\nZeroDivisionError: division by zero\n',
    "Tool call failure\nreason: timeout\nstderr: \nexecution time: 1.00s\n",
    "Failed to decode tool call: Expecting value: line 1 column 1 (char 0)\n",
    "Unknown function 'foo'. Available tools: ['python_code_with_standard_io']\n",
]


@functools.lru_cache(maxsize=1)
def build_tokenizer() -> PreTrainedTokenizerFast:
    """Train (once per process) and return the tiny tokenizer; deterministic across runs."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS_LINES * 20, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    hf_tok.add_tokens(ADDED_TOKENS, special_tokens=False)
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def save_tokenizer(directory: str | os.PathLike) -> str:
    """Save the tokenizer to ``directory`` (created if needed) and return it as a string path."""
    path = os.fspath(directory)
    os.makedirs(path, exist_ok=True)
    build_tokenizer().save_pretrained(path)
    return path
