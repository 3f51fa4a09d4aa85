"""History store: the online half of a user's history and the durable interaction log.

`POST /interactions` appends here; `GET /recommend` reads the newest items back (before the
artifact's training history); `relrec export-interactions` reads the log for the next training
run. One `HistoryStore` protocol, and a table of backends by URL prefix (gorse
`storage/cache/database.go`):

- `sqlite:///path` -> `service.history_sqlite.SqliteHistoryStore`: embedded, durable, the
  default so that `relrec serve` runs anywhere.
- `redis://`, `rediss://`, `unix://`, `redis+cluster://` ->
  `service.history_redis.RedisHistoryStore`: durability is Redis's own (`appendonly yes`).

History order is arrival order (a batch is applied oldest timestamp first, `dedupe`), newest
first on read. Event ids make retries idempotent; they are unique *per user* in both backends (a
retry always names the same user, and it keeps a Redis Cluster write on the user's slot).

The table names each backend's class by import path and imports it only when a URL asks for it:
the backends import this module (`Event`, `dedupe`), and `service.settings` reads the table to
validate `history_url` without importing redis.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast

__all__ = [
    "BACKENDS",
    "DEFAULT_LOG_MAX_LEN",
    "Erasure",
    "URL_PREFIXES",
    "NEGATIVES_MAX",
    "Event",
    "Feedback",
    "HistoryStore",
    "ItemRecords",
    "LogEntry",
    "dedupe",
    "open_history_store",
]

DEFAULT_LOG_MAX_LEN = 2_000_000  # entries kept in Redis's log stream (XADD MAXLEN ~)

# URL prefix -> "module:Class" of the backend; each class has `from_url(url, max_len,
# idempotency_ttl_s, log_max_len)`. The order is the order error messages list them in.
BACKENDS: dict[str, str] = {
    "sqlite:///": "service.history_sqlite:SqliteHistoryStore",
    "redis://": "service.history_redis:RedisHistoryStore",
    "rediss://": "service.history_redis:RedisHistoryStore",
    "redis+cluster://": "service.history_redis:RedisHistoryStore",
    "unix://": "service.history_redis:RedisHistoryStore",
}
URL_PREFIXES: tuple[str, ...] = tuple(BACKENDS)


Feedback = Literal["positive", "negative"]
NEGATIVES_MAX = 1000  # negative items kept per user for exclusion (Redis list; SQLite LIMIT)


@dataclass(frozen=True)
class Event:
    """One interaction as stored: external ids, epoch seconds, weight, optional event id, and
    its type: a positive is history; a negative only excludes the item for the user (both are
    in the log, for training)."""

    user_id: str
    item_id: str
    timestamp: int
    weight: float = 1.0
    event_id: str | None = None
    type: Feedback = "positive"


@dataclass(frozen=True)
class LogEntry:
    """One record of the durable log; `cursor` orders entries and resumes `read_log`."""

    cursor: str
    event: Event


@dataclass(frozen=True)
class ItemRecords:
    """Items changed through the API since training (PUT/DELETE /items, issue 20): the text
    of each item PUT (re-placed by every version loaded, until an export includes it) and the
    ids hidden by DELETE."""

    texts: dict[str, str]
    hidden: frozenset[str]


@dataclass(frozen=True)
class Erasure:
    """What `HistoryStore.erase` removed for one user."""

    history: int  # items of the online history
    log: int  # entries of the durable log
    markers: int  # idempotency markers of event ids (Redis; SQLite keeps them in the log rows)


class HistoryStore(Protocol):
    """What the service needs from a history backend. Errors: `StoreUnavailableError`."""

    def append(self, events: Sequence[Event]) -> list[bool]:
        """Store events; per event, True if new, False if its (user, event_id) was seen."""
        ...

    def recent(self, user_id: str, n: int) -> list[str]:
        """The user's newest positive item ids, newest first, at most n."""
        ...

    def recent_many(self, user_ids: Sequence[str], n: int) -> list[list[str]]:
        """`recent` for many users in one round trip."""
        ...

    def feedback_many(
        self, user_ids: Sequence[str], n: int
    ) -> tuple[list[list[str]], list[list[str]]]:
        """`recent_many`, and per user the items of their negative feedback (newest first, at
        most NEGATIVES_MAX), in one round trip: what a recommendation reads."""
        ...

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        """Up to `count` log entries strictly after cursor `after` (None: from the start)."""
        ...

    def erase(self, user_id: str) -> Erasure:
        """Remove the user's history, log entries and event-id markers (DELETE /users)."""
        ...

    def put_item(self, item_id: str, text: str) -> None:
        """Keep an item's text (PUT /items) and un-hide it, in one durable write."""
        ...

    def hide_item(self, item_id: str) -> None:
        """Hide an item (DELETE /items) and drop its PUT text if any, in one durable write."""
        ...

    def unhide_item(self, item_id: str) -> None:
        """Serve a hidden item again (POST /items/{id}/restore): drop it from the hidden ids."""
        ...

    def item_records(self) -> ItemRecords:
        """Every item PUT and every item hidden, for loading a version."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailableError when the store cannot serve."""
        ...

    def close(self) -> None: ...


def dedupe(events: Sequence[Event]) -> tuple[list[int], list[bool]]:
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


class _Backend(Protocol):
    def from_url(
        self, url: str, max_len: int, idempotency_ttl_s: int, log_max_len: int
    ) -> HistoryStore: ...


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
    for prefix, target in BACKENDS.items():
        if url.startswith(prefix):
            module, name = target.split(":")
            backend = cast(_Backend, getattr(importlib.import_module(module), name))
            return backend.from_url(url, max_len, idempotency_ttl_s, log_max_len)
    raise ValueError(
        f"unsupported history URL scheme {url.split(':', 1)[0]!r}: use "
        "sqlite:///path or redis://host:port/db"
    )
