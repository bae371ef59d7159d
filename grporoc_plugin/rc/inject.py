"""Where a reward token goes in a chat prompt: a registry of positions, used by the RCTP builder and the rollout hook.

One function places the token for SFT data (:mod:`grporoc_plugin.rc.builder`) and for RL rollouts
(:mod:`grporoc_plugin.rc.worker`), so the policy sees the same rendering in both stages. Positions
(``register_position`` adds more, verl ``core_algos.py`` style):

* ``system_suffix``: ``<system text><separator><token>`` at the end of the first message if it is a system
  message; otherwise a system message holding only the token is inserted first (a chat template's *default* system
  prompt is then replaced, identically in SFT and RL);
* ``user_prefix``: ``<token><separator><user text>`` at the start of the first user message.

Messages are never modified in place (verl shares one prompt object between the replicas of a group); content given
as a list of parts (multimodal) gets a text part. Pure Python.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["POSITION_REGISTRY", "get_position", "inject_token", "register_position"]

Message = dict[str, Any]
Position = Callable[[list[Message], str, str], list[Message]]

POSITION_REGISTRY: dict[str, Position] = {}


def register_position(name: str) -> Callable[[Position], Position]:
    """Register a position ``(messages copy, token, separator) -> messages`` (``algorithm.rc.position``)."""

    def decorator(fn: Position) -> Position:
        if name in POSITION_REGISTRY and POSITION_REGISTRY[name] is not fn:
            raise ValueError(f"position {name!r} is already registered by {POSITION_REGISTRY[name].__module__}")
        POSITION_REGISTRY[name] = fn
        return fn

    return decorator


def get_position(name: str) -> Position:
    if name not in POSITION_REGISTRY:
        raise ValueError(f"unknown position {name!r}; registered: {sorted(POSITION_REGISTRY)}")
    return POSITION_REGISTRY[name]


def _append(content: Any, text: str) -> Any:
    if isinstance(content, str) or content is None:
        return (content or "") + text
    return [*content, {"type": "text", "text": text}]


def _prepend(content: Any, text: str) -> Any:
    if isinstance(content, str) or content is None:
        return text + (content or "")
    return [{"type": "text", "text": text}, *content]


@register_position("system_suffix")
def system_suffix(messages: list[Message], token: str, separator: str) -> list[Message]:
    """Token at the end of the system message (a system message with the token alone when there is none)."""
    if messages and messages[0].get("role") == "system":
        content = messages[0].get("content")
        empty = content is None or (isinstance(content, str) and not content)
        messages[0]["content"] = _append(content, token if empty else separator + token)
        return messages
    return [{"role": "system", "content": token}, *messages]


@register_position("user_prefix")
def user_prefix(messages: list[Message], token: str, separator: str) -> list[Message]:
    """Token at the start of the first user message."""
    for message in messages:
        if message.get("role") == "user":
            message["content"] = _prepend(message.get("content"), token + separator)
            return messages
    raise ValueError("position user_prefix: the prompt has no user message")


def inject_token(messages: Sequence[Message], token: str, position: str, separator: str = " ") -> list[Message]:
    """A copy of ``messages`` with ``token`` placed at ``position``; ``token == ""`` returns an unchanged copy."""
    copied = [copy.deepcopy(dict(m)) for m in messages]
    if not token:
        return copied
    return get_position(position)(copied, token, separator)
