"""CPU backend: lets stock ``python -m verl.trainer.main_ppo`` train on a machine without an accelerator.

Imported in every verl process (driver, TaskRunner, Ray workers) through the ``verl.plugins`` entry point. It is
INERT unless ``VERL_PLATFORM=cpu`` (verl's own platform override; Ray workers inherit it): without it, it only
defines classes (cheap imports: torch and ``verl.plugin.platform``, both already loaded by ``import verl``) and
registers/patches nothing. With it, it

* registers and selects a ``cpu`` platform (``PlatformRegistry`` + ``set_platform``): gloo collectives, no-op
  device cache/sync calls, fake Ray "GPU" resources for placement (start Ray with ``num_gpus``);
* applies the few private-internal fixes in :mod:`grporoc_plugin.cpu.internals` (plain gloo process group, FSDP2
  engines for ``cpu``, unpinned FSDP2 offload, ``hf`` reward models scored through vLLM's ``/classify`` protocol);
* registers an ``hf`` rollout (``actor_rollout_ref.rollout.name=hf``): a token-in/token-out Ray server backed by
  ``transformers`` ``generate`` that batches concurrent requests, plus the in-worker adapter that pushes the actor's
  weights to it after every step (classes in :mod:`grporoc_plugin.cpu.replica`, loaded on first use). The same
  replica serves a discriminative reward model (``reward.reward_model.rollout.name=hf``):
  :mod:`grporoc_plugin.cpu.reward_server`.

Batching knobs (``actor_rollout_ref.rollout.custom`` keys, else env vars, else defaults):
``hf_max_batch_size`` / ``GRPOROC_HF_MAX_BATCH`` (64), ``hf_batch_window_ms`` / ``GRPOROC_HF_BATCH_WINDOW_MS`` (10),
``hf_num_threads`` / ``GRPOROC_HF_NUM_THREADS`` (1; CPU cores are shared with the trainer).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import types
from typing import Any

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry, set_platform

from grporoc_plugin.cpu import ROLLOUT_NAME, internals

logger = logging.getLogger(__name__)

PLATFORM_ENV = "VERL_PLATFORM"
ACTIVE: bool = os.environ.get(PLATFORM_ENV, "").strip().lower() == "cpu"


def is_active() -> bool:
    """True when this process runs verl on the CPU backend (``VERL_PLATFORM=cpu``)."""
    return ACTIVE


def _noop(*args, **kwargs) -> None:
    return None


def _zero(*args, **kwargs) -> int:
    return 0


class _CpuDeviceModule(types.ModuleType):
    """Stands in for ``torch.cuda`` (``get_torch_device()``): caches/streams are no-ops, memory stats are 0."""

    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
    current_device = staticmethod(lambda: "cpu")
    get_device_name = staticmethod(lambda *a: "cpu")  # flops_counter does `key in device_name`
    set_device = synchronize = empty_cache = ipc_collect = staticmethod(_noop)
    set_per_process_memory_fraction = reset_peak_memory_stats = reset_accumulated_memory_stats = staticmethod(_noop)
    memory_allocated = memory_reserved = max_memory_allocated = max_memory_reserved = staticmethod(_zero)
    manual_seed = manual_seed_all = staticmethod(torch.manual_seed)
    get_rng_state = staticmethod(torch.get_rng_state)
    set_rng_state = staticmethod(torch.set_rng_state)
    Stream, Event = torch.cpu.Stream, torch.cpu.Event
    stream, current_stream = staticmethod(torch.cpu.stream), staticmethod(torch.cpu.current_stream)

    @staticmethod
    def mem_get_info(*args) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    @staticmethod
    def get_device_properties(*args):
        import psutil

        return types.SimpleNamespace(name="cpu", total_memory=psutil.virtual_memory().total)

    def __getattr__(self, name: str):
        if hasattr(torch.cpu, name):
            return getattr(torch.cpu, name)
        raise AttributeError(f"grporoc_plugin CPU platform: device module has no {name!r} (add it to backend.py)")


_DEVICE_MODULE = _CpuDeviceModule("grporoc_plugin.cpu.device")


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only hosts: gloo collectives and fake Ray "GPU" bundles for placement."""

    device_name = property(lambda self: "cpu")
    vendor_name = property(lambda self: "cpu")
    device_module = property(lambda self: _DEVICE_MODULE)

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return ACTIVE  # never auto-detected unless opted in

    def current_device(self):
        return "cpu"  # callers do torch.device(get_device_id()); an int would mean cuda:<int>

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index) -> None:
        pass

    def synchronize(self, device_index=None) -> None:
        pass

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        pass

    def empty_cache(self) -> None:
        pass

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        pass

    def profiler_stop(self) -> None:
        pass

    def ray_resource_name(self) -> str:
        return "GPU"  # resource pools always ask for accelerator bundles: Ray is started with fake GPUs

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None


