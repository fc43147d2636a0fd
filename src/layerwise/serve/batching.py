"""Micro-batching: concurrent requests share one forward pass.

A model on a CPU answers 32 rows in one call much faster than 32 calls of one row (each call pays
the per-layer overhead once). `MicroBatcher` puts every request's rows on an asyncio queue; one
worker task takes the first waiting request, gathers more until `max_batch` rows are waiting or
`max_wait_ms` has passed since it took the first, runs the model once on all of them (in a
thread, so the server keeps reading requests meanwhile) and hands each request its own rows of
the output. A request of more than `max_batch` rows runs as one batch of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import torch
from torch import Tensor


class MicroBatcher:
    """Gather concurrent `submit` calls into batches of at most `max_batch` rows.

    Args:
        forward: model inputs (N, ...) -> outputs (N, ...); called in a worker thread, one call
            at a time.
        max_batch: the most rows one forward call takes (requests are never split).
        max_wait_ms: how long the first request of a batch waits for company.
    """

    def __init__(
        self, forward: Callable[[Tensor], Tensor], max_batch: int = 32, max_wait_ms: float = 5.0
    ) -> None:
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.batches = 0  # forward calls made (for /metadata and tests)
        self.rows = 0
        self._queue: asyncio.Queue[tuple[Tensor, asyncio.Future[Tensor]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._held: tuple[Tensor, asyncio.Future[Tensor]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._held = None
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, x: Tensor) -> Tensor:
        """The model's outputs for the rows `x`, computed in a batch with other requests."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # an app run without its lifespan, or in another loop
            await self.start()
        future: asyncio.Future[Tensor] = loop.create_future()
        await self._queue.put((x, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self._held = self._held or await self._queue.get(), None
            waiting = [first]
            rows = len(waiting[0][0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                if rows + len(item[0]) > self.max_batch:
                    self._held = item  # too big for this batch: the first of the next one
                    break
                waiting.append(item)
                rows += len(item[0])
            await self._answer(waiting)

    async def _answer(self, waiting: list[tuple[Tensor, asyncio.Future[Tensor]]]) -> None:
        inputs = [x for x, _ in waiting]
        try:
            outputs = await asyncio.to_thread(self._forward, torch.cat(inputs))
        except Exception as exc:  # every waiting request hears of it, the worker goes on
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for x, future in waiting:
            if not future.done():  # a client that went away has its future cancelled
                future.set_result(outputs[start : start + len(x)])
            start += len(x)

    def _forward(self, x: Tensor) -> Tensor:
        self.batches += 1
        self.rows += len(x)
        with torch.no_grad():
            return self.forward(x)
