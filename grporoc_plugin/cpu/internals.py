"""The ONLY place where the CPU backend touches verl 0.9.1 internals that are not a public extension point.

Each one is pinned by a test in ``tests/cpu/test_internals.py`` that fails with a message naming it when verl changes:

1. ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (private dict ``(name, mode) -> "module.Class"``): the in-worker
   rollout adapter lookup of ``get_rollout_class``; we add ``("hf", "async")``.
2. ``verl.utils.distributed.initialize_global_process_group_ray`` (signature ``(timeout_second=None, backend=None)``):
   its default backend string ``"cpu:gloo,<device>:<ccl>"`` is invalid on a CPU platform (``"cpu:gloo,cpu:gloo"`` is a
   duplicate device). We change the function's ``backend`` default to ``"gloo"`` in place (``__defaults__``), so the
   change also reaches modules that did ``from verl.utils.distributed import initialize_global_process_group_ray``.
3. ``verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy`` (module global): FSDP2 forward-only engines (the
   reference model) build ``CPUOffloadPolicy(pin_memory=True)``; pinning needs an accelerator. We rebind the global to
   a factory forcing ``pin_memory=False``, right after that module is imported (it is heavy, so not imported eagerly).
4. ``VERL_ENGINE_DEVICE`` read by ``verl.workers.engine.base.EngineRegistry.get_engine_cls``: FSDP engines are
   registered for devices ``cuda``/``npu`` only; this (undocumented) override makes the lookup use the ``cuda`` entry.
5. ``RolloutReplica`` subclass protocol: ``launch_servers`` must fill the private attributes ``servers``,
   ``_server_handle`` and ``_server_address``; the replica then calls the server methods named in
   :data:`SERVER_METHODS_CALLED_BY_VERL`. For a reward model, ``RewardModelManager`` reads ``_server_address`` as
   ``host:port`` and puts ``http://{address}`` behind its router.
6. ``RolloutReplica.get_ray_class_with_init_args`` -> ``RayClassWithInitArgs.kwargs`` -> ``CheckpointEngineWorker``,
   which passes every extra init kwarg on to the adapter (``get_rollout_class(...)(..., **kwargs)``): the ``hf``
   replica adds :data:`ADAPTER_SERVER_NAME_KWARG` there so a colocated/standalone adapter updates *its* server.
   The worker reads the adapter's ``replica_rank`` and ``is_leader_rank`` attributes.
7. ``verl.experimental.reward_loop.reward_loop.RewardLoopWorker.compute_score_disrm`` dispatches on the reward
   model's engine name and knows only ``vllm``/``sglang``/``trtllm``. For ``hf`` we run verl's own ``vllm`` branch
   (``_preprocess_reward_inputs``, ``_post_request(payload, "classify")``, score ``data[-1].probs[-1]``) against the
   HF reward server, which speaks vLLM's ``/classify`` (:mod:`grporoc_plugin.cpu.reward_server`).
8. ``verl.utils.distributed.initialize_global_process_group`` (signature ``(timeout_second=36000)``), the torchrun
   entry points' process-group set-up (verl's SFT trainer ``run_sft``), hard-codes the same invalid
   ``"cpu:gloo,<device>:<ccl>"`` backend as internal 2 and takes no ``backend`` argument. We replace the module
   attribute with a plain-``gloo`` twin (same ``init_method``/timeout, same ``(local_rank, rank, world_size)``
   result); ``run_sft`` imports it at call time, so it gets the twin.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable
from types import ModuleType

#: verl attributes/functions this module relies on, for the pin tests and error messages.
ROLLOUT_REGISTRY = "verl.workers.rollout.base._ROLLOUT_REGISTRY"
INIT_PG_FUNC = "verl.utils.distributed.initialize_global_process_group_ray"
INIT_GLOBAL_PG_FUNC = "verl.utils.distributed.initialize_global_process_group"
FSDP_IMPL_MODULE = "verl.workers.engine.fsdp.transformer_impl"
ENGINE_DEVICE_ENV = "VERL_ENGINE_DEVICE"
#: Methods verl calls on every rollout server handle (RolloutReplica, LLMServerClient); the HF server has them all.
SERVER_METHODS_CALLED_BY_VERL = (
    "generate",
    "wake_up",
    "sleep",
    "abort_all_requests",
    "resume_generation",
    "clear_kv_cache",
    "release_kv_cache",
    "resume_kv_cache",
    "start_profile",
    "stop_profile",
)
#: Private RolloutReplica attributes a replica's ``launch_servers`` must set.
REPLICA_SERVER_ATTRS = ("servers", "_server_handle", "_server_address")
#: Extra CheckpointEngineWorker init kwarg (forwarded to the adapter) naming the server it updates.
ADAPTER_SERVER_NAME_KWARG = "server_name"
REWARD_LOOP_MODULE = "verl.experimental.reward_loop.reward_loop"
DISRM_METHOD = f"{REWARD_LOOP_MODULE}.RewardLoopWorker.compute_score_disrm"


def register_rollout_adapter(name: str, mode: str, fqn: str) -> None:
    """Internal 1: map ``(name, mode)`` to the in-worker server adapter class ``fqn`` in verl's private registry."""
    from verl.workers.rollout import base

    registry = getattr(base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise RuntimeError(f"grporoc_plugin.cpu: verl internal {ROLLOUT_REGISTRY} is gone or not a dict")
    registry[(name, mode)] = fqn


def force_gloo_process_group() -> None:
    """Internal 2: make ``initialize_global_process_group_ray()`` default to a plain ``"gloo"`` process group."""
    from verl.utils import distributed

    func = distributed.initialize_global_process_group_ray
    names = func.__code__.co_varnames[: func.__code__.co_argcount]
    if names != ("timeout_second", "backend") or func.__defaults__ is None or len(func.__defaults__) != 2:
        raise RuntimeError(f"grporoc_plugin.cpu: verl internal {INIT_PG_FUNC} changed signature: {names}")
    # Keyword defaults live on the function object, so every `from ... import` binding sees the change.
    func.__defaults__ = (func.__defaults__[0], "gloo")


def force_gloo_global_process_group() -> None:
    """Internal 8: ``initialize_global_process_group()`` (torchrun entry points such as the SFT trainer) on gloo."""
    from verl.utils import distributed

    func = distributed.initialize_global_process_group
    if getattr(func, "_grporoc_gloo", False):
        return
    names = func.__code__.co_varnames[: func.__code__.co_argcount]
    if names != ("timeout_second",):
        raise RuntimeError(f"grporoc_plugin.cpu: verl internal {INIT_GLOBAL_PG_FUNC} changed signature: {names}")
    (default_timeout,) = func.__defaults__ or (36000,)

    def initialize_global_process_group(timeout_second=default_timeout):
        import datetime

        import torch.distributed

        torch.distributed.init_process_group(
            backend="gloo",
            timeout=datetime.timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group.__doc__ = func.__doc__
    initialize_global_process_group._grporoc_gloo = True  # type: ignore[attr-defined]
    initialize_global_process_group._grporoc_verl_func = func  # type: ignore[attr-defined]
    distributed.initialize_global_process_group = initialize_global_process_group


def _patch_cpu_offload_policy(module: ModuleType) -> None:
    original = getattr(module, "CPUOffloadPolicy", None)
    if original is None or getattr(original, "_grporoc_unpinned", False):
        return

    def unpinned_cpu_offload_policy(pin_memory: bool = True, **kwargs):
        del pin_memory  # page-locked (pinned) host memory needs an accelerator
        return original(pin_memory=False, **kwargs)

    unpinned_cpu_offload_policy._grporoc_unpinned = True  # type: ignore[attr-defined]
    module.CPUOffloadPolicy = unpinned_cpu_offload_policy


def unpin_fsdp2_offload_policy() -> None:
    """Internal 3: rebind ``transformer_impl.CPUOffloadPolicy`` to an unpinned factory once that module is imported."""
    after_import(FSDP_IMPL_MODULE, _patch_cpu_offload_policy)


def alias_cpu_engines_to_cuda() -> None:
    """Internal 4: let ``EngineRegistry`` resolve the FSDP engines registered for ``cuda`` (a user value wins)."""
    os.environ.setdefault(ENGINE_DEVICE_ENV, "cuda")


def _patch_compute_score_disrm(module: ModuleType, engine: str) -> None:
    worker_cls = getattr(module, "RewardLoopWorker", None)
    verl_method = getattr(worker_cls, "compute_score_disrm", None)
    if verl_method is None:
        raise RuntimeError(f"grporoc_plugin.cpu: verl internal {DISRM_METHOD} is gone")
    if getattr(verl_method, "_grporoc_engine", None) == engine:
        return
    verl_method = getattr(verl_method, "_grporoc_verl_method", verl_method)

    async def compute_score_disrm(self, data):
        if self.config.reward.reward_model.rollout.name != engine:
            return await verl_method(self, data)
        # verl's own vllm branch, verbatim: the HF reward server speaks vLLM's /classify
        disrm_prompt = await self._preprocess_reward_inputs(data)
        payload = {"model": self.config.reward.reward_model.model_path, "input": disrm_prompt, "use_activation": False}
        output = await self._post_request(payload, "classify")
        return {"reward_score": output["data"][-1]["probs"][-1]}

    compute_score_disrm.__doc__ = verl_method.__doc__
    compute_score_disrm._grporoc_engine = engine  # type: ignore[attr-defined]
    compute_score_disrm._grporoc_verl_method = verl_method  # type: ignore[attr-defined]
    worker_cls.compute_score_disrm = compute_score_disrm


def route_disrm_engine_to_classify(engine: str) -> None:
    """Internal 7: let ``RewardLoopWorker`` score reward models of rollout ``engine`` through vLLM's ``/classify``."""
    after_import(REWARD_LOOP_MODULE, lambda module: _patch_compute_score_disrm(module, engine))


# ---------------------------------------------------------------------------------------------- post-import hooks
class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs callbacks right after a named module finishes executing (lets us patch heavy modules lazily)."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[ModuleType], None]]] = {}

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.callbacks:
            return None
        # Ask the remaining finders for the real spec, then wrap its loader.
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, callbacks = spec.loader, self.callbacks.pop(fullname)

        class _Loader(importlib.abc.Loader):
            def __getattr__(self, name):  # get_source, get_filename, ... stay the real loader's
                return getattr(loader, name)

            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                for callback in callbacks:
                    callback(module)

        spec.loader = _Loader()
        return spec


_FINDER = _PostImportFinder()


def after_import(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` now if ``module_name`` is imported, else right after its first import."""
    module = sys.modules.get(module_name)
    if module is not None:
        callback(module)
        return
    _FINDER.callbacks.setdefault(module_name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
