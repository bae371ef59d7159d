"""The CPU backend changes nothing without ``VERL_PLATFORM=cpu`` and wires everything with it (fresh processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json, sys
import verl  # loads the verl.plugins entry point, exactly like every trainer process
from verl.plugin.platform import PlatformRegistry, get_platform
from verl.utils.distributed import initialize_global_process_group_ray
from verl.workers.rollout import base
from verl.workers.rollout.replica import RolloutReplicaRegistry
import grporoc_plugin.cpu.backend as backend
state = {
    "active": backend.is_active(),
    "platforms": list(PlatformRegistry.registered_names()),
    "hf_replica": "hf" in RolloutReplicaRegistry._registry,
    "hf_adapter": ("hf", "async") in base._ROLLOUT_REGISTRY,
    "pg_default": initialize_global_process_group_ray.__defaults__[1],
}
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
state["disrm_engine"] = getattr(RewardLoopWorker.compute_score_disrm, "_grporoc_engine", None)
if "--deep" in sys.argv:
    import torch
    from verl.utils.device import get_device_id, get_nccl_backend, get_torch_device
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.rollout.base import get_rollout_class
    import verl.workers.engine.fsdp.transformer_impl as impl
    state.update(
        device=get_platform().device_name,
        ccl=get_nccl_backend(),
        torch_device=str(torch.device(get_device_id())),
        cuda_calls_ok=[get_torch_device().synchronize(), get_torch_device().empty_cache()] == [None, None],
        engine=EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
        pin_memory=impl.CPUOffloadPolicy(pin_memory=True).pin_memory,
        adapter=get_rollout_class("hf").__name__,
        replica=RolloutReplicaRegistry.get("hf").__name__,
    )
else:
    state["device"] = get_platform().device_name
print("STATE=" + json.dumps(state))
"""


def _probe(env_platform: str | None, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")}
    if env_platform is not None:
        env["VERL_PLATFORM"] = env_platform
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("STATE=")]
    assert proc.returncode == 0 and lines, f"probe failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("STATE=") :])


def test_inert_without_verl_platform():
    state = _probe(None)
    assert state["active"] is False
    assert "cpu" not in state["platforms"], "cpu platform must not be registered without VERL_PLATFORM=cpu"
    assert not state["hf_replica"] and not state["hf_adapter"], "hf rollout must not be registered"
    assert state["pg_default"] is None, "verl's process-group default must stay untouched"
    assert state["disrm_engine"] is None, "verl's reward-model scoring must stay untouched"
    assert state["device"] != "cpu"  # stock fallback ("cuda" on a CPU box, as without the plugin)


def test_active_with_verl_platform_cpu():
    state = _probe("cpu", "--deep")
    assert state["active"] is True and "cpu" in state["platforms"]
    assert state["device"] == "cpu" and state["ccl"] == "gloo" and state["torch_device"] == "cpu"
    assert state["cuda_calls_ok"]
    assert state["pg_default"] == "gloo"
    assert state["disrm_engine"] == "hf", "hf reward models must be scored through /classify"
    assert state["engine"] == "FSDPEngineWithLMHead"
    assert state["pin_memory"] is False
    assert state["adapter"] == "HFServerAdapter" and state["replica"] == "HFReplica"
