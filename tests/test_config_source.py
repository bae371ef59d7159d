"""One config source: the plugin yaml's algorithm.roc block is generated from the dataclasses that own the defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from grporoc_plugin.config import RoCSettings, field_docs, resolve_settings, yaml_roc_block
from grporoc_plugin.penalties import PenaltyConfig
from grporoc_plugin.rc.settings import RCSettings, resolve_rc_settings, yaml_rc_block
from grporoc_plugin.roc import RoCConfig

YAML = Path(__file__).resolve().parents[1] / "grporoc_plugin" / "config" / "grporoc.yaml"


def _block(text: str, name: str) -> str:
    """The body of ``algorithm.<name>``: up to the next top-level or ``algorithm``-level line."""
    match = re.search(rf"\n  {name}:\n\n(.*?)\n\n(?=\S|  \S)", text, re.DOTALL)
    assert match, f"no algorithm.{name} block in grporoc.yaml"
    return match.group(1) + "\n"


def _roc_block(text: str) -> str:
    return _block(text, "roc")


def test_yaml_block_equals_the_generated_one():
    """Edit the dataclass (default or docstring), then paste yaml_roc_block() into grporoc.yaml: they cannot drift."""
    assert _roc_block(YAML.read_text()) == yaml_roc_block()


def test_rc_yaml_block_equals_the_generated_one():
    """Same for algorithm.rc (RC-GRPO): edit RCSettings, then paste yaml_rc_block() into grporoc.yaml."""
    assert _block(YAML.read_text(), "rc") == yaml_rc_block()


def test_rc_yaml_defaults_parse_to_the_dataclass_defaults():
    rc = yaml.safe_load(YAML.read_text())["algorithm"]["rc"]
    assert resolve_rc_settings(rc) == RCSettings() and not RCSettings().enable


@pytest.mark.parametrize("cls", [RoCSettings, RoCConfig, PenaltyConfig, RCSettings])
def test_every_field_has_a_one_line_docstring(cls):
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        assert f.name in docs, f"{cls.__name__}.{f.name} has no docstring"
        assert "\n" not in docs[f.name] and len(docs[f.name]) <= 116


def test_yaml_defaults_parse_to_the_dataclass_defaults():
    roc = yaml.safe_load(YAML.read_text())["algorithm"]["roc"]
    settings = resolve_settings(roc, rollout_n=16)
    assert settings.roc_config() == RoCConfig(keep_n=16)
    assert settings.penalty_config() == PenaltyConfig()
    defaults = RoCSettings()
    for name in ("enable", "correct_key", "correct_threshold", "seed", "empty_batch", "max_refills", "adv_epsilon"):
        assert getattr(settings, name) == getattr(defaults, name), name


def test_field_docs_reads_the_string_after_each_field():
    @dataclasses.dataclass
    class Example:
        a: int = 1
        """First."""
        b: int = 2
        c: int = 3
        """Third, split
        over two lines."""

    assert field_docs(Example) == {"a": "First.", "c": "Third, split over two lines."}
