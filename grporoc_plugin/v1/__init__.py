"""GRPO-RoC adapters for verl's V1 (TransferQueue) trainer.

Import-light on purpose (this package is imported from the ``verl.plugins`` entry point): the adapters live in
:mod:`.sampler`, :mod:`.manager` and :mod:`.trainer`, which import TransferQueue. :func:`install_trainer_hook`
registers the ``grporoc_sync`` trainer mode lazily, the moment verl itself imports ``verl.trainer.ppo.v1``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys

logger = logging.getLogger(__name__)

__all__ = ["install_trainer_hook"]

_V1_PACKAGE = "verl.trainer.ppo.v1"
_TRAINER_MODULE = "grporoc_plugin.v1.trainer"


def _register_trainer() -> None:
    try:
        importlib.import_module(_TRAINER_MODULE)
    except Exception as exc:  # noqa: BLE001 - never break verl's own import; get_trainer_cls will name the mode
        logger.warning(
            "grporoc_plugin: could not register trainer mode 'grporoc_sync': %s: %s", type(exc).__name__, exc
        )


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of ``verl.trainer.ppo.v1`` to register our trainer after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _V1_PACKAGE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_trainer()

        spec.loader.exec_module = exec_then_register
        return spec


def install_trainer_hook() -> None:
    """Register trainer mode ``grporoc_sync`` as soon as (or, if already imported, now that) verl's V1 loads."""
    if _V1_PACKAGE in sys.modules:
        _register_trainer()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
