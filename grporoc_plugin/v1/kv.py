"""TransferQueue storage <-> :class:`grporoc_plugin.adapter.Sessions` for the V1 adapters (sampler, grporoc_sync).

A V1 train batch is a list of TransferQueue keys ``{uid}_{session}_{index}`` (one per agent-loop output; a session
may have several outputs, its last one carries the reward). Selection works per session: a session is kept or
dropped whole. Imports TransferQueue but nothing from ``verl.trainer.ppo.v1``, so both adapters can import it without
an import cycle through verl's V1 package.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import transfer_queue as tq
from transfer_queue import KVBatchMeta

from grporoc_plugin import compat
from grporoc_plugin.adapter import RoCStage, Sessions, _number

__all__ = ["SessionLayout", "read_sessions", "split_batch"]


class SessionLayout:
    """Rows of a batch grouped into sessions, in rollout order (group first appearance, then session number)."""

    def __init__(self, keys: list[str]):
        rows_of: dict[str, list[int]] = defaultdict(list)
        last: dict[str, tuple[int, int]] = {}  # session -> (output index, row)
        uid_of: dict[str, str] = {}
        group_rank: dict[str, int] = {}
        for row, key in enumerate(keys):
            uid, session, index = compat.split_session_key(key)
            rows_of[session].append(row)
            uid_of[session] = uid
            if session not in last or index >= last[session][0]:
                last[session] = (index, row)
            group_rank.setdefault(uid, len(group_rank))
        # rollout order is the session number, not TransferQueue's arrival order (async rollouts finish short
        # trajectories first, which would bias negative_mode=first_k towards quick failures)
        self.sessions = sorted(rows_of, key=lambda s: (group_rank[uid_of[s]], compat.session_number(s)))
        self.rows = [rows_of[s] for s in self.sessions]
        self.last_rows = [last[s][1] for s in self.sessions]
        self.group_ids = [uid_of[s] for s in self.sessions]


def _extra(value: Any) -> dict:
    value = getattr(value, "data", value)
    return value if isinstance(value, dict) else {}


def read_sessions(batch: KVBatchMeta, stage: RoCStage, *, colocated: bool) -> tuple[Sessions, SessionLayout]:
    """Read one value per session: correctness, agent-loop counters, reward info and the response length.

    ``colocated``: the reward was written by ``PPOTrainer._compute_reward_colocate`` (top-level fields) instead of
    the streaming reward (``extra_fields["reward_extra_info"]``).
    """
    keys = list(batch.keys)
    layout = SessionLayout(keys)
    last_keys = [keys[row] for row in layout.last_rows]

    def get(fields: list[str]):
        return tq.kv_batch_get(keys=last_keys, partition_id=batch.partition_id, select_fields=fields)

    extras = [_extra(v) for v in list(get([compat.EXTRA_FIELDS])[compat.EXTRA_FIELDS])]
    infos = [_extra(e.get(compat.REWARD_EXTRA_INFO)) for e in extras]
    key = stage.settings.correct_key
    if stage.reads_reward:
        correct = np.array([_number(r.sum()) for r in list(get([compat.RM_SCORES])[compat.RM_SCORES])])
    elif colocated:
        try:
            values = list(get([key])[key])
        except ValueError as exc:  # TransferQueue: the field does not exist for these keys
            raise stage.missing_correctness_error(last_keys, len(last_keys), list(batch.fields or [])) from exc
        correct = np.array([_number(v) for v in values], dtype=np.float64)
    else:
        missing = [k for k, info in zip(last_keys, infos, strict=True) if key not in info]
        if missing:
            raise stage.missing_correctness_error(missing, len(last_keys), list(infos[0]) if infos else [])
        correct = np.array([_number(info[key]) for info in infos], dtype=np.float64)
    response_len = np.array([_number(batch.tags[row].get(compat.RESPONSE_LEN_TAG)) for row in layout.last_rows])
    sessions = Sessions(layout.group_ids, correct, extras, infos, response_len)
    return sessions, layout


def split_batch(batch: KVBatchMeta, layout: SessionLayout, kept_sessions) -> tuple[KVBatchMeta, list[str]]:
    """(the kept sessions' rows as a batch in their original order, the dropped keys)."""
    keys = list(batch.keys)
    kept_rows = sorted(row for i in np.asarray(kept_sessions).tolist() for row in layout.rows[i])
    kept_set = set(kept_rows)
    kept = KVBatchMeta(
        partition_id=batch.partition_id,
        keys=[keys[r] for r in kept_rows],
        tags=[batch.tags[r] for r in kept_rows],
        fields=batch.fields,
        extra_info=batch.extra_info,
    )
    return kept, [k for r, k in enumerate(keys) if r not in kept_set]
