"""grporoc_hermes: malformed calls become markers (never dropped), unclosed tags are reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from verl.experimental.agent_loop.tool_parser import HermesToolParser, ToolParser

from grporoc_plugin.tools.parser import (
    MALFORMED_TOOL_NAME,
    GrpoRocHermesToolParser,
    malformed_call_error,
    parse_hermes_text,
)


def test_registered_under_format_name(tokenizer):
    assert isinstance(ToolParser.get_tool_parser("grporoc_hermes", tokenizer), GrpoRocHermesToolParser)


def test_well_formed_calls_match_verl_hermes():
    text = 'Let me run it.<tool_call>\n{"name": "py", "arguments": {"code": "print(1)"}}\n</tool_call><|im_end|>'
    content, calls, unclosed = parse_hermes_text(text)
    assert content == "Let me run it.<|im_end|>" and unclosed == 0
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("py", {"code": "print(1)"})]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('{"name": "py" "arguments": {}}', "Expecting ',' delimiter"),
        ("[1, 2]", "expected a JSON object with 'name' and 'arguments', got list"),
        ('{"arguments": {}}', "missing key 'name'"),
        ('{"name": "py"}', "missing key 'arguments'"),
        ('{"name": 3, "arguments": {}}', "'name' must be a non-empty string, got 3"),
        ('{"name": "py", "arguments": "print(1)"}', "'arguments' must be a JSON object, got str"),
    ],
)
def test_malformed_calls_become_markers(body, error):
    _, calls, _ = parse_hermes_text(f"<tool_call>\n{body}\n</tool_call>")
    assert len(calls) == 1 and calls[0].name == MALFORMED_TOOL_NAME
    assert error in malformed_call_error(calls[0])


def test_mixed_calls_keep_order_and_count_unclosed():
    text = (
        '<tool_call>{"name": "a", "arguments": {}}</tool_call> <tool_call>{bad</tool_call>'
        ' <tool_call>{"name": "b", "arguments": {}}'
    )
    _, calls, unclosed = parse_hermes_text(text)
    assert [c.name for c in calls] == ["a", MALFORMED_TOOL_NAME]
    assert malformed_call_error(calls[0]) is None and unclosed == 1


async def test_extract_on_token_ids_where_verl_hermes_drops_the_call(tokenizer):
    ids = tokenizer.encode('<tool_call>\n{"name": "py", "arguments": {code}}\n</tool_call><|im_end|>')
    _, verl_calls = await HermesToolParser(tokenizer).extract_tool_calls(ids)
    assert verl_calls == []  # verl 0.9.1 drops it (this is why the plugin parser exists)
    parser = GrpoRocHermesToolParser(tokenizer)
    _, calls = await parser.extract_tool_calls(ids)
    assert len(calls) == 1 and malformed_call_error(calls[0]).startswith("Expecting property name")
    _, calls = await parser.extract_tool_calls(tokenizer.encode("<tool_call>\n{...<|im_end|>"))
    assert calls == [] and parser.unclosed_tool_calls == 1


def test_modules_are_import_light():
    """verl imports these in every process: they must not import TransferQueue or start Ray."""
    code = (
        "import sys, ray, verl\n"  # verl 0.9.1 itself already imports parts of transfer_queue
        "before = {m for m in sys.modules if m.startswith('transfer_queue')}\n"
        "import grporoc_plugin.tools.parser, grporoc_plugin.tools.agent_loop, grporoc_plugin.tools.code_tool\n"
        "added = {m for m in sys.modules if m.startswith('transfer_queue')} - before\n"
        "assert not added, f'TQ imported: {sorted(added)}'\n"
        "assert not ray.is_initialized(), 'ray started'\n"
        "assert 'grporoc_plugin.sandbox.pool' not in sys.modules, 'sandbox imported eagerly'\n"
    )
    env = {"VERL_USE_EXTERNAL_PLUGINS": "none", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
