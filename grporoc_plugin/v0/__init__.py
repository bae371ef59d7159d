"""GRPO-RoC adapters for verl's legacy V0 trainer (``trainer.use_v1=False``): :mod:`.trainer` and :mod:`.main`."""
