"""Fault injection for the end-to-end fault runs: the plugin's code tool, except that every third call raises."""

from __future__ import annotations

from typing import Any

from grporoc_plugin.tools.code_tool import CodeExecTool


class EveryThirdCallRaises(CodeExecTool):
    """``CodeExecTool`` whose ``execute`` raises on every third call (per process), like a tool with a bug."""

    calls = 0

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any):
        type(self).calls += 1
        if type(self).calls % 3 == 0:
            raise RuntimeError("injected tool fault")
        return await super().execute(instance_id, parameters, **kwargs)
