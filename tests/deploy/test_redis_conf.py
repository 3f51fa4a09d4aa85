"""deploy/redis.conf on a real redis-server: password, AOF with its fsync policy, noeviction.

The same file docker-compose.yml mounts and the Kubernetes ConfigMap is generated from; only
port, bind and dir are overridden here.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from service.errors import StoreUnavailableError
from service.history import Event, open_history_store
from tests.deploy.conftest import RedisStarter, conf_value


def url(port: int, password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


def test_password_is_required_and_works(start_redis: RedisStarter) -> None:
    _, port = start_redis()
    anonymous = redis.Redis.from_url(url(port))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    anonymous.close()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url(port, "wrong-password")).ping()
    client = redis.Redis.from_url(url(port, conf_value("requirepass")))
    assert client.ping()
    client.close()


def test_persistence_and_memory_policy(start_redis: RedisStarter) -> None:
    _, port = start_redis()
    client = redis.Redis.from_url(url(port, conf_value("requirepass")), decode_responses=True)
    config = client.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "everysec"  # the fsync policy docs/deploy.md states
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) == 512 * 1024 * 1024
    assert config["save"] == ""
    client.close()


def test_history_survives_a_crash_of_redis(start_redis: RedisStarter, tmp_path: Path) -> None:
    """Acknowledged writes reach the AOF before the reply: a SIGKILL loses none of them."""
    proc, port = start_redis("crash")
    history = url(port, conf_value("requirepass"))
    store = open_history_store(history, max_len=10)
    store.append([Event("u", f"i{t}", t, 1.0, f"e{t}") for t in range(5)])
    store.close()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert any((tmp_path / "crash" / conf_value("appenddirname")).iterdir())
    start_redis("crash", port)  # same dir: replays the AOF
    store = open_history_store(history, max_len=10)
    assert store.recent("u", 10) == [f"i{t}" for t in reversed(range(5))]
    assert len(store.read_log(None, 100)) == 5
    store.close()


def test_a_full_redis_refuses_writes_instead_of_evicting(start_redis: RedisStarter) -> None:
    """noeviction: past maxmemory a write fails (the API answers 503), no history is dropped."""
    _, port = start_redis()
    history = url(port, conf_value("requirepass"))
    store = open_history_store(history, max_len=1000)
    store.append([Event("keep", "x", 0)])
    client = redis.Redis.from_url(history)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 256 * 1024)  # lower the file's 512mb, as if full
    with pytest.raises(StoreUnavailableError, match="maxmemory"):
        for batch in range(1000):
            store.append([Event(f"u{batch}", "y" * 100, t) for t in range(100)])
    assert store.recent("keep", 10) == ["x"]
    client.close()
    store.close()
