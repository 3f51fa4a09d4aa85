"""Micro-batching: concurrent requests -> one call of a batch function.

`GET /recommend` requests that arrive while a batch is being computed queue up and become the
next batch, so under load one store round trip, one FAISS search and one ONNX call serve many
requests (adaptive batching, as Triton's dynamic batcher does without a fixed delay); an idle
server answers a lone request at once. `max_wait_s` can add a small delay to gather more.
Where a batch runs is the `executor`: "thread" runs it in a worker thread (FAISS and
onnxruntime release the GIL) and lets `max_in_flight` batches run at once, so that one batch's
store I/O overlaps another's compute; "inline" calls it on the event loop, which blocks the loop
for the batch's duration but saves the hand-off to and from the thread (a queue put, a
condition notify and a future callback per batch), the right trade when each worker process
has a core of its own. Requests that arrive meanwhile wait in the socket buffers and become
the next batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

__all__ = ["Executor", "MicroBatcher"]

Executor = Literal["thread", "inline"]

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Queue of (item, future); a worker task cuts batches and runs `fn` per `executor`.

    `fn(items)` returns one result per item, in order; if it raises, every request of the
    batch gets that exception (the batch function validates nothing that is per request).
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_size: int = 32,
        max_wait_s: float = 0.0,
        max_in_flight: int = 2,
        on_batch: Callable[[int], None] | None = None,
        executor: Executor = "thread",
    ) -> None:
        if executor not in ("thread", "inline"):
            raise ValueError(f"executor must be 'thread' or 'inline', not {executor!r}")
        self.fn = fn
        self.executor = executor
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: T) -> R:
        """The result of `fn` for this item, computed in some batch."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    async def aclose(self) -> None:
        """Stop cutting batches; let the batches already running finish."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("server is shutting down"))

    async def _loop(self) -> None:
        while True:
            # Take a slot first: while all slots are busy the queue grows into the next batch.
            await self._slots.acquire()
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                batch.append(await self._queue.get())
                await self._fill(batch)
            except asyncio.CancelledError:
                # aclose() while waiting: give the slot back (or a restarted batcher has one
                # slot fewer, and none after max_in_flight restarts) and fail what was taken.
                self._slots.release()
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(RuntimeError("server is shutting down"))
                raise
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _fill(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        while len(batch) < self.max_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if self.max_wait_s <= 0 or len(batch) >= self.max_size:
            return
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_size:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                return

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            # Requests whose client went away are dropped before computing.
            live = [(item, fut) for item, fut in batch if not fut.done()]
            if not live:
                return
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                items = [item for item, _ in live]
                if self.executor == "inline":
                    results = self.fn(items)
                else:
                    results = await asyncio.to_thread(self.fn, items)
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
        finally:
            self._slots.release()
