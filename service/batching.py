"""Micro-batching: concurrent requests -> one call of a batch function.

`GET /recommend` requests that arrive while a batch is being computed queue up and become the
next batch, so under load one store round trip, one FAISS search and one ONNX call serve many
requests (adaptive batching, as Triton's dynamic batcher does without a fixed delay); an idle
server answers a lone request at once. `max_wait_s` can add a small delay to gather more.
Where a batch runs is the `executor`: "thread" runs it in a thread of asyncio's default pool
(`asyncio.to_thread`, FAISS and onnxruntime release the GIL) and lets `max_in_flight` batches
run at once, so that one batch's store I/O overlaps another's compute; "worker" hands it to
one long-lived thread of the batcher's own, fed by a `queue.SimpleQueue` and answering with
one `call_soon_threadsafe` per batch (no pool, no `concurrent.futures` future, no context
copy: the cheapest hand-off off the loop; batches run one after another); "inline" calls it on
the event loop, which blocks the loop for the batch's duration but saves any hand-off, the
right trade when each worker process has a core of its own. Requests that arrive meanwhile
wait in the socket buffers and become the next batch. docs/benchmarks.md measures the three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, Literal, TypeVar

log = logging.getLogger(__name__)

__all__ = ["EXECUTORS", "Executor", "MicroBatcher"]

Executor = Literal["thread", "worker", "inline"]
EXECUTORS: tuple[Executor, ...] = ("thread", "worker", "inline")

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
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
        self.fn = fn
        self.executor = executor
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._thread: _BatchThread | None = None

    def start(self) -> None:
        if self._worker is None:
            loop = asyncio.get_running_loop()
            if self.executor == "worker" and self._thread is None:
                self._thread = _BatchThread(loop)
            self._worker = loop.create_task(self._loop())

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
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
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
                elif self._thread is not None:
                    results = await self._thread.run(self.fn, items)
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


class _BatchThread:
    """One daemon thread running `fn(items)` calls in order from a `SimpleQueue`; each result
    (or exception) goes back to the loop's future by one `call_soon_threadsafe`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], asyncio.Future[object]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="relrec-batch", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[Sequence[T]], Sequence[R]], items: list[T]) -> asyncio.Future:
        """A future of `fn(items)`, computed on the thread."""
        fut: asyncio.Future[object] = self._loop.create_future()
        self._jobs.put((lambda: fn(items), fut))
        return fut

    def stop(self) -> None:
        """Let the queued calls finish, then end the thread (it holds no other resource)."""
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, fut = job
            try:
                result = call()
            except Exception as exc:  # noqa: BLE001 - handed to the waiting batch
                self._loop.call_soon_threadsafe(_settle, fut, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle, fut, result, None)


def _settle(fut: asyncio.Future[object], result: object, exc: BaseException | None) -> None:
    if fut.done():  # the batch's task was cancelled meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)
