"""SQLite history backend (`sqlite:///path`): embedded, durable (WAL, synchronous=FULL).

One table `events` is both the log and the history: `recent()` reads the newest rows of a user
(the trim to `max_len` is the LIMIT). The protocol and the URL table are `service.history`'s.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from service.errors import StoreUnavailableError
from service.history import NEGATIVES_MAX, Erasure, Event, ItemRecords, LogEntry, dedupe

__all__ = ["SqliteHistoryStore"]


class SqliteHistoryStore:
    """SQLite file; one connection per thread (WAL lets readers run beside the one writer)."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS events ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL, item_id TEXT NOT NULL,"
        " ts INTEGER NOT NULL, weight REAL NOT NULL, event_id TEXT,"
        " type TEXT NOT NULL DEFAULT 'positive',"
        " UNIQUE (user_id, event_id))",
        "CREATE INDEX IF NOT EXISTS events_user_seq ON events (user_id, seq)",
        # PUT/DELETE /items (issue 20): texts of items placed at run time, hidden item ids
        "CREATE TABLE IF NOT EXISTS put_items (item_id TEXT PRIMARY KEY, text TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS hidden_items (item_id TEXT PRIMARY KEY)",
    )
    # Files created before issue 22 lack the `type` column: every row of theirs is a positive.
    _MIGRATE = "ALTER TABLE events ADD COLUMN type TEXT NOT NULL DEFAULT 'positive'"

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
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
            if "type" not in columns:
                conn.execute(self._MIGRATE)

    @classmethod
    def from_url(
        cls,
        url: str,
        max_len: int,
        idempotency_ttl_s: int = 0,
        log_max_len: int = 0,
    ) -> SqliteHistoryStore:
        """`sqlite:///rel/path` or `sqlite:////abs/path`; the TTL and log bound are Redis's
        (SQLite keeps every event: the events table is the log and the history)."""
        path = url.removeprefix("sqlite:///")
        if not path or path.startswith(":memory:"):
            raise ValueError(
                "sqlite history needs a file path (sqlite:///path/to/history.db);"
                " an in-memory database is not durable"
            )
        return cls(Path(path), max_len)

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
        order, dup = dedupe(events)
        new = [False] * len(events)
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i in order:
                if dup[i]:
                    continue
                e = events[i]
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events (user_id, item_id, ts, weight, event_id, type)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (e.user_id, e.item_id, e.timestamp, e.weight, e.event_id, e.type),
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
                    "SELECT item_id FROM events WHERE user_id = ? AND type = 'positive'"
                    " ORDER BY seq DESC LIMIT ?",
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

    def feedback_many(
        self, user_ids: Sequence[str], n: int
    ) -> tuple[list[list[str]], list[list[str]]]:
        return self.recent_many(user_ids, n), self._negatives_many(user_ids)

    def _negatives_many(self, user_ids: Sequence[str]) -> list[list[str]]:
        try:
            conn = self._conn()
            return [
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT item_id FROM events WHERE user_id = ? AND type = 'negative'"
                        " ORDER BY seq DESC LIMIT ?",
                        (u, NEGATIVES_MAX),
                    )
                ]
                for u in user_ids
            ]
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite history read failed: {exc}") from exc

    def read_log(self, after: str | None, count: int) -> list[LogEntry]:
        start = int(after) if after else 0
        try:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, user_id, item_id, ts, weight, event_id, type FROM events"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (start, count),
                )
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite log read failed: {exc}") from exc
        return [
            LogEntry(str(r[0]), Event(r[1], r[2], int(r[3]), float(r[4]), r[5], r[6])) for r in rows
        ]

    def erase(self, user_id: str) -> Erasure:
        """Delete the user's rows (history and log are one table), with `secure_delete` so
        the freed pages are zeroed, then checkpoint the WAL so the old pages leave it too."""
        conn = self._conn()
        try:
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("BEGIN IMMEDIATE")
            (positives,) = conn.execute(
                "SELECT count(*) FROM events WHERE user_id = ? AND type = 'positive'", (user_id,)
            ).fetchone()
            n = conn.execute("DELETE FROM events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreUnavailableError(f"sqlite history erase failed: {exc}") from exc
        return Erasure(history=int(positives), log=n, markers=0)

    def put_item(self, item_id: str, text: str) -> None:
        self._write_items(
            ("INSERT OR REPLACE INTO put_items (item_id, text) VALUES (?, ?)", (item_id, text)),
            ("DELETE FROM hidden_items WHERE item_id = ?", (item_id,)))

    def hide_item(self, item_id: str) -> None:
        self._write_items(
            ("INSERT OR IGNORE INTO hidden_items (item_id) VALUES (?)", (item_id,)),
            ("DELETE FROM put_items WHERE item_id = ?", (item_id,)))

    def unhide_item(self, item_id: str) -> None:
        self._write_items(("DELETE FROM hidden_items WHERE item_id = ?", (item_id,)))

    def _write_items(self, *statements: tuple[str, tuple[str, ...]]) -> None:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                conn.execute(sql, args)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StoreUnavailableError(f"sqlite item write failed: {exc}") from exc

    def item_records(self) -> ItemRecords:
        try:
            conn = self._conn()
            texts = dict(conn.execute("SELECT item_id, text FROM put_items ORDER BY item_id"))
            hidden = frozenset(r[0] for r in conn.execute("SELECT item_id FROM hidden_items"))
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"sqlite item read failed: {exc}") from exc
        return ItemRecords(texts, hidden)

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
