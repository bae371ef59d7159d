"""Fixtures for the trainer-adapter tests: a real local Ray + TransferQueue (one storage unit).

TransferQueue needs 3 CPU bundles (controller + storage units); with ``num_data_storage_units=1`` and
``num_cpus=3`` logical CPUs, ``tq.init`` never waits for resources (spec: it hangs under ``num_cpus=2``).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def transfer_queue():
    """A live TransferQueue on a private local Ray; always torn down."""
    ray = pytest.importorskip("ray")
    import transfer_queue as tq
    from omegaconf import OmegaConf

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        tq.init(
            OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1, "total_storage_size": 10000}}})
        )
        yield tq
    finally:
        try:
            tq.close()
        finally:
            ray.shutdown()


@pytest.fixture
def put_group():
    """The :func:`write_group` helper (tests need no import path to this conftest)."""
    return write_group


def write_group(tq, uid: str, sessions: list[dict], *, partition: str = "train", step: int = 1) -> list[str]:
    """Write one finished prompt group the way ``AgentLoopWorkerTQ`` does: prompt tag + ``{uid}_{s}_{i}`` rows.

    ``sessions[s]`` has ``acc`` and optional ``score``, ``outputs`` (outputs per session, default 1; the reward extra
    info is copied to every output as verl does), ``calls``/``errors`` (the ``grporoc_tool_agent`` counters written
    into ``extra_fields``: that many tool calls, that many failed, one closed answer tag) and ``p_err``/``p_format``/
    ``tool_calls`` (reported by the reward instead, the fallback penalty source). Returns the written keys.
    """
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    tq.kv_put(key=uid, partition_id=partition, tag={"is_prompt": True, "status": "finished", "global_steps": step})
    keys, fields, tags = [], [], []
    for s, spec in enumerate(sessions):
        info = {k: spec[k] for k in ("acc", "score", "p_err", "p_format", "tool_calls") if k in spec}
        counters = agent_counters(spec["calls"], spec.get("errors", 0)) if "calls" in spec else {}
        for i in range(spec.get("outputs", 1)):
            resp = torch.arange(3 + s, dtype=torch.int64)
            rm = torch.zeros(resp.numel())
            rm[-1] = float(spec.get("score", spec.get("acc", 0.0)))
            fields.append(
                {
                    "prompts": torch.tensor([7, 8], dtype=torch.int64),
                    "responses": resp,
                    "response_mask": torch.ones_like(resp),
                    "rm_scores": rm,
                    "extra_fields": {
                        **counters,
                        "reward_extra_info": dict(info),
                        "turn_scores": [],
                        "tool_rewards": [],
                    },
                    "uid": uid,
                    "session_id": s,
                }
            )
            keys.append(f"{uid}_{s}_{i}")
            tags.append(
                {
                    "status": "success",
                    "prompt_len": 2,
                    "response_len": resp.numel(),
                    "seq_len": 2 + resp.numel(),
                    "global_steps": step,
                }
            )
    tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    return keys


def agent_counters(calls: int, errors: int = 0) -> dict:
    """``grporoc_tool_agent``'s counters of a trajectory with ``calls`` tool calls (``errors`` failed by execution),
    one assistant turn per call plus the answer turn, and one closed answer tag."""
    return {
        "tool_calls": calls,
        "tool_errors_parse": 0,
        "tool_errors_exec": errors,
        "tool_errors_timeout": 0,
        "tool_errors_infra": 0,
        "assistant_turns": calls + 1,
        "dropped_tool_calls": 0,
        "answer_tags": 1,
        "void_turns": 0,
        "answer_tags_balanced": True,
        "truncated": False,
    }
