"""Overload: past RELREC_MAX_IN_FLIGHT the API answers 503 `overloaded` with Retry-After at
once, never 500, and keeps serving what it admitted; probes are never refused.

A real uvicorn process over a real Redis. Capacity is held for certain by freezing Redis
(SIGSTOP) under the admitted requests, so that the refusals are seen to come back while the
admitted requests are still waiting; then a free-running flood.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import assert_error

pytestmark = pytest.mark.timeout(90)

MAX_IN_FLIGHT = 4


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("relrec_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("relrec_requests_in_flight is not exported")


def _check_answer(r: httpx.Response) -> None:
    if r.status_code != 200:
        assert_error(r, 503, "overloaded")
        assert r.headers["retry-after"] == "1"


def test_over_capacity_is_refused_at_once_and_admitted_requests_are_served(
    deploy_redis: Any, start_api: Any, tiny_artifact_dir: Path
) -> None:
    redis_proc, port = deploy_redis.start("r")
    api = start_api(
        ready="/readyz",
        artifact_dir=tiny_artifact_dir,
        history_url=f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0",
        max_in_flight=MAX_IN_FLIGHT,
    )

    def get(i: int) -> httpx.Response:
        return httpx.get(f"{api.url}/recommend/u{i}-c{i % 4}", timeout=60)

    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(32) as pool:
        redis_proc.send_signal(signal.SIGSTOP)
        try:
            admitted = [pool.submit(get, i) for i in range(MAX_IN_FLIGHT)]
            while _in_flight(api.url) < MAX_IN_FLIGHT:
                assert time.monotonic() < deadline, "the admitted requests never were in flight"
                time.sleep(0.02)
            refused = list(pool.map(get, range(40)))  # all back while capacity is held
            assert not any(f.done() for f in admitted)
            post = httpx.post(f"{api.url}/interactions", json={"user_id": "u", "item_id": "x"})
            assert httpx.get(f"{api.url}/healthz", timeout=5).status_code == 200
        finally:
            redis_proc.send_signal(signal.SIGCONT)
        assert [f.result().status_code for f in admitted] == [200] * MAX_IN_FLIGHT
        for r in [*refused, post]:
            assert_error(r, 503, "overloaded")
            assert r.headers["retry-after"] == "1"

        flood = list(pool.map(get, range(160)))  # 32 clients, free running
    for r in flood:
        _check_answer(r)
    statuses = [r.status_code for r in flood]
    assert statuses.count(200) > 0, "nothing was served under overload"
    assert httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200
