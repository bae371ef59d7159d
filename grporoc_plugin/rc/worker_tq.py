"""The conditioned V1 agent-loop worker (separate module: importing it imports TransferQueue and verl's V1 loop)."""

from __future__ import annotations

from grporoc_plugin import compat
from grporoc_plugin.rc.worker import RCWorkerMixin

__all__ = ["RCAgentLoopWorkerTQ"]

_BASE = compat.agent_loop_worker_tq_class()


class RCAgentLoopWorkerTQ(RCWorkerMixin, _BASE):
    """verl's TransferQueue ``AgentLoopWorkerTQ`` (V1 trainer) with the conditioning hook."""

    def __init__(self, *args, **kwargs):
        # Explicit on purpose. ray.remote wraps every method of the actor class for tracing and ships the class to
        # the worker; the inherited AgentLoopWorkerTQ.__init__ (whose module name points at the ActorClass, not the
        # class) travels by value with a copy of the class in its zero-argument super() cell, which is not in this
        # class's MRO ("super(type, obj): obj must be an instance or subtype of type"). This __init__ travels by
        # reference and calls the real base class of this process.
        _BASE.__init__(self, *args, **kwargs)
