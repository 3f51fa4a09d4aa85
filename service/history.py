"""History store: the online half of a user's history and the durable interaction log.

`POST /interactions` appends here; `GET /recommend` reads the newest items back (before the
artifact's training history); `relrec export-interactions` reads the log for the next training
run. One `HistoryStore` protocol, two backends (gorse `storage/cache/database.go`):

- `SqliteHistoryStore` (`sqlite:///path`): embedded, durable (WAL, synchronous=FULL), the
  default so that `relrec serve` runs anywhere. One table `events` is both the log and the
  history: `recent()` reads the newest rows of a user (the trim to `max_len` is the LIMIT).
- `RedisHistoryStore` (`redis://`, `rediss://`, `unix://`, `redis+cluster://`): see the key
  formats below. Durability is Redis's own: run it with `appendonly yes`.

History order is arrival order (a batch is applied oldest timestamp first), newest first on
read. Event ids make retries idempotent; they are unique *per user* in both backends (a retry
always names the same user, and it keeps a Redis Cluster write on the user's slot).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
import redis.cluster

from service.errors import StoreUnavailableError

__all__ = [
    "Event",
    "HistoryStore",
    "LogEntry",
    "RedisHistoryStore",
    "SqliteHistoryStore",
    "open_history_store",
]

# Redis key formats. `{user_id}` is a hash tag: every key of one user lives on one Cluster slot.
# The log is one stream, so on a Cluster it lives on the slot of "relrec:log" (one node): fine
# for the write rate of interactions; shard it by a tag suffix if that node becomes the limit.
HIST_KEY = "relrec:{{{user_id}}}:hist"  # list of item ids, newest first, LTRIM to max_len
EVENT_KEY = "relrec:{{{user_id}}}:ev:{event_id}"  # idempotency marker, SET NX EX ttl
LOG_KEY = "relrec:log"  # stream: XADD * user item ts w eid


@dataclass(frozen=True)
class Event:
    """One interaction as stored: external ids, epoch seconds, weight, optional event id."""

    user_id: str
    item_id: str
    timestamp: int
    weight: float = 1.0
    event_id: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """One record of the durable log; `cursor` orders entries and resumes `read_log`."""

    cursor: str
    event: Event


class HistoryStore(Protocol):
    """What the service needs from a history backend. Errors: `StoreUnavailableError`."""

    def append(self, events: Sequence[Event]) -> list[bool]:
        """Store events; per event, True if new, False if its (user, event_id) was seen."""
        ...

    def recent(self, user_id: str, n: int) -> list[str]:
        """The user's newest item ids, newest first, at most n."""
        ...

    def recent_many(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        """`recent` for many users in one round trip."""
        ...

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        """Up to `count` log entries strictly after cursor `after` (None: from the start)."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailableError when the store cannot serve."""
        ...

    def close(self) -> None: ...


def _dedupe(events: Sequence[Event]) -> tuple[list[int], list[bool]]:
    """Order of application (oldest timestamp first, stable) and in-batch duplicate flags."""
    order = sorted(range(len(events)), key=lambda i: events[i].timestamp)
    seen: set[tuple[str, str]] = set()
    dup = [False] * len(events)
    for i in order:
        e = events[i]
        if e.event_id is not None:
            key = (e.user_id, e.event_id)
            dup[i] = key in seen
            seen.add(key)
    return order, dup


class SqliteHistoryStore:
    """SQLite file; one connection per thread (WAL lets readers run beside the one writer)."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS events ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,"
        " ts INTEGER NOT NULL, weight REAL NOT NULL, event_id TEXT,"
        " UNIQUE (user_id, event_id))",
        "CREATE INDEX IF NOT EXISTS events_user_seq ON events (user_id, seq)",
    )

    def __init__(self, path: Path, max_len: int) -> None:
        self.path = path
        self.max_len = max_len
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        with conn:
            for stmt in self._SCHEMA:
                conn.execute(stmt)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=10.0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise StoreUnavailableError(
                    f"cannot open sqlite history {self.path}: {exc}"
                ) from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def append(self, events: Sequence[Event]) -> list[bool]:
        order, dup = _dedupe(events)
        new = [False] * len(events)
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i in order:
                if dup[i]:
                    continue
                e = events[i]
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events (user_id, item_id, ts, weight, event_id)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (e.user_id, e.item_id, e.timestamp, e.weight, e.event_id),
                )
                new[i] = cur.rowcount == 1
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreUnavailableError(f"sqlite history write failed: {exc}") from exc
        return new

    def recent(self, user_id: str, n: int) -> list[str]:
        n = min(n, self.max_len)
        try:
            rows = (
                self._conn()
                .execute(
                    "SELECT item_id FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                    (user_id, n),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite history read failed: {exc}") from exc
        return [r[0] for r in rows]

    def recent_many(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        # One indexed range scan per user on one connection: no network, so no round trips
        # to save, and simpler than a window query.
        return [self.recent(u, n) for u in user_ids]

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        start = int(after) if after else 0
        try:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, user_id, item_id, ts, weight, event_id FROM events"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (start, count),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite log read failed: {exc}") from exc
        return [LogEntry(str(r[0]), Event(r[1], r[2], int(r[3]), float(r[4]), r[5])) for r in rows]

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite history unavailable: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class RedisHistoryStore:
    """Redis: a list per user, an idempotency key per event id, one stream as the log.

    Writes are pipelined (no MULTI, so that a Cluster can split them by slot): one round trip
    claims the event ids (SET NX EX), a second pushes the new items and appends the log. If the
    second fails, the claims are released so that the client's retry is not taken for a
    duplicate; a crash between the two can still lose that retry (documented trade-off).
    """

    def __init__(self, client: Any, max_len: int, idempotency_ttl_s: int) -> None:
        self.client = client
        self.max_len = max_len
        self.ttl = idempotency_ttl_s

    @classmethod
    def from_url(cls, url: str, max_len: int, idempotency_ttl_s: int) -> RedisHistoryStore:
        opts: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
        }
        if url.startswith("redis+cluster://"):
            client: Any = redis.cluster.RedisCluster.from_url(
                "redis://" + url.removeprefix("redis+cluster://"), **opts
            )
        else:
            client = redis.Redis.from_url(url, health_check_interval=30, **opts)
        return cls(client, max_len, idempotency_ttl_s)

    def append(self, events: Sequence[Event]) -> list[bool]:
        order, dup = _dedupe(events)
        try:
            claimed = self._claim(events, order, dup)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history write failed: {exc}") from exc
        new = [not dup[i] and claimed.get(i, True) for i in range(len(events))]
        try:
            self._push(events, [i for i in order if new[i]])
        except redis.RedisError as exc:
            self._release(events, [i for i in claimed if claimed[i]])
            raise StoreUnavailableError(f"redis history write failed: {exc}") from exc
        return new

    def _claim(self, events: Sequence[Event], order: list[int], dup: list[bool]) -> dict[int, bool]:
        idx = [i for i in order if not dup[i] and events[i].event_id is not None]
        if not idx:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for i in idx:
            e = events[i]
            pipe.set(
                EVENT_KEY.format(user_id=e.user_id, event_id=e.event_id), 1, nx=True, ex=self.ttl
            )
        return {i: bool(ok) for i, ok in zip(idx, pipe.execute(), strict=True)}

    def _push(self, events: Sequence[Event], idx: list[int]) -> None:
        if not idx:
            return
        by_user: dict[str, list[str]] = {}
        pipe = self.client.pipeline(transaction=False)
        for i in idx:
            e = events[i]
            by_user.setdefault(e.user_id, []).append(e.item_id)
            fields: dict[Any, Any] = {
                "user": e.user_id,
                "item": e.item_id,
                "ts": e.timestamp,
                "w": e.weight,
            }
            if e.event_id is not None:
                fields["eid"] = e.event_id
            pipe.xadd(LOG_KEY, fields)
        for user_id, items in by_user.items():
            key = HIST_KEY.format(user_id=user_id)
            pipe.lpush(key, *items)  # LPUSH a b c leaves c (the newest) at the head
            pipe.ltrim(key, 0, self.max_len - 1)
        pipe.execute()

    def _release(self, events: Sequence[Event], idx: list[int]) -> None:
        try:
            keys = [
                EVENT_KEY.format(user_id=events[i].user_id, event_id=events[i].event_id)
                for i in idx
            ]
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            pipe.execute()
        except redis.RedisError:
            pass  # best effort: the original error is what the caller must see

    def recent(self, user_id: str, n: int) -> list[str]:
        return self.recent_many([user_id], n)[0]

    def recent_many(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        n = min(n, self.max_len)
        if not user_ids or n <= 0:
            return [[] for _ in user_ids]
        try:
            pipe = self.client.pipeline(transaction=False)
            for u in user_ids:
                pipe.lrange(HIST_KEY.format(user_id=u), 0, n - 1)
            return [list(r) for r in pipe.execute()]
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history read failed: {exc}") from exc

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        try:
            rows = self.client.xrange(LOG_KEY, min=start, max="+", count=count)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis log read failed: {exc}") from exc
        return [
            LogEntry(cursor, Event(f["user"], f["item"], int(f["ts"]), float(f["w"]), f.get("eid")))
            for cursor, f in rows
        ]

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history unavailable: {exc}") from exc

    def close(self) -> None:
        self.client.close()


def open_history_store(
    url: str, max_len: int, idempotency_ttl_s: int = 7 * 24 * 3600
) -> HistoryStore:
    """The store named by `url`: `sqlite:///rel/path`, `sqlite:////abs/path` or a Redis URL.

    Opening never blocks on the network: Redis connects on first use, and `ping()` is how
    readiness finds out whether it is up.
    """
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path or path.startswith(":memory:"):
            raise ValueError(
                "sqlite history needs a file path (sqlite:///path/to/history.db);"
                " an in-memory database is not durable"
            )
        return SqliteHistoryStore(Path(path), max_len)
    if url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        return RedisHistoryStore.from_url(url, max_len, idempotency_ttl_s)
    raise ValueError(
        f"unsupported history URL scheme {url.split(':', 1)[0]!r}: use "
        "sqlite:///path or redis://host:port/db"
    )
