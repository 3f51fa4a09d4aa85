"""DELETE /users/{user_id} through the real app on both history stores (SQLite and a real
redis-server): the user's posted history, log entries and event markers are gone when read
back from the store directly, and the next export has nothing of theirs. Test issue #22.
"""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.export_interactions import export_interactions
from service.history import open_history_store
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings

GONE = "gone/1"


def post(c: TestClient, user: str, items: list[str]) -> None:
    batch = [
        {"user_id": user, "item_id": i, "event_id": f"{user}-{n}", "timestamp": 1_700_000_000 + n}
        for n, i in enumerate(items)
    ]
    assert c.post("/interactions", json={"interactions": batch}).json()["accepted"] == len(items)


def test_erasure_removes_history_and_log_of_one_user(
    tiny_artifact_dir: Path, history_url: str, loaded: LoadedArtifact, tmp_path: Path
) -> None:
    items = [str(x) for x in loaded.arrays.item_ids.ids[:4]]
    with TestClient(create_app(make_settings(tiny_artifact_dir, history_url))) as c:
        post(c, GONE, items)
        post(c, "kept", items[:2])
        assert c.get("/recommend/gone%2F1").json()["source"] == "history"
        r = c.delete("/users/gone%2F1")
        assert r.status_code == 200, r.text
        markers = 0 if history_url.startswith("sqlite") else 4
        assert r.json() == {
            "user_id": GONE,
            "history_removed": 4,
            "log_removed": 4,
            "markers_removed": markers,
        }
        assert c.get("/recommend/gone%2F1").json()["source"] == "popular"
        again = c.delete("/users/gone%2F1").json()  # idempotent: nothing left to remove
        assert (again["history_removed"], again["log_removed"], again["markers_removed"]) == (
            0,
        ) * 3
    # Read back from the store itself, not through the API.
    store = open_history_store(history_url, max_len=50)
    try:
        assert store.recent(GONE, 50) == []
        assert store.recent("kept", 50) == items[1::-1]
        assert [e.event.user_id for e in store.read_log(None, 100)] == ["kept", "kept"]
    finally:
        store.close()
    if history_url.startswith("sqlite"):
        db = sqlite3.connect(history_url.removeprefix("sqlite:///"))
        assert db.execute("SELECT count(*) FROM events WHERE user_id = ?", (GONE,)).fetchone() == (
            0,
        )
        db.close()
    else:
        client = redis.Redis.from_url(history_url, decode_responses=True)
        assert [k for k in client.scan_iter(match="*") if GONE in k] == []
        assert all(f["user"] != GONE for _, f in client.xrange("relrec:log"))
        client.close()
    summary = export_interactions(history_url, tmp_path / "log.csv")
    with open(summary.path, newline="") as f:
        assert [row["user"] for row in csv.DictReader(f)] == ["kept", "kept"]


def test_erasure_needs_a_write_or_admin_key_and_a_valid_id(
    tiny_artifact_dir: Path, sqlite_url: str
) -> None:
    settings = make_settings(
        tiny_artifact_dir,
        sqlite_url,
        api_keys="w-key",
        admin_api_keys="a-key",
        read_api_keys="r-key",
    )
    with TestClient(create_app(settings)) as c:
        assert_error(c.delete("/users/u"), 401, "unauthorized")
        assert_error(c.delete("/users/u", headers={"X-API-Key": "r-key"}), 401, "unauthorized")
        for key in ("w-key", "a-key"):
            r = c.delete("/users/u", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json()["history_removed"] == 0
        write = {"X-API-Key": "w-key"}
        assert_error(c.delete("/users/a%01b", headers=write), 422, "invalid_input")
        assert_error(c.delete("/users/" + "x" * 129, headers=write), 422, "invalid_input")
        assert_error(c.delete("/users/", headers=write), 422, "invalid_input")
