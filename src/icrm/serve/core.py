"""``icrm serve``: a reward model behind HTTP, where online RL asks for rewards.

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

Dynamic batching: OpenRLHF sends one conversation per request, from many
rollout workers at once, so scoring requests one by one would run the model
on batches of one. Every request's sequences go into one queue; a single
worker takes up to ``max_batch_size`` of them, waiting at most
``max_wait_ms`` after the first for the batch to fill, and runs the model on
them (sorted by length) in a worker thread, so the event loop keeps accepting
requests meanwhile. The default wait is 0: what arrived while the model was
busy forms the next batch, so batches grow with the load and an idle server
adds no delay. (On a CPU the default batch size is 1: see
:func:`default_batch_size`.) When more are waiting than fit, the oldest goes with the ones
closest to it in length (:func:`pick_batch`): padding costs as much as real
tokens. Sequences longer than ``max_length`` are refused, so one forward pass
holds at most ``max_batch_size`` x ``max_length`` tokens.
Tokenizing runs in a second single thread: fast tokenizers must not be called
from two threads at once, and a large request should not stall the loop.

Bad input gets a 4xx answer ``{"error": "..."}`` naming the field and item:
400 for a body that is not JSON, 413 for a body over ``max_body_size`` bytes
(refused before it is read whole), too many texts or an over-long one, 422
for a missing field or a wrong type. Nothing a client sends makes the server
answer with a traceback or stop serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..data import (
    DataError,
    Message,
    Sequence,
    as_messages,
    encode,
    encode_steps,
    response_text,
    token_texts,
    without_open_turn,
)
from ..errors import UserError
from ..modeling import RewardModel, resolve_max_length

DEFAULT_MAX_LENGTH = 2048  # OpenRLHF's serve_rm default (--data.max_len), for a model without position limit
DEFAULT_MAX_BODY_SIZE = 8 * 2**20  # bytes: room for thousands of long conversations per request
LATENCY_WINDOW = 10_000  # requests kept for the latency percentiles
logger = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Batching and limits; ``None`` picks the default for the model's device (see :func:`create_app`)."""

    max_batch_size: int | None = None
    max_wait_ms: float = 0.0
    max_length: int | None = None
    max_items: int = 1024
    normalize: bool = False
    packing: bool | None = None  # padding-free batches (icrm.packing); None: where they cost nothing extra
    max_body_size: int | None = None  # bytes per request body; None: DEFAULT_MAX_BODY_SIZE

    def validate(self) -> None:
        """Fail before the model is loaded, with the option's name in the message."""
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise UserError(f"--max-batch-size must be at least 1, got {self.max_batch_size}")
        if not 0 <= self.max_wait_ms <= 60_000:
            raise UserError(f"--max-wait-ms must be between 0 and 60000, got {self.max_wait_ms}")
        if self.max_length is not None and self.max_length < 8:
            raise UserError(f"--max-length must be at least 8, got {self.max_length}")
        if self.max_items < 1:
            raise UserError(f"--max-items must be at least 1, got {self.max_items}")
        if self.max_body_size is not None and self.max_body_size < 1:
            raise UserError(f"--max-body-size must be at least 1 byte, got {self.max_body_size}")


class RequestError(Exception):
    """A client's mistake, answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ------------------------------------------------------------------- metrics


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of sorted ``values``."""
    if not values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[rank - 1]


class Metrics:
    """Counts since start: requests, errors, items, batches and their sizes, recent latencies."""

    def __init__(self):
        self.started = time.monotonic()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()
        self.items = 0
        self.batch_sizes: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record_request(self, endpoint: str, items: int, seconds: float) -> None:
        self.requests[endpoint] += 1
        self.items += items
        self.latencies.append(seconds)

    def snapshot(self, queue_depth: int) -> dict[str, Any]:
        batches = sum(self.batch_sizes.values())
        batched = sum(size * count for size, count in self.batch_sizes.items())
        latencies = sorted(self.latencies)
        ms = {f"p{q}": round(percentile(latencies, q) * 1000, 3) for q in (50, 90, 99)} if latencies else {}
        if latencies:
            ms["mean"] = round(sum(latencies) / len(latencies) * 1000, 3)
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": dict(self.requests),
            "errors": {str(status): count for status, count in sorted(self.errors.items())},
            "items": self.items,
            "batches": batches,
            "batch_size": {
                "mean": batched / batches if batches else 0.0,
                "max": max(self.batch_sizes, default=0),
                "histogram": {str(size): self.batch_sizes[size] for size in sorted(self.batch_sizes)},
            },
            "latency_ms": {**ms, "requests": len(latencies)},
            "queue_depth": queue_depth,
        }


# --------------------------------------------------------------- the batcher


