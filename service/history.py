"""History store: the online half of a user's history and the durable interaction log.

`POST /interactions` appends here; `GET /recommend` reads the newest items back (before the
artifact's training history); `relrec export-interactions` reads the log for the next training
run. One `HistoryStore` protocol, two backends (gorse `storage/cache/database.go`):

- `SqliteHistoryStore` (`sqlite:///path`): embedded, durable (WAL, synchronous=FULL), the
  default so that `relrec serve` runs anywhere. One table `events` is both the log and the
  history: `recent()` reads the newest rows of a user (the trim to `max_len` is the LIMIT).
- `RedisHistoryStore` (`redis://`, `rediss://`, `unix://`, `redis+cluster://`): see the key
  formats below. Durability is Redis's own: run it with `appendonly yes`. The log stream is
  trimmed to about `log_max_len` entries (XADD MAXLEN ~), so export it more often than that.

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
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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
LOG_KEY = "relrec:log"  # stream: XADD MAXLEN ~ log_max_len * user item ts w eid
# On a Cluster only: the log's own idempotency marker, on the log's slot ("{relrec:log}" hashes
# like "relrec:log"); the user's length prefix keeps (user, event) pairs apart.
LOG_EVENT_KEY = "{{relrec:log}}:ev:{n}:{user_id}:{event_id}"
READY_KEY = "{relrec:log}:ready"  # readiness write probe (SET EX), on the log's node
DEFAULT_LOG_MAX_LEN = 2_000_000

# One batch (or, on a Cluster, one slot's part of it) in one script. Redis runs a script whole:
# when it is out of memory the first write (a marker SET) is refused and nothing is written,
# and once a script has written, the rest of its writes are allowed. So markers, history and
# log never disagree, and a retry after a failed write is stored exactly once.
# KEYS: the keys the records point at (1-based; 0: none). ARGV: idempotency TTL, history max
# length, log max length, then per event: marker, history and log key indexes, user, item, ts,
# weight, and the event id prefixed with "#" ("" when there is none).
_APPEND_LUA = """
local ttl, keep, log_len = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local new, touched = {}, {}
for a = 4, #ARGV, 8 do
  local mark, hist, log = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local fresh = mark == 0 or redis.call('SET', KEYS[mark], 1, 'NX', 'EX', ttl)
  if fresh then
    if log > 0 then
      local f = {'user', ARGV[a + 3], 'item', ARGV[a + 4], 'ts', ARGV[a + 5], 'w', ARGV[a + 6]}
      if ARGV[a + 7] ~= '' then
        f[9], f[10] = 'eid', string.sub(ARGV[a + 7], 2)
      end
      redis.call('XADD', KEYS[log], 'MAXLEN', '~', log_len, '*', unpack(f))
    end
    if hist > 0 then
      redis.call('LPUSH', KEYS[hist], ARGV[a + 4])
      touched[hist] = true
    end
  end
  new[#new + 1] = fresh and 1 or 0
end
for hist in pairs(touched) do
  redis.call('LTRIM', KEYS[hist], 0, keep - 1)
end
return new
"""


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

    A batch is written by one Lua script (`_APPEND_LUA`), so it is stored whole or not at all,
    also when Redis refuses writes at `maxmemory`. A Cluster cannot run one script over the
    log's slot and the users' slots, so there the log part and each user's part are separate
    scripts, each atomic and idempotent on its own markers (the log's live on the log's slot):
    a failed batch may be stored in part, and its retry (same event ids) completes it, storing
    every event exactly once in both the log and the history.
    """

    def __init__(
        self,
        client: Any,
        max_len: int,
        idempotency_ttl_s: int,
        log_max_len: int = DEFAULT_LOG_MAX_LEN,
    ) -> None:
        self.client = client
        self.max_len = max_len
        self.ttl = idempotency_ttl_s
        self.log_max_len = log_max_len
        self._cluster = isinstance(client, redis.cluster.RedisCluster)
        self._append = client.register_script(_APPEND_LUA)

    @classmethod
    def from_url(
        cls,
        url: str,
        max_len: int,
        idempotency_ttl_s: int,
        log_max_len: int = DEFAULT_LOG_MAX_LEN,
    ) -> RedisHistoryStore:
        opts: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": 5.0,
            "socket_connect_timeout": 5.0,
            # One quick reconnect (a restarted Redis), then fail fast: redis-py's default of
            # 10 retries would hold a request for seconds before its 503 during an outage.
            "retry": Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        }
        if url.startswith("redis+cluster://"):
            client: Any = redis.cluster.RedisCluster.from_url(
                "redis://" + url.removeprefix("redis+cluster://"), **opts
            )
        else:
            client = redis.Redis.from_url(url, health_check_interval=30, **opts)
        return cls(client, max_len, idempotency_ttl_s, log_max_len)

    def append(self, events: Sequence[Event]) -> list[bool]:
        order, dup = _dedupe(events)
        todo = [i for i in order if not dup[i]]
        new = [False] * len(events)
        if not todo:
            return new
        try:
            if self._cluster:
                fresh = self._append_cluster(events, todo)
            else:
                fresh = self._run(events, todo, log=True, marker=EVENT_KEY)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history write failed: {exc}") from exc
        for i, ok in zip(todo, fresh, strict=True):
            new[i] = ok
        return new

    def _append_cluster(self, events: Sequence[Event], todo: list[int]) -> list[bool]:
        """The log's part, then each user's part: every script stays on one slot."""
        logged = self._run(events, todo, log=True, marker=LOG_EVENT_KEY, hist=False)
        by_user: dict[str, list[int]] = {}
        for i in todo:
            by_user.setdefault(events[i].user_id, []).append(i)
        stored: dict[int, bool] = {}
        for idx in by_user.values():
            part = self._run(events, idx, log=False, marker=EVENT_KEY)
            stored.update(zip(idx, part, strict=True))
        # New if either part was new: a retry that only completes the history is not a duplicate.
        return [ok or stored[i] for i, ok in zip(todo, logged, strict=True)]

    def _run(
        self, events: Sequence[Event], idx: list[int], *, log: bool, marker: str, hist: bool = True
    ) -> list[bool]:
        """Run `_APPEND_LUA` over events `idx` (in that order); True per event stored now."""
        keys: list[str] = [LOG_KEY] if log else []
        slots: dict[str, int] = {}

        def slot(key: str) -> int:
            if key not in slots:
                keys.append(key)
                slots[key] = len(keys)
            return slots[key]

        args: list[Any] = [self.ttl, self.max_len, self.log_max_len]
        for i in idx:
            e = events[i]
            mark = 0
            if e.event_id is not None:
                mark = slot(marker.format(n=len(e.user_id), user_id=e.user_id, event_id=e.event_id))
            h = slot(HIST_KEY.format(user_id=e.user_id)) if hist else 0
            eid = "" if e.event_id is None else "#" + e.event_id
            args += [mark, h, 1 if log else 0, e.user_id, e.item_id, e.timestamp, e.weight, eid]
        return [bool(x) for x in self._append(keys=keys, args=args)]

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
        """Up and taking writes: a full Redis (maxmemory, noeviction) answers PING but
        refuses every write, so readiness probes with one small write."""
        try:
            self.client.set(READY_KEY, 1, ex=60)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history unavailable: {exc}") from exc

    def close(self) -> None:
        self.client.close()


def open_history_store(
    url: str,
    max_len: int,
    idempotency_ttl_s: int = 7 * 24 * 3600,
    log_max_len: int = DEFAULT_LOG_MAX_LEN,
) -> HistoryStore:
    """The store named by `url`: `sqlite:///rel/path`, `sqlite:////abs/path` or a Redis URL.

    Opening never blocks on the network: Redis connects on first use, and `ping()` is how
    readiness finds out whether it is up. `log_max_len` bounds the Redis log stream (SQLite's
    events table is the history too and is not trimmed).
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
        return RedisHistoryStore.from_url(url, max_len, idempotency_ttl_s, log_max_len)
    raise ValueError(
        f"unsupported history URL scheme {url.split(':', 1)[0]!r}: use "
        "sqlite:///path or redis://host:port/db"
    )
