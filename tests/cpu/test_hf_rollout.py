"""The ``hf`` rollout server: batched generation keeps per-request semantics (greedy equality, stops, budgets)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoTokenizer
from verl.workers.config import HFModelConfig, RolloutConfig

from grporoc_plugin.cpu.backend import HFRolloutServer
from grporoc_plugin.demo.assets import TOOL_SCHEMA, make_problem


@pytest.fixture(scope="module")
def server_and_prompts(tiny_assets):
    import random

    tokenizer = AutoTokenizer.from_pretrained(tiny_assets["model"])
    rollout = RolloutConfig(name="hf", prompt_length=512, response_length=24, tensor_model_parallel_size=1)
    server = HFRolloutServer(rollout, HFModelConfig(path=tiny_assets["model"]), replica_rank=0)
    rng = random.Random(7)
    prompts = []
    for i in range(6):  # different lengths: with and without the tools system prompt
        messages = [{"role": "user", "content": make_problem(rng).question + " !" * i}]
        tools = [TOOL_SCHEMA] if i % 2 else None
        prompts.append(tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False))
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    assert len({len(p) for p in prompts}) > 3
    return server, prompts


def _generate_all(server, prompts, params, max_batch=64, window_ms=20.0):
    server.max_batch, server.window_s = max_batch, window_ms / 1000

    async def go():
        return await asyncio.gather(*[server.generate(f"r{i}", p, dict(params[i])) for i, p in enumerate(prompts)])

    before = dict(server.stats)
    outs = asyncio.run(go())
    return outs, server.stats["batches"] - before["batches"]


GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": -1, "logprobs": True}


def test_batched_greedy_equals_per_request_greedy(server_and_prompts):
    server, prompts = server_and_prompts
    params = [GREEDY] * len(prompts)
    batched, n_batches = _generate_all(server, prompts, params)
    single, n_single = _generate_all(server, prompts, params, max_batch=1, window_ms=0)
    assert n_batches == 1 and n_single == len(prompts)
    for b, s in zip(batched, single, strict=True):
        assert b.token_ids == s.token_ids and b.stop_reason == "completed"
        assert len(b.token_ids) == 24  # random model: budget, not eos
        assert max(abs(x - y) for x, y in zip(b.log_probs, s.log_probs, strict=True)) < 1e-4


def test_log_probs_match_teacher_forced_forward(server_and_prompts):
    server, prompts = server_and_prompts
    (out,), _ = _generate_all(server, prompts[:1], [GREEDY])
    ids = torch.tensor([prompts[0] + out.token_ids])
    with torch.no_grad():
        logits = server.model(ids).logits[0, len(prompts[0]) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)


def test_per_row_budgets_and_stop_tokens_in_one_batch(server_and_prompts):
    server, prompts = server_and_prompts
    reference, _ = _generate_all(server, prompts, [GREEDY] * len(prompts))
    # row 0: small max_tokens; row 1: stop on its 5th greedy token; row 2: eos-like stop via stop_token_ids
    stop_tok = reference[1].token_ids[4]
    params = [dict(GREEDY) for _ in prompts]
    params[0]["max_tokens"] = 3
    params[1]["stop_token_ids"] = [stop_tok]
    params[2]["max_new_tokens"] = 7  # sglang-style name
    outs, n_batches = _generate_all(server, prompts, params)
    assert n_batches == 1
    assert outs[0].token_ids == reference[0].token_ids[:3]
    first = reference[1].token_ids.index(stop_tok)
    assert outs[1].token_ids == reference[1].token_ids[: first + 1], "must stop at (and include) the stop token"
    assert outs[2].token_ids == reference[2].token_ids[:7]
    for i in range(3, len(prompts)):
        assert outs[i].token_ids == reference[i].token_ids, "other rows must be unaffected"


def test_stops_on_eos(server_and_prompts, monkeypatch):
    server, prompts = server_and_prompts
    reference, _ = _generate_all(server, prompts[:2], [GREEDY] * 2)
    eos = reference[0].token_ids[2]
    monkeypatch.setattr(server, "eos_id", eos)  # pretend the tiny model emits eos there
    outs, _ = _generate_all(server, prompts[:2], [GREEDY] * 2)
    for out, ref in zip(outs, reference, strict=True):
        end = ref.token_ids.index(eos) + 1 if eos in ref.token_ids else len(ref.token_ids)
        assert out.token_ids == ref.token_ids[:end]
    ignore = dict(GREEDY, ignore_eos=True)
    outs, _ = _generate_all(server, prompts[:1], [ignore])
    assert outs[0].token_ids == reference[0].token_ids


def test_sampling_params_are_honoured(server_and_prompts):
    server, prompts = server_and_prompts
    reference, _ = _generate_all(server, prompts[:1], [GREEDY])
    torch.manual_seed(0)
    top1, _ = _generate_all(server, prompts[:1] * 4, [{"temperature": 1.0, "top_k": 1, "top_p": 1.0}] * 4)
    assert all(o.token_ids == reference[0].token_ids for o in top1), "top_k=1 sampling must equal greedy"
    torch.manual_seed(0)
    hot, n_batches = _generate_all(server, prompts[:1] * 8, [{"temperature": 1.0, "top_k": -1, "top_p": 1.0}] * 8)
    assert n_batches == 1 and len({tuple(o.token_ids) for o in hot}) == 8, "temperature 1 must sample"
    assert all(o.log_probs is None for o in hot)  # not requested
    mixed, n_batches = _generate_all(server, prompts[:2], [GREEDY, {"temperature": 1.0}])
    assert n_batches == 2, "different sampling settings must not share a generate() call"
    assert mixed[0].token_ids == reference[0].token_ids


def test_default_budget_and_abort(server_and_prompts):
    server, prompts = server_and_prompts
    params = {"temperature": 0.0}
    long_prompt = (prompts[0] * 20)[:520]  # leaves less than response_length of room in prompt+response
    room = server.config.prompt_length + server.config.response_length - len(long_prompt)
    assert 0 < room < server.config.response_length
    (out,), _ = _generate_all(server, [long_prompt], [params])
    assert len(out.token_ids) == room
    with pytest.raises(ValueError, match="no room"):
        _generate_all(server, [prompts[0] * 20], [params])

    async def aborted():
        server.window_s = 0.2
        task = asyncio.ensure_future(server.generate("a", prompts[0], dict(params)))
        await asyncio.sleep(0.05)
        await server.abort_all_requests()
        return await task

    out = asyncio.run(aborted())
    assert out.stop_reason == "aborted" and out.token_ids == []
