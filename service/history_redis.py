"""Redis history backend (`redis://`, `rediss://`, `unix://`, `redis+cluster://`).

A list per user, an idempotency key per event id, one stream as the log; see the key formats
below. Durability is Redis's own: run it with `appendonly yes`. The log stream is trimmed to
about `log_max_len` entries (XADD MAXLEN ~), so export it more often than that. The protocol
and the URL table are `service.history`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.cluster
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.errors import StoreUnavailableError
from service.history import (
    DEFAULT_LOG_MAX_LEN,
    NEGATIVES_MAX,
    Erasure,
    Event,
    ItemRecords,
    LogEntry,
    dedupe,
)

__all__ = [
    "EVENT_KEY",
    "HIST_KEY",
    "ITEM_HIDDEN_KEY",
    "ITEM_TEXT_KEY",
    "LOG_EVENT_KEY",
    "LOG_KEY",
    "NEG_KEY",
    "READY_KEY",
    "RedisHistoryStore",
]

# Redis key formats. `{user_id}` is a hash tag: every key of one user lives on one Cluster slot.
# The log is one stream, so on a Cluster it lives on the slot of "relrec:log" (one node): fine
# for the write rate of interactions; shard it by a tag suffix if that node becomes the limit.
HIST_KEY = "relrec:{{{user_id}}}:hist"  # list of item ids, newest first, LTRIM to max_len
NEG_KEY = "relrec:{{{user_id}}}:neg"  # negative feedback: item ids, LTRIM to NEGATIVES_MAX
EVENT_KEY = "relrec:{{{user_id}}}:ev:{event_id}"  # idempotency marker, SET NX EX ttl
LOG_KEY = "relrec:log"  # stream: XADD MAXLEN ~ log_max_len * user item ts w eid
# On a Cluster only: the log's own idempotency marker, on the log's slot ("{relrec:log}" hashes
# like "relrec:log"); the user's length prefix keeps (user, event) pairs apart.
LOG_EVENT_KEY = "{{relrec:log}}:ev:{n}:{user_id}:{event_id}"
READY_KEY = "{relrec:log}:ready"  # readiness write probe (SET EX), on the log's node
# PUT/DELETE /items (issue 20), on one slot so that one MULTI updates both: item id -> text of
# the items placed at run time (hash), and the hidden item ids (set).
ITEM_TEXT_KEY = "{relrec:items}:text"
ITEM_HIDDEN_KEY = "{relrec:items}:hidden"

# One batch (or, on a Cluster, one slot's part of it) in one script. Redis runs a script whole:
# when it is out of memory the first write (a marker SET) is refused and nothing is written,
# and once a script has written, the rest of its writes are allowed. So markers, history and
# log never disagree, and a retry after a failed write is stored exactly once.
# KEYS: the keys the records point at (1-based; 0: none). ARGV: idempotency TTL, history max
# length, log max length, negatives max length, then per event: marker, history (the negatives
# list for a negative) and log key indexes, user, item, ts, weight, the event id prefixed with
# "#" ("" when there is none), and "n" for a negative ("" for a positive).
_APPEND_LUA = """
local ttl, keep, log_len, keep_neg = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local new, touched = {}, {}
for a = 5, #ARGV, 9 do
  local mark, hist, log = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local fresh = mark == 0 or redis.call('SET', KEYS[mark], 1, 'NX', 'EX', ttl)
  if fresh then
    if log > 0 then
      local f = {'user', ARGV[a + 3], 'item', ARGV[a + 4], 'ts', ARGV[a + 5], 'w', ARGV[a + 6]}
      if ARGV[a + 7] ~= '' then
        f[#f + 1], f[#f + 2] = 'eid', string.sub(ARGV[a + 7], 2)
      end
      if ARGV[a + 8] ~= '' then
        f[#f + 1], f[#f + 2] = 't', 'negative'
      end
      redis.call('XADD', KEYS[log], 'MAXLEN', '~', log_len, '*', unpack(f))
    end
    if hist > 0 then
      redis.call('LPUSH', KEYS[hist], ARGV[a + 4])
      touched[hist] = ARGV[a + 8] == '' and keep or keep_neg
    end
  end
  new[#new + 1] = fresh and 1 or 0
end
for hist, n in pairs(touched) do
  redis.call('LTRIM', KEYS[hist], 0, n - 1)
end
return new
"""


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
        order, dup = dedupe(events)
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

        args: list[Any] = [self.ttl, self.max_len, self.log_max_len, NEGATIVES_MAX]
        for i in idx:
            e = events[i]
            mark = 0
            if e.event_id is not None:
                mark = slot(marker.format(n=len(e.user_id), user_id=e.user_id, event_id=e.event_id))
            negative = e.type == "negative"
            key = NEG_KEY if negative else HIST_KEY
            h = slot(key.format(user_id=e.user_id)) if hist else 0
            eid = "" if e.event_id is None else "#" + e.event_id
            args += [mark, h, 1 if log else 0, e.user_id, e.item_id, e.timestamp, e.weight, eid]
            args.append("n" if negative else "")
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

    def feedback_many(
        self, user_ids: Sequence[str], n: int
    ) -> tuple[list[list[str]], list[list[str]]]:
        n = min(n, self.max_len)
        if not user_ids:
            return [], []
        try:
            pipe = self.client.pipeline(transaction=False)
            for u in user_ids:
                pipe.lrange(HIST_KEY.format(user_id=u), 0, n - 1)
                pipe.lrange(NEG_KEY.format(user_id=u), 0, NEGATIVES_MAX - 1)
            replies = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history read failed: {exc}") from exc
        positives = [list(r) for r in replies[0::2]] if n > 0 else [[] for _ in user_ids]
        return positives, [list(r) for r in replies[1::2]]

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        start = f"({after}" if after else "-"
        try:
            rows = self.client.xrange(LOG_KEY, min=start, max="+", count=count)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis log read failed: {exc}") from exc
        return [
            LogEntry(
                cursor,
                Event(
                    f["user"],
                    f["item"],
                    int(f["ts"]),
                    float(f["w"]),
                    f.get("eid"),
                    "negative" if f.get("t") == "negative" else "positive",
                ),
            )
            for cursor, f in rows
        ]

    def erase(self, user_id: str) -> Erasure:
        """Delete the user's history list and event markers (one slot: the user's hash tag),
        their markers on the log's slot (Cluster), and their entries of the log stream, found
        by a scan of the stream (erasure is rare; the stream is bounded by log_max_len)."""
        try:
            hist = HIST_KEY.format(user_id=user_id)
            history = int(self.client.llen(hist))
            self.client.delete(NEG_KEY.format(user_id=user_id))
            markers = self._keys(EVENT_KEY.format(user_id=user_id, event_id=""))
            if self._cluster:
                n = len(user_id)
                markers += self._keys(LOG_EVENT_KEY.format(n=n, user_id=user_id, event_id=""))
            self.client.delete(hist)
            for key in markers:  # one key per call: a Cluster refuses a multi-slot DEL
                self.client.delete(key)
            log = self._erase_log(user_id)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history erase failed: {exc}") from exc
        return Erasure(history=history, log=log, markers=len(markers))

    def _keys(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (glob characters of a user id escaped)."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        return list(self.client.scan_iter(match=pattern, count=1000))

    def _erase_log(self, user_id: str, page: int = 10_000) -> int:
        removed, start = 0, "-"
        while rows := self.client.xrange(LOG_KEY, min=start, max="+", count=page):
            mine = [cursor for cursor, f in rows if f.get("user") == user_id]
            if mine:
                removed += int(self.client.xdel(LOG_KEY, *mine))
            start = "(" + rows[-1][0]
        return removed

    def put_item(self, item_id: str, text: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(ITEM_TEXT_KEY, item_id, text)
            pipe.srem(ITEM_HIDDEN_KEY, item_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis item write failed: {exc}") from exc

    def hide_item(self, item_id: str) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(ITEM_HIDDEN_KEY, item_id)
            pipe.hdel(ITEM_TEXT_KEY, item_id)
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis item write failed: {exc}") from exc

    def unhide_item(self, item_id: str) -> None:
        try:
            self.client.srem(ITEM_HIDDEN_KEY, item_id)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis item write failed: {exc}") from exc

    def item_records(self) -> ItemRecords:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(ITEM_TEXT_KEY)
            pipe.smembers(ITEM_HIDDEN_KEY)
            texts, hidden = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis item read failed: {exc}") from exc
        return ItemRecords({k: texts[k] for k in sorted(texts)}, frozenset(hidden))

    def ping(self) -> None:
        """Up and taking writes: a full Redis (maxmemory, noeviction) answers PING but
        refuses every write, so readiness probes with one small write."""
        try:
            self.client.set(READY_KEY, 1, ex=60)
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"redis history unavailable: {exc}") from exc

    def close(self) -> None:
        self.client.close()
