"""The history suite against a real 3-node Redis Cluster (`redis+cluster://`), on loopback.

Three `redis-server deploy/redis.conf --cluster-enabled yes` processes, joined by
`redis-cli --cluster create`; every test of tests/service/test_history.py that takes the `store`
fixture runs here again, on a store opened with the cluster URL. Plus what only a cluster shows:
one user's keys share a slot (the hash tag), and users spread over the nodes.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis
import redis.cluster

from service.history import Event, HistoryStore, open_history_store
from service.history_redis import EVENT_KEY, HIST_KEY
from tests.deploy.conftest import RedisServers
from tests.redis_process import free_port
from tests.service import test_history as suite

# Re-run the shared suite here: every test of it that works on the `store` fixture.
for _name, _test in vars(suite).items():
    if _name.startswith("test_") and "store" in inspect.signature(_test).parameters:
        globals()[_name] = _test

N_NODES = 3
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def _wait_cluster_ok(ports: list[int], password: str, timeout_s: float = 20.0) -> None:
    clients = [redis.Redis(port=p, password=password, decode_responses=True) for p in ports]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            states = [c.cluster("info").get("cluster_state") for c in clients]
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"cluster_state never became ok on every node: {states}")
            time.sleep(0.1)
    finally:
        for c in clients:
            c.close()


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One 3-primary cluster for the module (client and cluster-bus ports both picked free)."""
    if not shutil.which(REDIS_CLI):
        pytest.skip("redis-cli not found (the redis-tools package)")
    servers = RedisServers(tmp_path_factory.mktemp("cluster"))
    password = servers.password
    try:
        ports = [servers.start(f"node{i}", None, "--cluster-enabled", "yes",
                               "--cluster-port", str(free_port()),
                               "--cluster-config-file", f"nodes-{i}.conf",
                               "--cluster-node-timeout", "2000",
                               "--masterauth", password)[1]
                 for i in range(N_NODES)]
        subprocess.run(
            [REDIS_CLI, "-a", password, "--no-auth-warning", "--cluster", "create",
             *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        _wait_cluster_ok(ports, password)
        yield f"redis+cluster://:{password}@127.0.0.1:{ports[0]}"
    finally:
        servers.stop_all()


@pytest.fixture
def store(cluster_url: str) -> Iterator[HistoryStore]:
    """The suite's fixture on the cluster, emptied first; max_len and TTL as in
    tests/service/conftest.py."""
    s = open_history_store(cluster_url, max_len=5, idempotency_ttl_s=60)
    s.client.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.close()


def test_store_is_a_cluster_client(store: HistoryStore) -> None:
    assert isinstance(getattr(store, "client", None), redis.cluster.RedisCluster)
    assert len(store.client.get_primaries()) == N_NODES  # type: ignore[attr-defined]


def test_user_keys_share_a_slot_and_users_spread(store: HistoryStore) -> None:
    users = [f"user-{i}" for i in range(60)] + ["{a}", "a}b"]
    store.append([Event(u, "item", 0, 1.0, "e1") for u in users])
    client: redis.cluster.RedisCluster = store.client  # type: ignore[attr-defined]
    nodes = set()
    for u in users:
        hist = HIST_KEY.format(user_id=u)
        slot = client.keyslot(hist)
        assert client.keyslot(EVENT_KEY.format(user_id=u, event_id="e1")) == slot
        nodes.add(client.nodes_manager.get_node_from_slot(slot).name)
        assert client.lrange(hist, 0, -1) == ["item"]
    assert len(nodes) == N_NODES


def test_a_batch_refused_on_one_node_is_completed_by_its_retry(store: HistoryStore) -> None:
    """No script spans the log's slot and a user's slot, so a full node fails one part of a
    batch; the retry (same event ids) completes it: exactly once in the log and the history."""
    from collections import Counter

    from service.errors import StoreUnavailableError
    from service.history_redis import LOG_KEY

    client: redis.cluster.RedisCluster = store.client  # type: ignore[attr-defined]
    def node_of(key: str) -> object:
        return client.nodes_manager.get_node_from_slot(client.keyslot(key))

    log_node = node_of(LOG_KEY)
    user = next(u for u in (f"user-{i}" for i in range(100))
                if node_of(HIST_KEY.format(user_id=u)) != log_node)
    user_node = node_of(HIST_KEY.format(user_id=user))
    for full in (user_node, log_node):  # the user's part fails, then the log's part
        events = [Event(user, f"{full.port}-{t}", t, 1.0, f"{full.port}-{t}") for t in range(2)]
        client.config_set("maxmemory", 1, target_nodes=full)
        try:
            with pytest.raises(StoreUnavailableError, match="maxmemory"):
                store.append(events)
        finally:
            client.config_set("maxmemory", 0, target_nodes=full)
        assert store.append(events) == [True] * 2
        assert store.append(events) == [False] * 2
    logged = Counter((f["user"], f["item"]) for _, f in client.xrange(LOG_KEY))
    assert set(logged.values()) == {1} and len(logged) == 4  # history max_len is 5
    assert sorted(client.lrange(HIST_KEY.format(user_id=user), 0, -1)) == sorted(
        item for _, item in logged
    )
