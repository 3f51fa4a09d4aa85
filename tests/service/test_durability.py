"""Nothing acknowledged is lost: real processes are killed under concurrent writes.

A real API (uvicorn subprocess) over a real Redis on deploy/redis.conf (AOF, appendfsync
everysec, noeviction; only port, bind and dir overridden), 16 writers posting interactions with
unique event ids and retrying each one, with the same event id, until it is acknowledged. Redis,
or the API, is killed with SIGKILL mid-run and restarted on the same data directory / port.
Afterwards every acknowledged interaction is in the user's history list and in the log stream,
exactly once. Plus the store-level promise behind it: a batch refused at `maxmemory` is stored
whole or not at all, and its retry exactly once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.errors import StoreUnavailableError
from service.history import Event, open_history_store
from service.history_redis import EVENT_KEY, HIST_KEY, LOG_KEY
from service.loader import LoadedArtifact

pytestmark = pytest.mark.timeout(120)

N_WRITERS = 16
N_EVENTS = 20  # per writer, each on a distinct item, so a duplicate shows in the history list


class Writers:
    """16 threads; writer k posts events (user w{k}, item j, event id k-j) one at a time."""

    def __init__(self, url: str, items: list[str]) -> None:
        self.url = url
        self.items = items
        self.acked: list[tuple[int, int]] = []
        self.statuses: Counter[int] = Counter()
        self.transport_errors = 0
        self.bad: list[str] = []  # answers that break the promise (500s, wrong shapes)
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set when the test ends early: writers give up
        self.threads = [
            threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(N_WRITERS)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self, timeout_s: float) -> None:
        for t in self.threads:
            t.join(timeout_s)
            assert not t.is_alive(), "a writer never got its events acknowledged"

    def _run(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            for j in range(N_EVENTS):
                body = {"user_id": f"w{k}", "item_id": self.items[j], "event_id": f"{k}-{j}"}
                while not self._post(client, body):
                    if self.stop.wait(0.05):
                        return
                    # then the same event id again: a retry
                with self.lock:
                    self.acked.append((k, j))
                time.sleep(0.01)

    def _post(self, client: httpx.Client, body: dict[str, str]) -> bool:
        try:
            r = client.post("/interactions", json=body)
        except httpx.TransportError:
            with self.lock:
                self.transport_errors += 1
            return False
        with self.lock:
            self.statuses[r.status_code] += 1
        if r.status_code == 200:
            return True
        if r.status_code == 503:
            payload = r.json()
            if set(payload) != {"error", "request_id"} or "retry-after" not in r.headers:
                self.bad.append(r.text)
            return False
        self.bad.append(f"{r.status_code} {r.text}")
        return False

    def wait_acked(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} acknowledged"
            time.sleep(0.02)


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _check_exactly_once(redis_url: str, items: list[str]) -> None:
    """Every writer's events, once each, in the history list (in order) and in the log."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for k in range(N_WRITERS):
            hist = client.lrange(HIST_KEY.format(user_id=f"w{k}"), 0, -1)
            assert hist == items[:N_EVENTS][::-1], f"writer {k}: {hist}"
        logged = Counter((f["user"], f["eid"]) for _, f in client.xrange(LOG_KEY))
        expected = {(f"w{k}", f"{k}-{j}") for k in range(N_WRITERS) for j in range(N_EVENTS)}
        assert set(logged) == expected
        assert set(logged.values()) == {1}, [e for e, n in logged.items() if n > 1]
    finally:
        client.close()


@pytest.mark.parametrize("victim", ["redis", "api"])
def test_no_acknowledged_interaction_is_lost_or_doubled_when_a_process_is_killed(
    victim: str, deploy_redis: Any, start_api: Any, tiny_artifact_dir: Path, loaded: LoadedArtifact
) -> None:
    proc, port = deploy_redis.start("data")
    redis_url = f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0"
    api = start_api(
        ready="/readyz", artifact_dir=tiny_artifact_dir, history_url=redis_url, history_max_len=100
    )
    items = [str(i) for i in loaded.arrays.item_ids.ids[:N_EVENTS]]
    writers = Writers(api.url, items)
    writers.start()
    try:
        writers.wait_acked(N_WRITERS * N_EVENTS // 3)  # mid-run
        if victim == "redis":
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            before = writers.statuses[503]
            _wait_for(lambda: writers.statuses[503] >= before + N_WRITERS, 30, "no 503s seen")
            outage = httpx.get(api.url + "/readyz", timeout=10)
            assert outage.status_code == 503, outage.text
            assert httpx.get(api.url + "/healthz", timeout=10).status_code == 200
            deploy_redis.start("data", port)  # same dir: replays the AOF
        else:
            api.kill()
            before = writers.transport_errors
            _wait_for(lambda: writers.transport_errors > before, 30, "no refused connection")
            api.start()  # same port, same settings
        writers.join(timeout_s=90)
    finally:
        writers.stop.set()
    assert not writers.bad, writers.bad[:5]
    assert set(writers.statuses) <= {200, 503}, writers.statuses
    assert len(writers.acked) == N_WRITERS * N_EVENTS
    # recovered without a restart of the API (victim redis) or of Redis (victim api)
    assert httpx.get(api.url + "/readyz", timeout=10).status_code == 200
    _check_exactly_once(redis_url, items)


def test_a_batch_refused_at_maxmemory_is_stored_whole_or_not_at_all(deploy_redis: Any) -> None:
    """Test of the XADD-without-LPUSH gap: past maxmemory (noeviction) a batch is refused as a
    whole, never half-logged; its retry with the same event ids is then stored exactly once."""
    _, port = deploy_redis.start("full")
    url = f"redis://:{deploy_redis.password}@127.0.0.1:{port}/0"
    store = open_history_store(url, max_len=1000, idempotency_ttl_s=600)
    client = redis.Redis.from_url(url, decode_responses=True)

    def batch(b: int) -> list[Event]:
        return [Event(f"u{b}", f"item-{t:03d}-" + "x" * 200, t, 1.0, f"e{t}") for t in range(200)]

    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 512 * 1024)
        stored = 0
        with pytest.raises(StoreUnavailableError, match="maxmemory"):
            for b in range(1000):
                assert store.append(batch(b)) == [True] * 200
                stored = b + 1
        failed = batch(stored)
        logged = Counter(f["user"] for _, f in client.xrange(LOG_KEY))
        assert logged == {f"u{b}": 200 for b in range(stored)}  # nothing of the refused batch
        assert client.llen(HIST_KEY.format(user_id=f"u{stored}")) == 0
        assert not client.exists(EVENT_KEY.format(user_id=f"u{stored}", event_id="e0"))
        assert all(client.llen(HIST_KEY.format(user_id=f"u{b}")) == 200 for b in range(stored))

        client.config_set("maxmemory", 0)  # room again: the client's retry
        assert store.append(failed) == [True] * 200
        assert store.append(failed) == [False] * 200
        logged = Counter((f["user"], f["eid"]) for _, f in client.xrange(LOG_KEY))
        assert set(logged.values()) == {1} and len(logged) == 200 * (stored + 1)
        hist = client.lrange(HIST_KEY.format(user_id=f"u{stored}"), 0, -1)
        assert hist == [e.item_id for e in reversed(failed)]
    finally:
        client.close()
        store.close()