# ------------------------------------------------------------------------------------------ HF rollout server
def _knob(custom: dict | None, key: str, env: str, default: float) -> float:
    if custom and custom.get(key) is not None:
        return float(custom[key])
    return float(os.environ.get(env, default))


@dataclasses.dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    stop_ids: frozenset[int]
    sampling: tuple  # (do_sample, temperature, top_p, top_k, repetition_penalty): one generate() per value
    logprobs: bool
    future: asyncio.Future


class _PerRowStop:
    """Stopping criterion with a token budget and stop-token set per row (HF pads rows once they are done)."""

    def __init__(self, prompt_len: int, max_tokens: list[int], stop_ids: list[frozenset[int]]):
        width = max(1, max(len(s) for s in stop_ids))
        self.prompt_len = prompt_len
        self.max_tokens = torch.tensor(max_tokens)
        self.stop = torch.full((len(stop_ids), width), -1, dtype=torch.long)
        for row, ids in enumerate(stop_ids):
            self.stop[row, : len(ids)] = torch.tensor(sorted(ids), dtype=torch.long)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        n_new = input_ids.shape[1] - self.prompt_len
        hit_stop = (self.stop == input_ids[:, -1:]).any(dim=1)
        return hit_stop | (n_new >= self.max_tokens)


class HFRolloutServer:
    """Token-in/token-out server (the role of a vLLM/SGLang server) on ``transformers`` ``generate``.

    Concurrent ``generate`` calls are collected for a short window and run as ONE left-padded ``generate`` over
    the batch (same sampling settings per batch); each row keeps its own ``max_tokens`` and stop tokens.
    Semantics match verl's vLLM server: generated ids only, the stop token (eos ``<|im_end|>`` or a requested
    ``stop_token_ids`` entry) included, raw-logit log-probs when ``logprobs`` is requested.
    """

    def __init__(self, config, model_config, replica_rank: int = 0):
        from transformers import AutoModelForCausalLM
        from verl.utils.config import omega_conf_to_dataclass

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config)
        custom = self.config.custom or {}
        self.max_batch = max(1, int(_knob(custom, "hf_max_batch_size", "GRPOROC_HF_MAX_BATCH", 64)))
        self.window_s = max(0.0, _knob(custom, "hf_batch_window_ms", "GRPOROC_HF_BATCH_WINDOW_MS", 10) / 1000)
        torch.set_num_threads(max(1, int(_knob(custom, "hf_num_threads", "GRPOROC_HF_NUM_THREADS", 1))))
        path = self.model_config.local_path or self.model_config.path
        attn = (self.model_config.override_config or {}).get("attn_implementation", "sdpa")
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
        self.model.eval()
        tokenizer = self.model_config.tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.max_model_len = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        self.max_model_len = min(self.max_model_len, self.model.config.max_position_embeddings)
        self.replica_rank = replica_rank
        self.global_steps = None
        self._queue: list[_Request] = []
        self._batcher: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()
        self._warned: set[str] = set()
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0}

    # -------------------------------------------------------------------------------------------- requests
    def _parse(self, prompt_ids: list[int], sampling_params: dict[str, Any]) -> tuple:
        sp = dict(sampling_params or {})
        prompt_ids = [int(t) for t in prompt_ids]
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in max_model_len={self.max_model_len}")
        max_tokens = sp.pop("max_tokens", None) or sp.pop("max_new_tokens", None)
        if max_tokens is None:  # verl's vLLM server default
            c = self.config
            max_tokens = min(c.response_length, c.prompt_length + c.response_length - len(prompt_ids))
        max_tokens = max(1, min(int(max_tokens), room))
        temperature = float(sp.pop("temperature", 1.0) or 0.0)
        top_p = float(sp.pop("top_p", 1.0) or 1.0)
        top_k = int(sp.pop("top_k", -1) or -1)
        rep = float(sp.pop("repetition_penalty", 1.0) or 1.0)
        do_sample = temperature > 0
        sampling = (True, temperature, top_p, max(top_k, 0), rep) if do_sample else (False, 0.0, 1.0, 0, rep)
        stop_ids = set(sp.pop("stop_token_ids", None) or [])
        if not sp.pop("ignore_eos", False) and self.eos_id is not None:
            stop_ids.add(self.eos_id)
        logprobs = bool(sp.pop("logprobs", False))
        for key in sp:
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("hf rollout: sampling param %r is not supported and is ignored", key)
        return prompt_ids, max_tokens, frozenset(stop_ids), sampling, logprobs

    async def generate(self, request_id, prompt_ids, sampling_params, image_data=None, video_data=None, **kwargs):
        if image_data is not None or video_data is not None:
            raise NotImplementedError("hf rollout: multimodal inputs are not supported")
        prompt_ids, max_tokens, stop_ids, sampling, logprobs = self._parse(prompt_ids, sampling_params)
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(prompt_ids, max_tokens, stop_ids, sampling, logprobs, future))
        self.stats["requests"] += 1
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        token_ids, log_probs, stop_reason = await future
        from verl.workers.rollout.replica import TokenOutput

        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs,
            stop_reason=stop_reason,
            extra_fields={"global_steps": self.global_steps},
        )

    async def _run_batches(self) -> None:
        while self._queue:
            if len(self._queue) < self.max_batch and self.window_s > 0:
                await asyncio.sleep(self.window_s)  # let the other concurrent requests arrive
            key = self._queue[0].sampling
            batch = [r for r in self._queue if r.sampling == key][: self.max_batch]
            taken = {id(r) for r in batch}
            self._queue = [r for r in self._queue if id(r) not in taken]
            batch = [r for r in batch if not r.future.done()]
            if not batch:
                continue
            self.stats["batches"] += 1
            self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
            try:
                async with self._model_lock:
                    results = await asyncio.to_thread(self.generate_batch, batch)
            except Exception as exc:  # noqa: BLE001 - fail the requests, keep serving
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            for r, result in zip(batch, results, strict=True):
                if not r.future.done():
                    r.future.set_result((*result, "completed"))

    @torch.no_grad()
    def generate_batch(self, batch: list) -> list[tuple[list[int], list[float] | None]]:
        """One left-padded ``generate`` over requests sharing sampling settings -> (token_ids, log_probs)."""
        from transformers import GenerationConfig, StoppingCriteriaList

        do_sample, temperature, top_p, top_k, rep = batch[0].sampling
        width = max(len(r.prompt_ids) for r in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):
            input_ids[row, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            attention_mask[row, width - len(r.prompt_ids) :] = 1
        want_logprobs = any(r.logprobs for r in batch)
        gen_config = GenerationConfig(
            max_new_tokens=max(r.max_tokens for r in batch),
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=rep,
            eos_token_id=None,  # stops are per row, in _PerRowStop
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=True,
            output_logits=want_logprobs,
        )
        stop = _PerRowStop(width, [r.max_tokens for r in batch], [r.stop_ids for r in batch])
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=gen_config,
            stopping_criteria=StoppingCriteriaList([stop]),
        )
        generated = out.sequences[:, width:].tolist()
        results = []
        for row, r in enumerate(batch):
            tokens = generated[row][: r.max_tokens]
            end = next((i + 1 for i, t in enumerate(tokens) if t in r.stop_ids), len(tokens))
            tokens = tokens[:end]
            log_probs = None
            if r.logprobs:
                logits = torch.stack([step[row] for step in out.logits[:end]]).float()
                log_probs = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0].tolist()
            results.append((tokens, log_probs))
        return results

    # ------------------------------------------------------------------------------------------ weights
    async def update_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None = None) -> dict:
        async with self._model_lock:  # never swap weights under a running batch
            missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and self.model.config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"hf rollout: weight sync mismatch: missing={missing} unexpected={unexpected}")
        if global_steps is not None:
            self.global_steps = global_steps
        logger.info(
            "hf rollout server %d: loaded %d tensors, step %s", self.replica_rank, len(state_dict), global_steps
        )
        return {"tensors": len(state_dict)}

    async def get_stats(self) -> dict:
        return dict(self.stats)

    async def abort_all_requests(self, reject_request: bool = False) -> None:
        """Queued (not yet running) requests end as ``aborted``; a running batch finishes."""
        queued, self._queue = self._queue, []
        for r in queued:
            if not r.future.done():
                r.future.set_result(([], None, "aborted"))

    async def _nothing(self, *args, **kwargs) -> None:
        return None

    # Lifecycle hooks verl calls on every server: weights and KV cache simply stay in host memory.
    wake_up = sleep = resume_generation = clear_kv_cache = _nothing
    release_kv_cache = resume_kv_cache = start_profile = stop_profile = _nothing


def activate() -> None:
    """Register + select the cpu platform, apply the internals fixes, register the ``hf`` rollout (idempotent)."""
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    PlatformRegistry.register(platform="cpu")(PlatformCPU)
    set_platform(PlatformCPU())
    internals.force_gloo_process_group()
    internals.force_gloo_global_process_group()
    internals.alias_cpu_engines_to_cuda()
    internals.unpin_fsdp2_offload_policy()
    internals.route_disrm_engine_to_classify(ROLLOUT_NAME)
    # both load grporoc_plugin.cpu.replica (verl's heavy replica/adapter bases, ~4 s) only when first used
    internals.register_rollout_adapter(ROLLOUT_NAME, "async", "grporoc_plugin.cpu.replica.HFServerAdapter")
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)


def _load_replica():
    from grporoc_plugin.cpu.replica import HFReplica

    return HFReplica


if ACTIVE:
    activate()