def pick_batch(lengths: list[int], size: int) -> list[int]:
    """Indices of the next batch among waiting sequences (``lengths`` in arrival order).

    The oldest always goes (nothing waits forever); the rest are the ones
    closest to it in length, earlier first on ties, so a busy server pads
    little: a forward pass costs the batch's longest row times its rows.
    """
    others = sorted(range(1, len(lengths)), key=lambda i: (abs(lengths[i] - lengths[0]), i))
    return [0, *sorted(others[: size - 1])]


class DynamicBatcher:
    """One queue of sequences from every request, one worker scoring them in batches.

    :meth:`score` returns each sequence's prefix rewards from its ``start``
    to its end (the last one is the outcome reward), whichever batch it went
    in. The worker starts on first use, inside the running event loop.
    """

    def __init__(self, rm: RewardModel, max_batch_size: int, max_wait_ms: float, metrics: Metrics):
        self.rm = rm
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.metrics = metrics
        self.queue: asyncio.Queue | None = None
        self.waiting: list[tuple[Sequence, asyncio.Future]] = []  # arrived, not yet batched, oldest first
        self.worker: asyncio.Task | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="icrm-model")

    @property
    def depth(self) -> int:
        return len(self.waiting) + (self.queue.qsize() if self.queue is not None else 0)

    async def score(self, seqs: list[Sequence]) -> list[torch.Tensor]:
        if self.worker is None:
            self.queue = asyncio.Queue()
            self.worker = asyncio.get_running_loop().create_task(self._run())
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in seqs]
        for pair in zip(seqs, futures):
            self.queue.put_nowait(pair)
        return list(await asyncio.gather(*futures))

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _next_batch(self) -> list[tuple[Sequence, asyncio.Future]]:
        """Wait for work, take what has arrived (waiting up to ``max_wait`` to fill a batch), pick a batch."""
        loop = asyncio.get_running_loop()
        if not self.waiting:
            self.waiting.append(await self.queue.get())
        deadline = loop.time() + self.max_wait
        while True:
            while not self.queue.empty():
                self.waiting.append(self.queue.get_nowait())
            remaining = deadline - loop.time()
            if len(self.waiting) >= self.max_batch_size or remaining <= 0:
                break
            try:
                self.waiting.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        self.waiting = [item for item in self.waiting if not item[1].done()]  # clients that left
        chosen = pick_batch([seq.length for seq, _ in self.waiting], self.max_batch_size) if self.waiting else []
        batch = [self.waiting[i] for i in chosen]
        taken = set(chosen)
        self.waiting = [item for i, item in enumerate(self.waiting) if i not in taken]
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue  # every waiting client has gone
            self.metrics.batch_sizes[len(batch)] += 1
            seqs = [seq for seq, _ in batch]
            try:
                rewards = await loop.run_in_executor(self.pool, self.rm.sequence_rewards, seqs, self.max_batch_size)
            except Exception as err:  # noqa: BLE001 -- the clients get the error, the worker goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (seq, future), reward in zip(batch, rewards):
                if not future.done():
                    future.set_result(reward[seq.start :])


# ---------------------------------------------------------- reading requests

_JSON_TYPES = {str: "string", bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


async def _read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length over the limit is refused before any of the body
    is read; a body without one (chunked) is read as it streams in and refused
    once it passes the limit, so no request makes the server hold more than
    ``limit`` bytes plus one chunk, whatever the client sends.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body: {declared} bytes, more than this server's limit of {limit} bytes (--max-body-size)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body: more than this server's limit of {limit} bytes (--max-body-size)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_object(request, max_body_size: int) -> dict:
    raw = await _read_body(request, max_body_size)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"invalid JSON body ({err})") from err
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object, got {_json_type(body)}")
    return body


def _list_field(body: dict, name: str, max_items: int) -> list:
    if name not in body:
        raise RequestError(422, f"{name}: missing field")
    value = body[name]
    if not isinstance(value, list):
        raise RequestError(422, f"{name}: expected an array, got {_json_type(value)}")
    if len(value) > max_items:
        raise RequestError(413, f"{name}: {len(value)} items, more than this server's limit of {max_items} (--max-items)")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(422, f"{name}: expected true or false, got {_json_type(value)}")
    return value


def _check_length(seq: Sequence, where: str, max_length: int) -> Sequence:
    if seq.length > max_length:
        raise RequestError(413, f"{where}: {seq.length} tokens, more than this server's limit of {max_length} (--max-length)")
    return seq


