"""``algorithm.roc.empty_batch=refill`` on a real TransferQueue, driven through verl's own trainer wiring.

verl's ``PPOTrainer._build_replay_buffer`` loads ``RoCReplayBuffer`` from the composed ``grporoc.yaml`` and hands it
the trainer's bound ``_add_prompts_to_generate`` as ``refill_fn``; that real method fetches prompts, assigns uids,
registers them ``pending`` in TransferQueue and calls ``agent_loop_manager.generate_sequences``. Only the rollout
itself is scripted: :class:`ScriptedRollout` writes each submitted prompt's sessions into TransferQueue the way
``AgentLoopWorkerTQ`` does (``{uid}_{session}_{i}`` rows + a ``finished`` prompt tag), so each test chooses whether a
batch is all-equal (every group rejected by RoC) or mixed. No model, no Ray workers beyond TransferQueue's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

import grporoc_plugin

CONFIG_DIR = os.path.join(os.path.dirname(grporoc_plugin.__file__), "config")
TRAIN_BATCH = 2  # prompts per step
G = 4  # kept sessions per prompt (rollout.n); the manager would generate oversample_n = 8

Outcome = Callable[[int], list[float]]  # prompt index within one generate call -> acc of each of its 8 sessions
ALL_EQUAL: Outcome = lambda i: [float(i % 2)] * 8  # noqa: E731 - prompt 0 all wrong, prompt 1 all correct
MIXED: Outcome = lambda i: [1.0, 0.0] * 4  # noqa: E731


def compose(*overrides: str):
    """``grporoc.yaml`` composed in-process exactly as ``main_ppo --config-name grporoc`` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="grporoc", overrides=list(overrides))


class PromptStream:
    """Endless dataloader stand-in: fresh ``gen_batch_size`` dicts with the ``raw_prompt`` verl's dataset yields."""

    def __init__(self, gen_batch_size: int):
        self.gen_batch_size = gen_batch_size

    def __iter__(self) -> Iterator[dict]:
        i = 0
        while True:
            yield {"raw_prompt": [[{"role": "user", "content": f"q{i + j}"}] for j in range(self.gen_batch_size)]}
            i += self.gen_batch_size


class ScriptedRollout:
    """``agent_loop_manager`` whose ``generate_sequences`` writes finished groups with scripted outcomes into TQ."""

    def __init__(self, tq, write_group, outcomes: list[Outcome]):
        self.tq, self.write_group, self.outcomes = tq, write_group, list(outcomes)
        self.calls: list[list[str]] = []  # uids of every generate_sequences call, in order

    def generate_sequences(self, prompts) -> None:
        uids = [str(u) for u in prompts["uid"]]
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes) - 1)]
        steps = prompts.get("global_steps")
        step = int(getattr(steps, "data", steps))
        for i, uid in enumerate(uids):
            self.write_group(self.tq, uid, [{"acc": a} for a in outcome(i)], step=step)
        self.calls.append(uids)


