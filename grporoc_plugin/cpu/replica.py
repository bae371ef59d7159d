"""The ``hf`` rollout's verl-facing classes: the replica that launches its server and the in-worker weight adapter.

Loaded lazily by verl's registries (``RolloutReplicaRegistry`` loader, ``_ROLLOUT_REGISTRY`` class path) once a run
uses ``rollout.name=hf``: importing verl's replica/adapter base classes costs ~4 s.

A replica is a policy rollout (``HFRolloutServer``: token-in/token-out ``generate``) or a discriminative reward
model (``is_reward_model``: ``HFRewardServer``, vLLM's ``/classify`` over HTTP); distillation teachers (they need
vLLM's ``prompt_logprobs``) are refused. Its server is a named Ray actor; the name carries the role and the
replica's ``name_suffix`` so that replicas never collide, and the replica hands that exact name to the adapters
verl builds for it (``get_ray_class_with_init_args``).
"""

from __future__ import annotations

import os

import ray
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from grporoc_plugin.cpu import internals
from grporoc_plugin.cpu.backend import HFRolloutServer


def hf_server_name(replica_rank: int, role: str = "rollout", name_suffix: str = "") -> str:
    """Ray actor name of a replica's server; ``name_suffix`` as ``RolloutReplica`` stores it (``""`` or ``_key``)."""
    return f"grporoc_hf_{role}_server_{replica_rank}{name_suffix}"


class HFReplica(RolloutReplica):
    """One server Ray actor per replica (it needs no accelerator bundle)."""

    @property
    def role(self) -> str:
        return "reward" if self.is_reward_model else "rollout"

    @property
    def server_name(self) -> str:
        return hf_server_name(self.replica_rank, self.role, self.name_suffix)

    def rollout_worker_use_gpu(self) -> bool:
        return False

    def get_ray_class_with_init_args(self):
        """verl's ``CheckpointEngineWorker`` spec, plus the server name its adapter must push weights to."""
        spec = super().get_ray_class_with_init_args()
        spec.kwargs[internals.ADAPTER_SERVER_NAME_KWARG] = self.server_name
        return spec

    async def launch_servers(self) -> None:
        if self.is_teacher_model:
            raise NotImplementedError("hf rollout: distillation teachers (vLLM prompt_logprobs) are not supported")
        if self.rollout_mode == RolloutMode.HYBRID and self.name_suffix:
            # hybrid adapters live in the trainer workers, built before this replica with no name to look up
            raise ValueError(f"hf rollout: a hybrid replica cannot take a name_suffix ({self.name_suffix!r})")
        if self.is_reward_model:
            from grporoc_plugin.cpu.reward_server import HFRewardServer

            server_cls = HFRewardServer
        else:
            server_cls = HFRolloutServer
        actor_cls = ray.remote(server_cls).options(
            name=self.server_name, num_cpus=0, max_concurrency=self.max_concurrency, get_if_exists=False
        )
        server = actor_cls.remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        # A reward model is reached over HTTP (verl's router POSTs /classify); a rollout through its handle.
        address = await server.start.remote() if self.is_reward_model else self.server_name
        # RolloutReplica's private server fields (internals.REPLICA_SERVER_ATTRS).
        self.servers, self._server_handle, self._server_address = [server], server, address


class HFServerAdapter(BaseRollout):
    """In the trainer worker (hybrid engine) or a ``CheckpointEngineWorker``: pushes fresh weights to the server.

    ``server_name``: the Ray actor to update (given by :meth:`HFReplica.get_ray_class_with_init_args`); hybrid
    adapters, which verl builds without it, update the policy server of their replica rank.
    """

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, server_name: str | None = None):
        super().__init__(config, model_config, device_mesh)
        c = self.config
        world = c.tensor_model_parallel_size * c.data_parallel_size * c.pipeline_model_parallel_size
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_leader_rank = rank % world == 0  # the name CheckpointEngineWorker.is_leader_rank reads
        self.server_name = server_name or hf_server_name(self.replica_rank)

    async def resume(self, tags: list[str]) -> None:
        pass

    async def release(self) -> None:
        pass

    async def update_weights(self, weights, wire_format: str = "named_tensors", **kwargs) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout: weight wire_format {wire_format!r} is not supported")
        state = {}
        for name, tensor in weights:  # every rank drains the generator: it may run FSDP collectives
            tensor = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            if self.is_leader_rank:
                state[name] = tensor.detach().to("cpu", copy=True)
        if self.is_leader_rank:
            server = ray.get_actor(self.server_name)
            await server.update_weights.remote(state, global_steps=kwargs.get("global_steps"))
