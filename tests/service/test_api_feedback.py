"""Interaction `type`: a negative never comes back to that user and is logged for training, on
both history stores (SQLite and a real redis-server). Test issue #22.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.export_interactions import export_interactions
from service.history import Event, open_history_store
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings


@pytest.fixture
def client(tiny_artifact_dir: Path, history_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_artifact_dir, history_url))) as c:
        yield c


def top(c: TestClient, user: str, **params: object) -> list[str]:
    r = c.get(f"/recommend/{user}", params={"k": 10, **params})
    assert r.status_code == 200, r.text
    return [it["item_id"] for it in r.json()["items"]]


def test_a_negative_is_never_recommended_again_and_is_not_history(
    client: TestClient, loaded: LoadedArtifact, history_url: str, tmp_path: Path
) -> None:
    user = str(loaded.arrays.user_ids.ids[5])
    before = top(client, user)
    r = client.post(
        "/interactions", json={"user_id": user, "item_id": before[0], "type": "negative"}
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1
    after = top(client, user)
    assert before[0] not in after
    assert after == top(client, user, exclude=before[0])  # as if excluded; nothing else moved
    # A new user: positives make the history, the negative only excludes.
    block2 = [i for i in loaded.arrays.item_ids.to_list() if i.endswith("-b2")]
    posts = [
        {"user_id": "neo", "item_id": i, "timestamp": 1_700_000_000 + n}
        for n, i in enumerate(block2[:3])
    ]
    client.post("/interactions", json={"interactions": posts})
    liked = top(client, "neo")
    client.post("/interactions", json={"user_id": "neo", "item_id": liked[0], "type": "negative"})
    body = client.get("/recommend/neo", params={"k": 10, "explain": True}).json()
    assert body["source"] == "history" and liked[0] not in [it["item_id"] for it in body["items"]]
    assert {b["item_id"] for it in body["items"] for b in it["because"]} <= set(block2[:3])
    # Only negatives: still the popular fallback, minus what was rejected.
    popular = top(client, "grumpy")
    client.post(
        "/interactions", json={"user_id": "grumpy", "item_id": popular[0], "type": "negative"}
    )
    body = client.get("/recommend/grumpy").json()
    assert (
        body["source"] == "popular" and [it["item_id"] for it in body["items"]][:9] == popular[1:]
    )
    # The store: not history, but in the log with its type; the export keeps it apart.
    store = open_history_store(history_url, max_len=50)
    try:
        assert store.recent("neo", 50) == block2[2::-1]
        assert store.recent("grumpy", 50) == []
        negatives = [e.event for e in store.read_log(None, 100) if e.event.type == "negative"]
        assert [(e.user_id, e.item_id) for e in negatives] == [
            (user, before[0]),
            ("neo", liked[0]),
            ("grumpy", popular[0]),
        ]
    finally:
        store.close()
    summary = export_interactions(
        history_url, tmp_path / "log.csv", negatives_out=tmp_path / "neg.csv"
    )
    assert (summary.rows, summary.negatives) == (3, 3)
    with open(tmp_path / "neg.csv", newline="") as f:
        assert [(r["user"], r["item"]) for r in csv.DictReader(f)] == [
            (e.user_id, e.item_id) for e in negatives
        ]
    with open(tmp_path / "log.csv", newline="") as f:
        assert [r["item"] for r in csv.DictReader(f)] == block2[:3]


def test_type_is_positive_or_negative(client: TestClient) -> None:
    for bad in ("neutral", "", 1, None, "NEGATIVE"):
        r = client.post("/interactions", json={"user_id": "u", "item_id": "i", "type": bad})
        assert_error(r, 422, "invalid_input")
    r = client.post(
        "/interactions",
        json={
            "interactions": [
                {"user_id": "u", "item_id": "i", "type": "meh"},
                {"user_id": "u", "item_id": "i", "type": "negative"},
            ]
        },
    )
    assert r.json()["accepted"] == 1 and r.json()["rejected"][0]["index"] == 0


def test_sqlite_files_from_before_the_type_column_are_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL,"
        " item_id TEXT NOT NULL, ts INTEGER NOT NULL, weight REAL NOT NULL, event_id TEXT,"
        " UNIQUE (user_id, event_id))"
    )
    db.execute("INSERT INTO events (user_id, item_id, ts, weight) VALUES ('u', 'old', 1, 1.0)")
    db.commit()
    db.close()
    store = open_history_store(f"sqlite:///{path}", max_len=5)
    try:
        store.append([Event("u", "bad", 2, type="negative"), Event("u", "new", 3)])
        assert store.recent("u", 5) == ["new", "old"]
        assert store.feedback_many(["u"], 5) == ([["new", "old"]], [["bad"]])
        assert [e.event.type for e in store.read_log(None, 10)] == [
            "positive",
            "negative",
            "positive",
        ]
    finally:
        store.close()
