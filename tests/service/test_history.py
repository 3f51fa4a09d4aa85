"""One history suite, two backends (SQLite file and a real redis-server): same behaviour."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import StoreUnavailableError
from service.history import Event, HistoryStore, open_history_store


def ev(user: str, item: str, ts: int = 0, eid: str | None = None, w: float = 1.0) -> Event:
    return Event(user, item, ts, w, eid)


def test_recent_is_newest_first_and_trimmed(store: HistoryStore) -> None:
    store.append([ev("u", f"i{t}", ts=t) for t in range(8)])
    assert store.recent("u", 10) == ["i7", "i6", "i5", "i4", "i3"]  # max_len = 5
    assert store.recent("u", 2) == ["i7", "i6"]
    assert store.recent("nobody", 3) == []


def test_batch_applied_in_timestamp_order(store: HistoryStore) -> None:
    store.append([ev("u", "late", ts=20), ev("u", "early", ts=10)])
    assert store.recent("u", 5) == ["late", "early"]
    store.append([ev("u", "next", ts=5)])  # arrival order across requests
    assert store.recent("u", 5) == ["next", "late", "early"]


def test_users_are_separate(store: HistoryStore) -> None:
    store.append([ev("a", "x"), ev("b", "y"), ev("a", "z", ts=1)])
    assert store.recent_many(["a", "b", "c"], 5) == [["z", "x"], ["y"], []]
    assert store.recent_many([], 5) == []


def test_ids_with_braces_and_unicode(store: HistoryStore) -> None:
    # "{" "}" would change a Redis hash tag if keys were built carelessly; ids are opaque text.
    users = ["a}b", "{a}", "a", "ü:ser 1"]
    store.append([ev(u, f"it-{u}") for u in users])
    assert store.recent_many(users, 5) == [[f"it-{u}"] for u in users]


def test_event_id_makes_retries_idempotent(store: HistoryStore) -> None:
    assert store.append([ev("u", "x", eid="e1"), ev("u", "y", eid="e2")]) == [True, True]
    assert store.append([ev("u", "x", eid="e1"), ev("u", "z", eid="e3")]) == [False, True]
    assert store.recent("u", 5) == ["z", "y", "x"]
    # the same event id for another user is another event
    assert store.append([ev("v", "x", eid="e1")]) == [True]
    # duplicates inside one batch, and events without ids are never deduplicated
    assert store.append(
        [ev("w", "a", eid="d"), ev("w", "a", eid="d"), ev("w", "b"), ev("w", "b")]
    ) == [True, False, True, True]
    assert store.recent("w", 5) == ["b", "b", "a"]


def test_log_reads_back_everything_in_order(store: HistoryStore) -> None:
    events = [ev("u", f"i{t}", ts=1000 + t, w=float(t), eid=f"e{t}") for t in range(7)]
    store.append(events)
    store.append([ev("u", "i0", ts=1000, eid="e0")])  # duplicate: not logged twice
    store.append([ev("v", "j", ts=5)])
    entries = store.read_log(None, 100)
    assert [e.event for e in entries] == [*events, ev("v", "j", ts=5)]  # log is not trimmed
    # paging with the cursor returns the rest, exactly once
    first = store.read_log(None, 3)
    rest = store.read_log(first[-1].cursor, 100)
    assert [e.event for e in first + rest] == [e.event for e in entries]
    assert store.read_log(entries[-1].cursor, 10) == []


def test_concurrent_appends_lose_nothing(store: HistoryStore) -> None:
    def write(k: int) -> None:
        store.append([ev(f"u{k % 4}", f"i{k}-{j}", ts=j, eid=f"{k}-{j}") for j in range(5)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(40)))
    assert len(store.read_log(None, 1000)) == 200
    assert all(len(store.recent(f"u{u}", 5)) == 5 for u in range(4))


def test_erase_removes_one_users_history_log_and_markers(store: HistoryStore) -> None:
    """Test issue #22: DELETE /users erases what the store holds of one user, on both
    backends; ids with glob characters match only themselves."""
    users = ["a*[x]?", "a", "b"]
    store.append([ev(u, f"{u}-i{t}", ts=t, eid=f"e{t}") for u in users for t in range(3)])
    erased = store.erase("a*[x]?")
    assert (erased.history, erased.log) == (3, 3)
    # SQLite keeps event ids in the rows it deleted (0); Redis has one marker per event (3), a
    # Redis Cluster one more on the log's slot (6).
    assert erased.markers in (0, 3, 6)
    assert store.recent("a*[x]?", 10) == []
    assert store.recent("a", 10) == ["a-i2", "a-i1", "a-i0"]  # the others are untouched
    left = [e.event.user_id for e in store.read_log(None, 100)]
    assert sorted(left) == ["a", "a", "a", "b", "b", "b"]
    # The markers went too: the same event id is a new event again.
    assert store.append([ev("a*[x]?", "again", ts=9, eid="e0")]) == [True]
    second = store.erase("nobody")
    assert (second.history, second.log, second.markers) == (0, 0, 0)


def test_ping(store: HistoryStore) -> None:
    store.ping()


def test_sqlite_is_durable_across_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'h.db'}"
    s = open_history_store(url, max_len=3)
    s.append([ev("u", "x", eid="e")])
    s.close()
    s = open_history_store(url, max_len=3)
    assert s.recent("u", 3) == ["x"]
    assert s.append([ev("u", "x", eid="e")]) == [False]
    s.close()


def test_unreachable_redis_raises_store_unavailable() -> None:
    s = open_history_store("redis://127.0.0.1:1/0", max_len=3)
    with pytest.raises(StoreUnavailableError):
        s.ping()
    with pytest.raises(StoreUnavailableError):
        s.append([ev("u", "x")])
    with pytest.raises(StoreUnavailableError):
        s.recent("u", 3)
    s.close()


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        open_history_store("sqlite:///:memory:", max_len=3)
    with pytest.raises(ValueError, match="unsupported"):
        open_history_store("mysql://x", max_len=3)


def test_redis_log_is_trimmed_to_about_log_max_len(redis_url: str) -> None:
    """Retention: the log stream stays near `log_max_len` (XADD MAXLEN ~), newest kept."""
    import redis

    from service.history_redis import LOG_KEY

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    s = open_history_store(redis_url, max_len=5, log_max_len=1000)
    try:
        for b in range(10):
            s.append([ev(f"u{t % 7}", f"i{b}-{t}", ts=t) for t in range(500)])
        # "~" trims whole stream nodes (100 entries by default): at least 1000, a node more
        assert 1000 <= client.xlen(LOG_KEY) <= 1100
        assert s.read_log(None, 5000)[-1].event == ev("u2", "i9-499", ts=499)  # 499 % 7
    finally:
        s.close()
        client.flushdb()
        client.close()
