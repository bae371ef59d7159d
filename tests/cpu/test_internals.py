"""Pins every private verl internal the CPU backend relies on (``grporoc_plugin.cpu.internals``).

Each test fails with a message naming the internal, so a verl upgrade that moves one is diagnosed at once.
"""

from __future__ import annotations

import inspect
import re
import sys

from grporoc_plugin.cpu import internals


def test_rollout_registry_is_name_mode_to_fqn_dict():
    from verl.workers.rollout import base

    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    assert isinstance(registry, dict), f"{internals.ROLLOUT_REGISTRY} is gone"
    assert ("vllm", "async") in registry and isinstance(registry[("vllm", "async")], str), (
        f"{internals.ROLLOUT_REGISTRY} no longer maps (name, mode) -> 'module.Class'"
    )
    src = inspect.getsource(base.get_rollout_class)
    assert "_ROLLOUT_REGISTRY[(rollout_name, mode)]" in src, (
        f"get_rollout_class no longer reads {internals.ROLLOUT_REGISTRY}"
    )


def test_register_rollout_adapter_resolves_through_get_rollout_class():
    from verl.workers.rollout import base

    internals.register_rollout_adapter("grporoc_pin_test", "async", "verl.workers.rollout.base.BaseRollout")
    try:
        assert base.get_rollout_class("grporoc_pin_test", "async") is base.BaseRollout
    finally:
        base._ROLLOUT_REGISTRY.pop(("grporoc_pin_test", "async"))


def test_initialize_global_process_group_ray_signature_and_default():
    from verl.utils import distributed

    func = distributed.initialize_global_process_group_ray
    params = list(inspect.signature(func).parameters.values())
    assert [(p.name, p.default) for p in params] == [("timeout_second", None), ("backend", None)], (
        f"{internals.INIT_PG_FUNC} signature changed: {inspect.signature(func)}"
    )
    src = inspect.getsource(func)
    # the default we override is the one that breaks on CPU ("cpu:gloo,cpu:gloo" is a duplicate device)
    assert 'backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in src, (
        f"{internals.INIT_PG_FUNC} builds its default backend differently now: re-check the gloo override"
    )
    from verl.workers import engine_workers

    assert engine_workers.initialize_global_process_group_ray is func, (
        "engine_workers no longer uses verl.utils.distributed.initialize_global_process_group_ray"
    )
    assert re.search(
        r"initialize_global_process_group_ray\(timeout_second=None\)", inspect.getsource(engine_workers)
    ), "TrainingWorker no longer calls initialize_global_process_group_ray() with the default backend"


def test_fsdp2_forward_only_engine_pins_memory_through_module_global():
    import verl.workers.engine.fsdp.transformer_impl as impl

    assert hasattr(impl, "CPUOffloadPolicy"), f"{internals.FSDP_IMPL_MODULE}.CPUOffloadPolicy is gone"
    assert "CPUOffloadPolicy(pin_memory=True)" in inspect.getsource(impl), (
        f"{internals.FSDP_IMPL_MODULE} no longer builds CPUOffloadPolicy(pin_memory=True): re-check the unpin fix"
    )
    assert list(inspect.signature(impl.CPUOffloadPolicy).parameters) == ["pin_memory"]


def test_engine_registry_device_override_env_and_cuda_fsdp_engines():
    from verl.workers.engine.base import EngineRegistry

    src = inspect.getsource(EngineRegistry.get_engine_cls)
    assert f'os.getenv("{internals.ENGINE_DEVICE_ENV}")' in src, (
        f"EngineRegistry.get_engine_cls no longer honours {internals.ENGINE_DEVICE_ENV}"
    )
    import verl.workers.engine.fsdp  # noqa: F401 - registers the FSDP engines

    for backend in ("fsdp", "fsdp2"):
        assert "cuda" in EngineRegistry._engines["language_model"][backend], f"no cuda FSDP engine for {backend}"


