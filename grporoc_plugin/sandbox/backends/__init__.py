"""Sandbox backends behind one small protocol (``base.Backend``), in a registry like verl's ``core_algos``."""

from grporoc_plugin.sandbox.backends.base import BACKENDS, Backend, PoolContext, get_backend, register_backend

__all__ = ["BACKENDS", "Backend", "PoolContext", "get_backend", "register_backend"]
