"""Cluster-scale sandbox: N Ray actors, each owning a local ``SandboxPool``, with least-loaded async dispatch.

Tool calls from many rollout workers then spread over the cluster's CPU nodes (the paper's distributed code service).
Imported lazily: ``grporoc_plugin.sandbox`` itself never imports Ray.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import ray

from grporoc_plugin.sandbox.config import ExecutionResult, SandboxConfig, SandboxConfigError
from grporoc_plugin.sandbox.pool import SandboxPool


@ray.remote
class SandboxActor:
    """Owns one ``SandboxPool`` on its node; async methods so one actor runs many executions at once."""

    def __init__(self, config: SandboxConfig):
        self.pool = SandboxPool(config)

    def info(self) -> dict[str, Any]:
        import os
        import socket

        return {
            "isolation": self.pool.isolation,
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "server_pid": self.pool.server_pid,
        }

    async def aexecute(self, code: str, stdin: str, timeout_s: float | None, memory_mb: int | None) -> ExecutionResult:
        return await self.pool.aexecute(code, stdin, timeout_s=timeout_s, memory_mb=memory_mb)

    def stats(self) -> dict:
        return self.pool.stats()

    def close(self) -> None:
        self.pool.close()


class RaySandboxPool:
    """``aexecute``/``execute`` like ``SandboxPool``, dispatched to the actor with the fewest calls in flight.

    ``num_actors`` actors with ``num_cpus_per_actor`` CPUs each; every actor runs ``config.concurrency`` executions
    at once (set ``max_concurrency`` to the actor's cores times 2). ``spread=True`` asks Ray to place actors on
    different nodes.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        num_actors: int = 2,
        num_cpus_per_actor: float = 1.0,
        spread: bool = True,
        max_concurrency_per_actor: int = 1000,
    ):
        if num_actors < 1:
            raise SandboxConfigError(f"RaySandboxPool.num_actors must be >= 1, got {num_actors}")
        self.config = config or SandboxConfig()
        # A killed actor (node loss, OOM, a crash) is restarted by Ray: calls in flight on it end as sandbox_error
        # (infrastructure, never penalised), later calls reach the new actor.
        opts: dict[str, Any] = {
            "num_cpus": num_cpus_per_actor,
            "max_concurrency": max_concurrency_per_actor,
            "max_restarts": -1,
        }
        if spread:
            opts["scheduling_strategy"] = "SPREAD"
        self.actors = [SandboxActor.options(**opts).remote(self.config) for _ in range(num_actors)]
        self._inflight = [0] * num_actors
        self._rr = itertools.count()
        # Fail fast (bad config, required isolation missing) and learn what each actor got.
        self.actor_info: list[dict] = ray.get([a.info.remote() for a in self.actors])

    @property
    def isolation(self) -> str:
        """The weakest isolation over the actors (they may sit on differently configured nodes)."""
        levels = sorted({i["isolation"] for i in self.actor_info})
        return levels[0] if len(levels) == 1 else "mixed:" + ",".join(levels)

    def _pick(self) -> int:
        start = next(self._rr) % len(self.actors)  # ties broken round-robin
        order = [(start + k) % len(self.actors) for k in range(len(self.actors))]
        return min(order, key=lambda i: self._inflight[i])

    async def aexecute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        i = self._pick()
        self._inflight[i] += 1
        try:
            return await self.actors[i].aexecute.remote(code, stdin, timeout_s, memory_mb)
        except ray.exceptions.RayError as e:
            return ExecutionResult(status="sandbox_error", detail=f"sandbox actor {i} failed: {e!r}")
        finally:
            self._inflight[i] -= 1

    def execute(
        self, code: str, stdin: str = "", *, timeout_s: float | None = None, memory_mb: int | None = None
    ) -> ExecutionResult:
        i = self._pick()
        self._inflight[i] += 1
        try:
            return ray.get(self.actors[i].aexecute.remote(code, stdin, timeout_s, memory_mb))
        except ray.exceptions.RayError as e:
            return ExecutionResult(status="sandbox_error", detail=f"sandbox actor {i} failed: {e!r}")
        finally:
            self._inflight[i] -= 1

    async def amap(self, calls: list[dict]) -> list[ExecutionResult]:
        """Runs many calls ({code, stdin?, timeout_s?, memory_mb?}) concurrently across the actors."""
        return list(await asyncio.gather(*(self.aexecute(**c) for c in calls)))

    def stats(self) -> list[dict]:
        return ray.get([a.stats.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            try:
                ray.get(a.close.remote())
            except ray.exceptions.RayError:
                pass
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> RaySandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
