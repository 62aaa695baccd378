"""Dynamic batching: one queue of sequences from every request, one worker running the model on batches.

OpenRLHF sends one conversation per request, from many rollout workers at
once, so scoring requests one by one would run the model on batches of one.
Every request's sequences go into one queue; a single worker takes up to
``max_batch_size`` of them, waiting at most ``max_wait_ms`` after the first
for the batch to fill, and runs the model on them (sorted by length) in a
worker thread, so the event loop keeps accepting requests meanwhile. With no
wait, what arrived while the model was busy forms the next batch, so batches
grow with the load and an idle server adds no delay. When more are waiting
than fit, the oldest goes with the ones closest to it in length
(:func:`pick_batch`): padding costs as much as real tokens.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import torch

from ..data import Sequence
from ..modeling import RewardModel
from .metrics import Metrics


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
