"""Reward-model server of the CPU backend: a ``transformers`` sequence classifier behind vLLM's ``/classify`` API.

verl scores a batch with a discriminative reward model (``reward.reward_model.enable=True``, no custom reward
function) by POSTing each trajectory's chat text to a router in front of the reward-model servers
(``RewardLoopWorker.compute_score_disrm``). On GPUs the servers are vLLM or SGLang; on the CPU backend the ``hf``
replica launches this server instead (``HFReplica`` with ``is_reward_model=True``), and
:func:`grporoc_plugin.cpu.internals.route_hf_disrm_to_classify` makes verl speak vLLM's protocol to it:

* request ``POST /classify`` ``{"model": ..., "input": str | [str, ...], "use_activation": bool}``
  (``add_special_tokens`` honoured; ``activation`` is vLLM's older name of ``use_activation``);
* response ``{"id", "object": "list", "created", "model", "data": [{"index", "label", "probs", "num_classes"}],
  "usage"}``; ``probs`` are the raw logits when ``use_activation`` is false (what verl asks for), else sigmoid
  (one label) or softmax (several), as vLLM's default classify activation.

Scores are vLLM's *last-token* pooling: the classifier head applied to the last token's hidden state. Concurrent
requests are collected for a short window and run as one right-padded forward (padding after the last token does
not change a causal model's hidden state there, so batched scores equal one-at-a-time scores). The HTTP server
(uvicorn) lives in the server's Ray actor and closes its socket in :meth:`HFRewardServer.shutdown` or with the actor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
import uuid
from typing import Any

import torch
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' (string) annotations here
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

#: Request keys of vLLM's classify API this server reads; others are ignored with one warning each.
KNOWN_REQUEST_KEYS = frozenset({"model", "input", "use_activation", "activation", "add_special_tokens"})


class ClassifyRequestError(ValueError):
    """A ``/classify`` request this server cannot serve (answered with HTTP 400 and the message)."""


@dataclasses.dataclass
class _Pending:
    ids: list[int]
    future: asyncio.Future


class HFRewardServer:
    """Ray actor serving a ``*ForSequenceClassification`` model (decoder with a ``score`` head) over HTTP.

    ``config`` is the reward model's ``RolloutConfig`` (``reward.reward_model.rollout``: ``dtype``,
    ``max_model_len``/``prompt_length + response_length``, ``max_num_seqs`` caps a batch, ``custom`` knobs
    ``hf_max_batch_size`` / ``hf_batch_window_ms`` / ``hf_num_threads`` as for the rollout server), ``model_config``
    its ``HFModelConfig``.
    """

    def __init__(self, config, model_config, replica_rank: int = 0):
        from transformers import AutoModelForSequenceClassification
        from verl.utils.config import omega_conf_to_dataclass

        from grporoc_plugin.cpu.backend import _knob

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config)
        custom = self.config.custom or {}
        self.window_s = max(0.0, _knob(custom, "hf_batch_window_ms", "GRPOROC_HF_BATCH_WINDOW_MS", 10) / 1000)
        # verl forces max_num_seqs=1 for /classify under full_determinism: a batch never exceeds it
        max_batch = int(_knob(custom, "hf_max_batch_size", "GRPOROC_HF_MAX_BATCH", 64))
        self.max_batch = max(1, min(max_batch, int(self.config.max_num_seqs or max_batch)))
        torch.set_num_threads(max(1, int(_knob(custom, "hf_num_threads", "GRPOROC_HF_NUM_THREADS", 1))))
        path = self.model_config.local_path or self.model_config.path
        dtype = getattr(torch, str(self.config.dtype or "float32"))
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype).eval()
        if not isinstance(getattr(self.model, "score", None), torch.nn.Module):
            raise ValueError(
                f"hf reward server: {type(self.model).__name__} ({path}) has no `score` head; decoder "
                "sequence classifiers (Qwen2/Llama/Mistral/...ForSequenceClassification) are supported"
            )
        self.tokenizer = self.model_config.tokenizer
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = self.config.max_model_len or (self.config.prompt_length + self.config.response_length)
        self.max_model_len = min(int(limit), int(self.model.config.max_position_embeddings))
        self.num_labels = int(self.model.config.num_labels)
        self.id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        self.served_model = self.model_config.path
        self.replica_rank = replica_rank
        self._queue: list[_Pending] = []
        self._batcher: asyncio.Task | None = None
        self._model_lock = asyncio.Lock()
        self._warned: set[str] = set()
        self.stats = {"requests": 0, "batches": 0, "max_batch": 0}
        self._http = None  # uvicorn.Server once started
        self._http_task: asyncio.Task | None = None
        self.address: str | None = None

    # ------------------------------------------------------------------------------------------------- scoring
    async def score_ids(self, ids: list[int]) -> list[float]:
        """Raw logits (one per label) of one token sequence; concurrent calls share one forward."""
        if not ids:
            raise ClassifyRequestError("empty input: nothing to score")
        if len(ids) > self.max_model_len:
            raise ClassifyRequestError(
                f"input of {len(ids)} tokens is longer than max_model_len={self.max_model_len} "
                "(reward.reward_model.rollout.max_model_len / prompt_length + response_length)"
            )
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(list(ids), future))
        self.stats["requests"] += 1
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        return await future

    async def _run_batches(self) -> None:
        while self._queue:
            if len(self._queue) < self.max_batch and self.window_s > 0:
                await asyncio.sleep(self.window_s)  # let the other concurrent requests arrive
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self.stats["batches"] += 1
            self.stats["max_batch"] = max(self.stats["max_batch"], len(batch))
            try:
                async with self._model_lock:
                    logits = await asyncio.to_thread(self.forward, [p.ids for p in batch])
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            for p, row in zip(batch, logits, strict=True):
                if not p.future.done():
                    p.future.set_result(row)

    @torch.no_grad()
    def forward(self, sequences: list[list[int]]) -> list[list[float]]:
        """Last-token logits of right-padded sequences (the classifier head on each sequence's last hidden state)."""
        lengths = torch.tensor([len(s) for s in sequences])
        input_ids = torch.full((len(sequences), int(lengths.max())), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention_mask[row, : len(seq)] = 1
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = hidden[torch.arange(len(sequences)), lengths - 1]
        return self.model.score(last).float().tolist()

    async def classify(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one vLLM ``/classify`` request body (raises :class:`ClassifyRequestError` on bad input)."""
        if not isinstance(request, dict):
            raise ClassifyRequestError("request body must be a JSON object")
        for key in set(request) - KNOWN_REQUEST_KEYS - self._warned:
            self._warned.add(key)
            logger.warning("hf reward server: /classify field %r is not supported and is ignored", key)
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ClassifyRequestError("'input' must be a non-empty string or list of strings")
        activate = bool(request.get("use_activation", request.get("activation", True)))
        add_special = bool(request.get("add_special_tokens", True))
        encoded = [self.tokenizer(t, add_special_tokens=add_special)["input_ids"] for t in texts]
        rows = await asyncio.gather(*(self.score_ids(ids) for ids in encoded))
        data = []
        for index, logits in enumerate(rows):
            probs = torch.tensor(logits)
            if activate:
                probs = torch.sigmoid(probs) if self.num_labels == 1 else torch.softmax(probs, -1)
            label = int(torch.tensor(logits).argmax())
            data.append(
                {
                    "index": index,
                    "label": self.id2label.get(label, str(label)),
                    "probs": probs.tolist(),
                    "num_classes": self.num_labels,
                }
            )
        tokens = sum(len(ids) for ids in encoded)
        return {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": request.get("model") or self.served_model,
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        }

    # ---------------------------------------------------------------------------------------------------- HTTP
    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/classify")
        async def classify(request: Request):
            try:
                body = await request.json()
            except ValueError as exc:
                return JSONResponse(status_code=400, content={"error": f"invalid JSON: {exc}"})
            try:
                return await self.classify(body)
            except ClassifyRequestError as exc:
                return JSONResponse(status_code=400, content={"error": str(exc)})

        @app.get("/health")
        async def health():
            return {"status": "ok"}

        return app

    async def start(self) -> str:
        """Start the HTTP server on a free port of this node; return its ``host:port`` (idempotent)."""
        if self.address is not None:
            return self.address
        import ray
        import uvicorn

        host = ray.util.get_node_ip_address().strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))  # the kernel picks the port: no race with other servers on the node
        port = sock.getsockname()[1]
        self._http = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", lifespan="off"))
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:  # the listening socket now belongs to the server: it closes it on exit
            if self._http_task.done():
                sock.close()
                await self._http_task  # re-raises the start-up error
                raise RuntimeError("hf reward server: HTTP server stopped during start-up")
            await asyncio.sleep(0.01)
        self.address = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        logger.info(
            "hf reward server %d: %s serving /classify on %s", self.replica_rank, self.served_model, self.address
        )
        return self.address

    async def shutdown(self) -> None:
        """Stop the HTTP server and close its socket (the actor's death does the same)."""
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        self._http, self._http_task, self.address = None, None, None

    async def _nothing(self, *args, **kwargs) -> None:
        return None

    async def generate(self, *args, **kwargs):
        raise NotImplementedError("hf reward server scores over HTTP /classify; it does not generate")

    # Lifecycle hooks verl calls on every server (RewardModelManager wakes/sleeps it around each scoring).
    wake_up = sleep = abort_all_requests = resume_generation = clear_kv_cache = _nothing
    release_kv_cache = resume_kv_cache = start_profile = stop_profile = _nothing