def build_trainer(tq, write_group, outcomes: list[Outcome], *roc_overrides: str):
    """A ``PPOTrainerSync`` holding just what sampling + refill touch; returns (trainer, rollout, replay buffer)."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    config = compose(
        f"data.train_batch_size={TRAIN_BATCH}",
        f"actor_rollout_ref.rollout.n={G}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "trainer.n_gpus_per_node=1",
        "algorithm.roc.min_pos=1",
        "algorithm.roc.min_neg=1",
        "algorithm.roc.empty_batch=refill",
        *roc_overrides,
    )
    trainer = PPOTrainerSync.__new__(PPOTrainerSync)  # like verl's own trainer tests: no workers, no model
    trainer.config = config
    trainer.trainer_mode = config.trainer.v1.trainer_mode
    trainer.global_steps = 1
    trainer.train_dataloader = PromptStream(config.data.get("gen_batch_size", None) or TRAIN_BATCH)
    trainer.train_dataloader_it = None
    trainer.agent_loop_manager = rollout = ScriptedRollout(tq, write_group, outcomes)
    buffer = trainer._build_replay_buffer()  # verl's wiring: custom sampler + refill_fn=_add_prompts_to_generate
    buffer.poll_interval = 0.05
    return trainer, rollout, buffer


def stored(tq) -> set[str]:
    return set((tq.kv_list("train") or {}).get("train", {}))


def test_refill_replaces_an_all_rejected_batch(transfer_queue, put_group):
    from grporoc_plugin.v1.sampler import RoCReplayBuffer

    tq = transfer_queue
    trainer, rollout, buffer = build_trainer(tq, put_group, [ALL_EQUAL, MIXED])
    assert type(buffer) is RoCReplayBuffer and buffer.refill_fn.__self__ is trainer
    assert buffer.settings.empty_batch == "refill" and buffer.settings.oversample_n == 2 * G

    trainer._add_batch_to_generate()  # prepare_step: the step's own batch, every group all-equal
    first_keys = {k for k in stored(tq) if "_" in k}
    assert len(first_keys) == TRAIN_BATCH * 8

    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=TRAIN_BATCH)

    assert [len(c) for c in rollout.calls] == [TRAIN_BATCH, TRAIN_BATCH]  # one refill of a full batch of prompts
    first_uids, refill_uids = set(rollout.calls[0]), set(rollout.calls[1])
    kept_uids = {k.split("_")[0] for k in batch.keys}
    assert kept_uids == refill_uids  # the trained batch is the refill, every group of it mixed
    assert len(batch.keys) == TRAIN_BATCH * G and len(batch.tags) == len(batch.keys)
    assert metrics["roc/empty_batch_refills"] == 1.0 and "roc/empty_batch_kept_one" not in metrics
    assert metrics["roc/groups_kept"] == TRAIN_BATCH and metrics["roc/trajectory_rows_before"] == TRAIN_BATCH * 8
    # TransferQueue holds exactly the kept rows: the rejected batch (rows + prompt tags) and the refill's dropped
    # sessions are cleared, so nothing leaks into the next step's sampling
    assert stored(tq) == set(batch.keys)
    assert not first_keys & stored(tq) and not first_uids & stored(tq)
    tq.kv_clear(keys=list(batch.keys), partition_id="train")


@pytest.mark.parametrize("max_refills", [0, 2])
def test_refills_exhausted_fall_back_to_keep_one(transfer_queue, put_group, max_refills):
    tq = transfer_queue
    trainer, rollout, buffer = build_trainer(tq, put_group, [ALL_EQUAL], f"algorithm.roc.max_refills={max_refills}")
    trainer._add_batch_to_generate()

    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=TRAIN_BATCH)

    assert len(rollout.calls) == 1 + max_refills  # the step's batch, then every allowed refill, all rejected
    last_uids = set(rollout.calls[-1])
    # keep_one on the last batch: its first group, keep_n whole sessions (zero advantage, like a skipped step)
    assert len({k.split("_")[0] for k in batch.keys}) == 1 and {k.split("_")[0] for k in batch.keys} <= last_uids
    assert sorted(batch.keys) == sorted(f"{batch.keys[0].split('_')[0]}_{s}_0" for s in range(G))
    assert metrics["roc/empty_batch_kept_one"] == 1.0 and metrics["roc/empty_batch_refills"] == float(max_refills)
    assert metrics["roc/rows_kept"] == G and metrics["roc/groups_kept"] == 1  # what is trained on
    assert stored(tq) == set(batch.keys)
    tq.kv_clear(keys=list(batch.keys), partition_id="train")


def test_refill_needs_the_sync_trainers_refill_fn():
    from grporoc_plugin.config import RoCConfigError
    from grporoc_plugin.v1.sampler import RoCReplayBuffer

    with pytest.raises(RoCConfigError, match="empty_batch=refill"):
        RoCReplayBuffer(
            trainer_mode="sync",
            trainer_config={},
            max_off_policy_threshold=None,
            max_off_policy_strategy="drop",
            sampler_kwargs={"roc": {"min_pos": 1, "min_neg": 1, "empty_batch": "refill"}, "rollout_n": G},
            refill_fn=None,
        )