def test_rollout_replica_protocol():
    from verl.workers.rollout.replica import RolloutReplica

    from grporoc_plugin.cpu.backend import HFRolloutServer

    init_src = inspect.getsource(RolloutReplica.__init__)
    for attr in internals.REPLICA_SERVER_ATTRS:
        assert f"self.{attr}" in init_src, f"RolloutReplica no longer has the private attribute {attr}"
    assert "return self._server_handle" in inspect.getsource(RolloutReplica.server_handle.fget)
    called = set(re.findall(r"server\.(\w+)\.remote", inspect.getsource(RolloutReplica)))
    from verl.workers.rollout import llm_server

    called |= set(re.findall(r"server\.(\w+)\.remote", inspect.getsource(llm_server.LLMServerClient)))
    missing = called - set(internals.SERVER_METHODS_CALLED_BY_VERL)
    assert not missing, f"verl now calls rollout server methods {missing}: add them to HFRolloutServer"
    from grporoc_plugin.cpu.reward_server import HFRewardServer

    for server_cls in (HFRolloutServer, HFRewardServer):
        for name in internals.SERVER_METHODS_CALLED_BY_VERL:
            method = getattr(server_cls, name, None)
            assert inspect.iscoroutinefunction(method), f"{server_cls.__name__}.{name} missing"


def test_checkpoint_engine_worker_forwards_extra_init_kwargs_to_the_adapter():
    """Internal 6: extra ``RayClassWithInitArgs`` kwargs of a replica reach its adapter's constructor."""
    from verl.checkpoint_engine.base import CheckpointEngineWorker
    from verl.single_controller.ray import RayClassWithInitArgs
    from verl.workers.rollout.replica import RolloutReplica

    spec = RayClassWithInitArgs(cls=object, rollout_config=1, replica_rank=0)
    assert spec.kwargs == {"rollout_config": 1, "replica_rank": 0}, "RayClassWithInitArgs.kwargs changed"
    src = inspect.getsource(RolloutReplica.get_ray_class_with_init_args)
    for kwarg in ("rollout_config=self.config", "model_config=self.model_config", "replica_rank=self.replica_rank"):
        assert kwarg in src, f"RolloutReplica.get_ray_class_with_init_args no longer passes {kwarg}"
    init = inspect.getsource(CheckpointEngineWorker.__init__)
    assert "self.extra_rollout_kwargs = kwargs" in init and "**self.extra_rollout_kwargs," in init, (
        "CheckpointEngineWorker no longer forwards extra init kwargs to get_rollout_class(...)(...): "
        f"the hf adapter would lose {internals.ADAPTER_SERVER_NAME_KWARG!r}"
    )
    for attr in ("replica_rank", "is_leader_rank"):
        assert f"return self.server_adapter.{attr}" in inspect.getsource(CheckpointEngineWorker), (
            f"CheckpointEngineWorker no longer reads the adapter's {attr}: re-check HFServerAdapter"
        )


def test_reward_model_manager_routes_to_server_address():
    """Internal 5 (reward models): ``_server_address`` is ``host:port``, put behind verl's router as ``http://``."""
    from verl.experimental.reward_loop.reward_model import RewardModelManager

    src = inspect.getsource(RewardModelManager)
    assert "self.server_addresses = [server._server_address for server in self.rollout_replicas]" in src
    assert 'worker_urls = [f"http://{server_address}" for server_address in self.server_addresses]' in src, (
        "RewardModelManager no longer routes to http://<_server_address>: re-check HFReplica.launch_servers"
    )


def test_reward_loop_worker_disrm_engine_dispatch():
    """Internal 7: verl's vllm branch of ``compute_score_disrm`` is what the hf route runs, verbatim."""
    from verl.experimental.reward_loop import reward_loop

    worker = reward_loop.RewardLoopWorker
    method = getattr(worker.compute_score_disrm, "_grporoc_verl_method", worker.compute_score_disrm)
    src = inspect.getsource(method)
    for line in (
        "engine_name = self.config.reward.reward_model.rollout.name",
        "disrm_prompt = await self._preprocess_reward_inputs(data)",
        '"use_activation": False,',
        'output = await self._post_request(payloads, "classify")',
        'rm_score = output["data"][-1]["probs"][-1]',
        'return {"reward_score": rm_score}',
    ):
        assert line in src, f"{internals.DISRM_METHOD} changed ({line!r}): re-check the hf route"
    assert 'raise NotImplementedError(f"RewardLoopManager does not support {engine_name}")' in src
    assert list(inspect.signature(worker._preprocess_reward_inputs).parameters) == ["self", "data"]
    assert list(inspect.signature(worker._post_request).parameters)[:3] == ["self", "payload", "endpoint"]
    assert "return await self.compute_score_disrm(data[-1:])" in inspect.getsource(worker.compute_score), (
        "RewardLoopWorker.compute_score no longer scores reward models through compute_score_disrm"
    )