def text_sequences(tokenizer, texts: list, max_length: int) -> list[Sequence]:
    """``/get_reward`` texts as sequences scored at their last token (``start`` = last index)."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"query[{i}]: expected a string, got {_json_type(text)}")
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    seqs = []
    for i, row in enumerate(ids):
        if not row:
            raise RequestError(422, f"query[{i}]: empty text")
        seqs.append(_check_length(Sequence(list(row), len(row) - 1), f"query[{i}]", max_length))
    return seqs


@dataclass
class ScoreItem:
    """One ``/score`` pair, tokenized (``seq.step_ends`` set under ``per_step``)."""

    prompt: list[Message]
    response: str
    seq: Sequence


def score_items(
    tokenizer, prompts: list, responses: list, separator: str, max_length: int, per_step: bool = False
) -> list[ScoreItem]:
    """Validate and tokenize ``/score`` pairs exactly as ``icrm score`` renders them.

    ``per_step``: every response must be a list of steps, whose sequences get
    their ``step_ends`` from :func:`~icrm.data.encode_steps`, as ``icrm score
    --per-step`` does.
    """
    if len(prompts) != len(responses):
        raise RequestError(422, f"responses: {len(prompts)} prompts but {len(responses)} responses")
    items = []
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        try:
            messages = without_open_turn(as_messages(prompt, "body", None, f"prompts[{i}]"))
            steps = None
            if isinstance(response, list) and response and all(isinstance(s, str) for s in response):
                steps = response
                empty = next((k for k, s in enumerate(steps) if not s.strip()), None)
                if empty is not None:
                    raise RequestError(422, f"responses[{i}][{empty}]: empty step")
                response = separator.join(steps)
            elif per_step:
                raise RequestError(422, f"responses[{i}]: per_step needs the response as a list of step strings")
            text = response_text(response, "body", None, f"responses[{i}]")
            seq = encode_steps(tokenizer, messages, steps, separator) if per_step else encode(tokenizer, messages, text)
        except DataError as err:
            raise RequestError(422, str(err)) from err
        except ValueError as err:  # a chat template that renders the prompt, or the response text, differently
            raise RequestError(422, f"prompts[{i}]: {err}") from err
        items.append(ScoreItem(messages, text, _check_length(seq, f"responses[{i}]", max_length)))
    return items


# --------------------------------------------------------------------- the app


def default_batch_size(rm: RewardModel) -> int:
    """16 on an accelerator; 1 on a CPU, where batched forward passes measured slower per
    conversation than single ones unless the lengths are equal (BENCHMARKS.md §6)."""
    return 16 if next(rm.parameters()).device.type != "cpu" else 1


def create_app(rm: RewardModel, config: ServeConfig, model_name: str = ""):
    """The Starlette app serving ``rm`` (use it in-process, or run it with uvicorn).

    ``max_length=None`` allows the model's position limit, as ``icrm score``
    does (:func:`icrm.scoring.resolve_max_length`), or 2048 tokens for a model
    without one; ``max_batch_size=None`` is :func:`default_batch_size`;
    ``max_body_size=None`` is ``DEFAULT_MAX_BODY_SIZE``.
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    config.validate()
    if config.normalize and not rm.reward_stats:
        raise UserError(f"{model_name or 'the model'}: --normalize needs reward statistics, which only icrm checkpoints store")
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
                payload, items = await handler(await _json_object(request, max_body_size))
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
        queries = _list_field(body, "query", config.max_items)
        seqs = await in_tokenizer_thread(text_sequences, tokenizer, queries, max_length)
        rewards = scale([float(r[-1]) for r in await batcher.score(seqs)])
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}, len(queries)

    async def score(body: dict):
        prompts = _list_field(body, "prompts", config.max_items)
        responses = _list_field(body, "responses", config.max_items)
        per_token, per_step = _flag(body, "per_token"), _flag(body, "per_step")
        separator = body.get("step_separator", "\n")
        if not isinstance(separator, str):
            raise RequestError(422, f"step_separator: expected a string, got {_json_type(separator)}")
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


# ------------------------------------------------------------------ the server


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (bound here, so a busy port is a clean error and port 0 works).

    Created with ``proto=IPPROTO_TCP``, as asyncio's own servers are: asyncio
    sets TCP_NODELAY on accepted connections only then, and without it every
    keep-alive response waits about 40 ms for a delayed ACK.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             proto=socket.IPPROTO_TCP)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        return sock
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err})") from err


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    config: ServeConfig | None = None,
    *,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Load ``model`` and serve it until SIGINT/SIGTERM (then finish what is in flight, return).

    ``port=0`` takes any free port; ``on_ready`` gets the URL once the socket
    listens. The model runs on the GPU when there is one.
    """
    import uvicorn

    from ..evaluation import load_reward_model

    config = config or ServeConfig()
    config.validate()
    rm = load_reward_model(model, trust_remote_code, allow_pickle)
    if torch.cuda.is_available():
        rm.to("cuda")
    app = create_app(rm, config, model)
    sock = _listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn restores these after its own graceful shutdown and re-raises the signal
        # into them: a stop by signal then ends here, normally, instead of killing the process.
        def stop(signum, frame):
            server.should_exit = True

        handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        if on_ready is not None:
            on_ready(f"http://{url_host}:{bound_port}")
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
