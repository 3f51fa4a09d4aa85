"""Micro-batching: concurrent requests share batches, and batching never changes an answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.batching import Executor, MicroBatcher
from service.settings import Settings
from tests.service.conftest import make_settings, running

EXECUTORS = pytest.mark.parametrize("executor", ["thread", "worker", "inline"])


@EXECUTORS
def test_concurrent_submits_are_batched_and_answered_in_order(executor: Executor) -> None:
    sizes: list[int] = []

    def double(items: Sequence[int]) -> list[int]:
        time.sleep(0.01)  # long enough for the others to queue up
        return [2 * x for x in items]

    async def main() -> list[int]:
        b: MicroBatcher[int, int] = MicroBatcher(
            double, max_size=8, max_in_flight=1, on_batch=sizes.append, executor=executor
        )
        b.start()
        try:
            return list(await asyncio.gather(*(b.submit(i) for i in range(50))))
        finally:
            await b.aclose()

    assert asyncio.run(main()) == [2 * i for i in range(50)]
    assert max(sizes) == 8 and sum(sizes) == 50 and len(sizes) < 50


@EXECUTORS
def test_a_failing_batch_fails_each_of_its_requests(executor: Executor) -> None:
    def fail(items: Sequence[int]) -> list[int]:
        raise ValueError("store down")

    async def main() -> list[object]:
        b: MicroBatcher[int, int] = MicroBatcher(fail, executor=executor)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(i) for i in range(5)), return_exceptions=True)
        finally:
            await b.aclose()

    results = asyncio.run(main())
    assert len(results) == 5 and all(isinstance(r, ValueError) for r in results)


@EXECUTORS
def test_the_executor_decides_which_thread_runs_the_batch(executor: Executor) -> None:
    """inline: on the event loop's own thread; thread: in a worker thread."""
    threads: list[int] = []

    def fn(items: Sequence[int]) -> list[int]:
        threads.append(threading.get_ident())
        return list(items)

    async def main() -> int:
        b: MicroBatcher[int, int] = MicroBatcher(fn, executor=executor)
        b.start()
        try:
            return await b.submit(7)
        finally:
            await b.aclose()

    assert asyncio.run(main()) == 7
    assert (threads == [threading.get_ident()]) == (executor == "inline")


@EXECUTORS
def test_a_request_cancelled_while_its_batch_gathers_is_skipped(executor: Executor) -> None:
    """No timing: the batch is cut when the third item fills it (the wait is 60 s)."""
    seen: list[list[int]] = []

    def fn(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        return [10 * x for x in items]

    async def main() -> tuple[int, int]:
        b: MicroBatcher[int, int] = MicroBatcher(fn, max_size=3, max_wait_s=60.0, executor=executor)
        b.start()
        doomed = asyncio.create_task(b.submit(1))
        kept = asyncio.create_task(b.submit(2))
        for _ in range(3):
            await asyncio.sleep(0)  # both queued, the batcher gathering
        doomed.cancel()
        last = await b.submit(3)
        result = await kept
        await b.aclose()
        assert doomed.cancelled()
        return result, last

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (20, 30)
    assert seen == [[2, 3]]


@EXECUTORS
def test_requests_still_queued_at_shutdown_fail_and_none_hangs(executor: Executor) -> None:
    async def main() -> list[object]:
        b: MicroBatcher[int, int] = MicroBatcher(
            lambda xs: list(xs), max_size=4, max_wait_s=60.0, executor=executor
        )
        b.start()
        waiting = [asyncio.create_task(b.submit(i)) for i in range(2)]
        for _ in range(3):
            await asyncio.sleep(0)  # taken into a batch that is still gathering
        await b.aclose()
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(main(), 30))
    assert all(isinstance(r, RuntimeError) and "shutting down" in str(r) for r in results)


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(ValueError, match="executor"):
        MicroBatcher[int, int](lambda xs: list(xs), executor="process")  # type: ignore[arg-type]


def test_cancelled_requests_are_skipped_and_others_answered() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def fn(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        gate.wait(2)
        return list(items)

    async def main() -> int:
        b: MicroBatcher[int, int] = MicroBatcher(fn, max_in_flight=1)
        b.start()
        first = asyncio.create_task(b.submit(0))  # occupies the only slot
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(b.submit(1))
        kept = asyncio.create_task(b.submit(2))
        await asyncio.sleep(0.05)
        doomed.cancel()
        gate.set()
        await first
        result = await kept
        await b.aclose()
        return result

    assert asyncio.run(main()) == 2
    assert [2] in seen and all(1 not in s for s in seen)


@EXECUTORS
def test_a_batcher_restarted_many_times_still_answers(executor: Executor) -> None:
    """Found by the schemathesis run (its pytest plugin restarts the app's lifespan per test):
    each stop used to keep one in-flight slot, so after `max_in_flight` restarts none was left
    and every request waited forever."""

    async def main() -> list[int]:
        b: MicroBatcher[int, int] = MicroBatcher(
            lambda xs: [x + 1 for x in xs], max_in_flight=2, executor=executor
        )
        for _ in range(5):
            b.start()
            assert await b.submit(0) == 1
            await asyncio.sleep(0.01)  # idle: the worker waits for the next request
            await b.aclose()
        b.start()
        try:
            return list(await asyncio.gather(*(b.submit(i) for i in range(4))))
        finally:
            await b.aclose()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [1, 2, 3, 4]


def test_submit_before_start_is_an_error() -> None:
    async def main() -> None:
        await MicroBatcher[int, int](lambda xs: list(xs)).submit(1)

    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(main())


@EXECUTORS
def test_batched_answers_equal_one_at_a_time_answers(
    tiny_artifact_dir: Path, sqlite_url: str, executor: Executor
) -> None:
    users = [f"u{i}-c{i % 4}" for i in range(0, 120, 3)] + ["nobody"]
    batched = make_settings(
        tiny_artifact_dir,
        sqlite_url,
        batch_max_size=64,
        batch_max_wait_ms=5.0,
        batch_executor=executor,
    )
    single = make_settings(tiny_artifact_dir, sqlite_url, batch_max_size=1)

    async def ask(settings_: Settings) -> tuple[list[dict[str, Any]], int]:
        app = create_app(settings_)
        async with running(app) as c:
            rs = await asyncio.gather(
                *(c.get(f"/recommend/{u}", params={"k": 7, "explain": 1}) for u in users)
            )
            metrics = (await c.get("/metrics")).text
        n_batches = int(float(metrics.split("relrec_batch_size_count ")[1].split()[0]))
        return [r.json() for r in rs], n_batches

    one_by_one, n_single = asyncio.run(ask(single))
    together, n_batched = asyncio.run(ask(batched))
    assert n_single == len(users) and n_batched < len(users) / 2
    for a, b in zip(one_by_one, together, strict=True):
        assert [i["item_id"] for i in a["items"]] == [i["item_id"] for i in b["items"]]
        for x, y in zip(a["items"], b["items"], strict=True):
            assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6)