def test_disrm_route_is_idempotent(monkeypatch):
    from verl.experimental.reward_loop import reward_loop

    worker = reward_loop.RewardLoopWorker
    verl_method = getattr(worker.compute_score_disrm, "_grporoc_verl_method", worker.compute_score_disrm)
    monkeypatch.setattr(worker, "compute_score_disrm", verl_method)  # verl's own, restored (as found) afterwards
    internals.route_disrm_engine_to_classify("hf")
    routed = worker.compute_score_disrm
    internals.route_disrm_engine_to_classify("hf")
    assert worker.compute_score_disrm is routed, "patched twice"
    assert routed is not verl_method and routed._grporoc_verl_method is verl_method


def test_cpu_platform_implements_platform_base():
    from grporoc_plugin.cpu.backend import PlatformCPU

    platform = PlatformCPU()  # raises TypeError if verl added an abstract method
    assert platform.device_name == "cpu" and platform.communication_backend_name() == "gloo"
    assert platform.ray_resource_options(0.5) == {"num_gpus": 0.5}


def test_after_import_hook_runs_on_first_import(tmp_path, monkeypatch):
    (tmp_path / "grporoc_pin_dummy.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    internals.after_import("grporoc_pin_dummy", lambda m: seen.append(m.VALUE))
    try:
        import grporoc_pin_dummy  # noqa: F401

        assert seen == [1]
        internals.after_import("grporoc_pin_dummy", lambda m: seen.append(2))  # already imported: runs at once
        assert seen == [1, 2]
    finally:
        sys.modules.pop("grporoc_pin_dummy", None)


def test_initialize_global_process_group_builds_the_invalid_cpu_backend_and_sft_imports_it_at_call_time():
    """Internal 8: the torchrun entry points' process group (verl's SFT trainer) on gloo."""
    from verl.trainer import sft_trainer
    from verl.utils import distributed

    func = getattr(distributed.initialize_global_process_group, "_grporoc_verl_func", None)
    func = func or distributed.initialize_global_process_group
    params = [(p.name, p.default) for p in inspect.signature(func).parameters.values()]
    assert params == [("timeout_second", 36000)], f"{internals.INIT_GLOBAL_PG_FUNC} signature changed: {params}"
    src = inspect.getsource(func)
    assert 'backend = f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"' in src, (
        f"{internals.INIT_GLOBAL_PG_FUNC} builds its backend differently now: re-check the gloo twin"
    )
    assert "from verl.utils.distributed import initialize_global_process_group" in inspect.getsource(
        sft_trainer.run_sft
    ), "run_sft no longer imports initialize_global_process_group at call time: the twin would not reach it"


def test_gloo_twin_of_initialize_global_process_group_inits_a_single_rank_group(monkeypatch):
    import torch.distributed
    from verl.utils import distributed

    original = distributed.initialize_global_process_group
    try:
        internals.force_gloo_global_process_group()
        twin = distributed.initialize_global_process_group
        assert getattr(twin, "_grporoc_gloo", False)
        internals.force_gloo_global_process_group()  # idempotent
        assert distributed.initialize_global_process_group is twin
        for key, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
            monkeypatch.setenv(key, value)
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            monkeypatch.setenv("MASTER_PORT", str(probe.getsockname()[1]))
        assert twin(timeout_second=60) == (0, 0, 1)
        assert torch.distributed.get_backend() == "gloo"
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        distributed.initialize_global_process_group = original
