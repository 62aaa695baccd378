"""The reward server's app: a reward model behind HTTP, where online RL asks for rewards.

Endpoints (JSON in, JSON out):

* ``POST /get_reward`` -- OpenRLHF's remote-RM protocol (``--reward.remote_url
  http://HOST:PORT/get_reward``). Request ``{"query": [text, ...]}`` (its
  ``prompts`` and ``labels`` are accepted and ignored); each text is a whole
  conversation as the chat template renders it, special tokens included.
  Response ``{"rewards": [...], "scores": [...], "extra_logs": {}}``. A text is
  tokenized as it is (``add_special_tokens=False``) and read at its last
  token, the rule :meth:`RewardModel.score` uses, so the reward of a rendered
  conversation equals ``icrm score`` of the same prompt and response.
* ``POST /score`` -- ``{"prompts": [...], "responses": [...]}`` with prompts
  as strings or chat messages and responses as strings, one assistant message,
  or a list of steps (joined by ``step_separator``, default ``"\\n"``).
  ``"per_token": true`` adds the response tokens and the reward of every
  prefix (dense rewards); ``"per_step": true`` adds each step's score, read
  where :meth:`RewardModel.step_rewards` and ``icrm score --per-step`` read it
  (the last step's at the outcome position, so it equals the reward).
* ``GET /health`` and ``GET /metrics`` (request, batch-size and latency counts).

Every scoring request goes through one :class:`~icrm.serve.batching.DynamicBatcher`.
Sequences longer than ``max_length`` are refused, so one forward pass holds
at most ``max_batch_size`` x ``max_length`` tokens. Tokenizing runs in a
second single thread: fast tokenizers must not be called from two threads at
once, and a large request should not stall the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from ..data import token_texts
from ..modeling import RewardModel, resolve_max_length
from ..settings import SettingError
from .batching import DynamicBatcher
from .config import DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_LENGTH, ServeConfig
from .metrics import Metrics
from .requests import RequestError, bool_field, json_object, list_field, score_items, string_field, text_sequences

logger = logging.getLogger(__name__)


def default_batch_size(rm: RewardModel) -> int:
    """16 on an accelerator; 1 on a CPU, where batched forward passes are slower per conversation
    than single ones unless the lengths are equal (BENCHMARKS.md)."""
    return 16 if next(rm.parameters()).device.type != "cpu" else 1


def create_app(rm: RewardModel, config: ServeConfig, model_name: str = ""):
    """The Starlette app serving ``rm`` (use it in-process, or run it with uvicorn).

    ``max_length=None`` allows the model's position limit, as ``icrm score``
    does (:func:`icrm.modeling.resolve_max_length`), or 2048 tokens for a model
    without one; ``max_batch_size=None`` is :func:`default_batch_size`;
    ``max_body_size=None`` is ``DEFAULT_MAX_BODY_SIZE``.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    config.validate()
    if config.normalize and not rm.reward_stats:
        raise SettingError(
            config, "normalize", f"{model_name or 'the model'}: {{field}} needs reward statistics, which only icrm checkpoints store"
        )
    max_length = resolve_max_length(rm, config.max_length) or DEFAULT_MAX_LENGTH
    rm.eval().use_padding_free(config.packing)
    tokenizer = rm.tokenizer
    metrics = Metrics()
    max_batch_size = config.max_batch_size or default_batch_size(rm)
    max_body_size = config.max_body_size or DEFAULT_MAX_BODY_SIZE
    batcher = DynamicBatcher(rm, max_batch_size, config.max_wait_ms, metrics)
    tokenize_pool = ThreadPoolExecutor(1, thread_name_prefix="icrm-tokenize")

    def scale(values: list[float]) -> list[float]:
        if not config.normalize:
            return values
        mean, std = rm.reward_stats["mean"], rm.reward_stats["std"]
        return [(v - mean) / std for v in values]

    async def in_tokenizer_thread(fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(tokenize_pool, fn, *args)

    def endpoint(name: str, handler: Callable):
        """Time a scoring handler and turn its errors into JSON answers."""

        async def run(request):
            started = time.perf_counter()
            try:
                payload, items = await handler(await json_object(request, max_body_size))
            except RequestError as err:
                metrics.errors[err.status] += 1
                return JSONResponse({"error": err.message}, status_code=err.status)
            except Exception as err:  # answer, log, keep serving
                logger.exception("%s failed", name)
                metrics.errors[500] += 1
                return JSONResponse({"error": f"internal error ({err.__class__.__name__}: {err})"}, status_code=500)
            metrics.record_request(name, items, time.perf_counter() - started)
            return JSONResponse(payload)

        return run

    async def get_reward(body: dict):
        queries = list_field(body, "query", config.max_items)
        seqs = await in_tokenizer_thread(text_sequences, tokenizer, queries, max_length)
        rewards = scale([float(r[-1]) for r in await batcher.score(seqs)])
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}, len(queries)

    async def score(body: dict):
        prompts = list_field(body, "prompts", config.max_items)
        responses = list_field(body, "responses", config.max_items)
        per_token, per_step = bool_field(body, "per_token"), bool_field(body, "per_step")
        separator = string_field(body, "step_separator", "\n")
        items = await in_tokenizer_thread(score_items, tokenizer, prompts, responses, separator, max_length, per_step)
        token_rewards = [scale(r.tolist()) for r in await batcher.score([item.seq for item in items])]
        payload: dict[str, Any] = {"rewards": [r[-1] for r in token_rewards]}
        if per_token:
            payload["tokens"] = await in_tokenizer_thread(
                lambda: [token_texts(tokenizer, it.prompt, it.response, it.seq, 0) for it in items]
            )
            payload["token_rewards"] = token_rewards
        if per_step:
            payload["step_rewards"] = [[r[end - it.seq.start] for end in it.seq.step_ends] for r, it in zip(token_rewards, items)]
        return payload, len(items)

    async def health(request):
        return JSONResponse({
            "status": "ok",
            "model": model_name,
            "max_batch_size": max_batch_size,
            "max_wait_ms": config.max_wait_ms,
            "max_length": max_length,
            "max_items": config.max_items,
            "max_body_size": max_body_size,
            "normalize": config.normalize,
        })

    async def metrics_view(request):
        return JSONResponse(metrics.snapshot(batcher.depth))

    async def http_error(request, exc: HTTPException):
        metrics.errors[exc.status_code] += 1
        return JSONResponse({"error": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.stop()
        tokenize_pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=[
            Route("/get_reward", endpoint("get_reward", get_reward), methods=["POST"]),
            Route("/score", endpoint("score", score), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_view, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.batcher = batcher
    return app
