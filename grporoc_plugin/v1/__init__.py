"""GRPO-RoC adapters for verl's V1 (TransferQueue) trainer.

Import-light on purpose: the adapters live in :mod:`.sampler`, :mod:`.manager` and :mod:`.trainer` (which import
TransferQueue and verl's V1 package). Trainer mode ``grporoc_sync`` is registered by :mod:`grporoc_plugin.register`
the moment verl itself imports ``verl.trainer.ppo.v1``.
"""
