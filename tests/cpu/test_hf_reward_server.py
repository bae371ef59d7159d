"""The ``hf`` reward server in-process: vLLM ``/classify`` semantics, last-token scores, batching, bad input."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from verl.workers.config import HFModelConfig, RolloutConfig

from grporoc_plugin.cpu.reward_server import ClassifyRequestError, HFRewardServer

TEXTS = [
    "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n<answer>\\boxed{5}</answer><|im_end|>\n",
    "<|im_start|>user\nWhat is 7 * 6?<|im_end|>\n<|im_start|>assistant\nLet me compute it with Python.<|im_end|>\n",
    "short",
    "<|im_start|>assistant\n" + "print(1 + 2)\n" * 12,
]


@pytest.fixture(scope="module")
def server(tiny_reward_model):
    config = RolloutConfig(name="hf", dtype="float32", prompt_length=256, response_length=64)
    return HFRewardServer(config, HFModelConfig(path=tiny_reward_model))


def _classify(server, body: dict, max_batch: int = 64, window_ms: float = 20.0) -> dict:
    server.max_batch, server.window_s = max_batch, window_ms / 1000
    return asyncio.run(server.classify(body))


def _batches(server, body: dict, **kwargs) -> tuple[dict, int]:
    before = server.stats["batches"]
    out = _classify(server, body, **kwargs)
    return out, server.stats["batches"] - before


def test_scores_are_hf_last_token_logits(server, tiny_reward_model):
    """Raw logits (use_activation=False, what verl sends) equal transformers' own pooled logits, one text at a time."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model, dtype=torch.float32).eval()
    out = _classify(server, {"model": "rm", "input": TEXTS, "use_activation": False})
    assert out["object"] == "list" and out["model"] == "rm" and len(out["data"]) == len(TEXTS)
    for i, (text, item) in enumerate(zip(TEXTS, out["data"], strict=True)):
        with torch.no_grad():
            expected = model(torch.tensor([tokenizer(text)["input_ids"]])).logits[0]
        assert item["index"] == i and item["num_classes"] == 1 and len(item["probs"]) == 1
        assert item["probs"][0] == pytest.approx(float(expected[0]), abs=1e-5)
    scores = [item["probs"][-1] for item in out["data"]]
    assert len(set(scores)) == len(scores), "different texts should score differently"
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert out["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}


def test_batched_equals_one_at_a_time_and_activation(server):
    batched, n_batched = _batches(server, {"input": TEXTS, "use_activation": False})
    single, n_single = _batches(server, {"input": TEXTS, "use_activation": False}, max_batch=1, window_ms=0)
    assert (n_batched, n_single) == (1, len(TEXTS)), "one right-padded forward vs one forward per text"
    for b, s in zip(batched["data"], single["data"], strict=True):
        assert b["probs"][0] == pytest.approx(s["probs"][0], abs=1e-5)
    activated = _classify(server, {"input": TEXTS[0]})  # vLLM's default: sigmoid for a single label
    assert activated["data"][0]["probs"][0] == pytest.approx(
        torch.sigmoid(torch.tensor(batched["data"][0]["probs"][0]))
    )
    legacy = _classify(server, {"input": TEXTS[0], "activation": False})  # vLLM's older field name
    assert legacy["data"][0]["probs"] == pytest.approx(batched["data"][0]["probs"], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": []}, "non-empty"),
        ({"input": [1, 2]}, "list of strings"),
        ({"prompt": "x"}, "'input'"),
        ({"input": "x " * 400}, "max_model_len=320"),
        ([], "JSON object"),
    ],
)
def test_bad_requests_name_the_problem(server, body, message):
    with pytest.raises(ClassifyRequestError, match=message):
        _classify(server, body)


def test_http_classify_and_clean_shutdown(server):
    """POST /classify over real HTTP (the body verl sends), 400 on bad input, then shutdown() closes the port."""
    import socket

    import aiohttp

    def port_open(address: str) -> bool:
        host, port = address.rsplit(":", 1)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return True
        except OSError:
            return False

    async def go():
        address = await server.start()
        assert await server.start() == address  # idempotent
        async with aiohttp.ClientSession() as session:
            body = {"model": "rm", "input": TEXTS[0], "use_activation": False}
            async with session.post(f"http://{address}/classify", json=body) as resp:
                ok = (resp.status, await resp.json())
            async with session.post(f"http://{address}/classify", json={"input": 3}) as resp:
                bad = (resp.status, await resp.json())
        was_open = await asyncio.to_thread(port_open, address)
        await server.shutdown()
        return address, ok, bad, was_open

    address, (status, body), (bad_status, bad_body), was_open = asyncio.run(go())
    direct = _classify(server, {"input": TEXTS[0], "use_activation": False})
    assert status == 200 and body["data"][0]["probs"] == pytest.approx(direct["data"][0]["probs"], abs=1e-6)
    assert bad_status == 400 and "'input'" in bad_body["error"]
    assert was_open and not port_open(address), "the port must close on shutdown()"
    assert server.address is None
