"""POST /interactions through the real app: single, batch partial success, idempotency, API
keys, bounds, and the export of the durable log back to a CSV the training readers accept."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.app import create_app
from service.export_interactions import export_interactions
from service.history import open_history_store
from service.loader import LoadedArtifact
from tests.service.conftest import assert_error, make_settings


def items(loaded: LoadedArtifact, n: int) -> list[str]:
    return loaded.arrays.item_ids.to_list()[:n]


def test_single_interaction_is_stored(
    client: TestClient, loaded: LoadedArtifact, sqlite_url: str
) -> None:
    item = items(loaded, 1)[0]
    r = client.post(
        "/interactions",
        json={"user_id": "u", "item_id": item, "timestamp": "2024-01-02T03:04:05Z", "weight": 4.5},
    )
    assert r.status_code == 200
    assert r.json() == {"accepted": 1, "duplicates": 0, "rejected": [], "unknown_items": []}
    (entry,) = open_history_store(sqlite_url, max_len=5).read_log(None, 10)
    assert (entry.event.user_id, entry.event.item_id, entry.event.weight) == ("u", item, 4.5)
    assert entry.event.timestamp == 1704164645


def test_unknown_item_is_accepted_logged_and_reported(
    client: TestClient, loaded: LoadedArtifact, sqlite_url: str, tmp_path: Path
) -> None:
    """Test issue 16: an item the version does not know is kept for the next training run,
    reported as `unknown_item` (not as rejected input), and does not shape recommendations."""
    r = client.post("/interactions", json={"user_id": "new", "item_id": "brand-new", "weight": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
        "unknown_items": [{"index": 0, "item_id": "brand-new", "code": "unknown_item"}],
    }
    # nothing known for this user yet: the popular answer, the unknown item not among it
    rec = client.get("/recommend/new", params={"k": 5}).json()
    assert rec["source"] == "popular"
    assert "brand-new" not in {x["item_id"] for x in rec["items"]}
    # a known item next: only it forms the history, the unknown one is still ignored
    known = items(loaded, 1)[0]
    client.post("/interactions", json={"user_id": "new", "item_id": known})
    rec = client.get("/recommend/new", params={"k": 5}).json()
    assert rec["source"] == "history"
    assert not {"brand-new", known} & {x["item_id"] for x in rec["items"]}
    assert 'relrec_interactions_total{outcome="unknown_item"} 1.0' in client.get("/metrics").text
    # the durable log carries it to the next training run
    summary = export_interactions(sqlite_url, tmp_path / "log.csv")
    rows = (tmp_path / "log.csv").read_text().splitlines()[1:]
    assert summary.rows == 2 and rows[0].startswith("new,brand-new,2.0,")


def test_batch_is_a_partial_success(
    client: TestClient, loaded: LoadedArtifact, sqlite_url: str
) -> None:
    a, b = items(loaded, 2)
    batch = [
        {"user_id": "u1", "item_id": a},
        {"user_id": "u1", "item_id": "unknown-item"},
        {"user_id": "u2", "item_id": b, "weight": "heavy"},
        "not an object",
        {"user_id": "u2", "item_id": b, "extra": 1},
        {"user_id": "", "item_id": b},
        {"user_id": "u2", "item_id": b, "timestamp": "yesterday"},
        {"user_id": "u3", "item_id": b},
    ]
    r = client.post("/interactions", json={"interactions": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 3 and body["duplicates"] == 0
    rejected = {x["index"]: x for x in body["rejected"]}
    assert sorted(rejected) == [2, 3, 4, 5, 6]
    assert all(rejected[i]["code"] == "invalid_input" for i in (2, 3, 4, 5, 6))
    assert all(x["message"] for x in body["rejected"])
    assert body["unknown_items"] == [
        {"index": 1, "item_id": "unknown-item", "code": "unknown_item"}
    ]
    store = open_history_store(sqlite_url, max_len=5)
    assert store.recent_many(["u1", "u2", "u3"], 5) == [["unknown-item", a], [], [b]]


def test_event_ids_make_retries_idempotent(client: TestClient, loaded: LoadedArtifact) -> None:
    a, b = items(loaded, 2)
    batch = {
        "interactions": [
            {"user_id": "u", "item_id": a, "event_id": "e1"},
            {"user_id": "u", "item_id": b, "event_id": "e2"},
        ]
    }
    assert client.post("/interactions", json=batch).json()["duplicates"] == 0
    retry = client.post("/interactions", json=batch).json()
    assert retry == {"accepted": 2, "duplicates": 2, "rejected": [], "unknown_items": []}


def test_batch_size_and_body_size_are_bounded(
    tiny_artifact_dir: Path, sqlite_url: str, loaded: LoadedArtifact
) -> None:
    settings = make_settings(tiny_artifact_dir, sqlite_url, max_batch=3, max_body_bytes=4096)
    item = items(loaded, 1)[0]
    with TestClient(create_app(settings)) as c:
        batch = [{"user_id": "u", "item_id": item}] * 4
        assert_error(
            c.post("/interactions", json={"interactions": batch}), 413, "payload_too_large"
        )
        big = {"user_id": "u", "item_id": item, "event_id": "x" * 5000}
        assert_error(c.post("/interactions", json=big), 413, "payload_too_large")

        def chunked() -> object:  # no Content-Length: the bound applies while reading
            yield b'{"user_id": "u", "item_id": "'
            yield b"y" * 5000
            yield b'"}'

        r = c.post("/interactions", content=chunked(), headers={"content-type": "application/json"})
        assert_error(r, 413, "payload_too_large")
        assert_error(c.post("/interactions", json={"interactions": []}), 422, "invalid_input")
        too_long = {"user_id": "u" * 129, "item_id": item}
        assert_error(c.post("/interactions", json=too_long), 422, "invalid_input")


def test_api_keys_guard_writes_and_admin(
    tiny_artifact_dir: Path, sqlite_url: str, loaded: LoadedArtifact
) -> None:
    settings = make_settings(tiny_artifact_dir, sqlite_url, api_keys="k1,k2", admin_api_keys="root")
    one = {"user_id": "u", "item_id": items(loaded, 1)[0]}
    with TestClient(create_app(settings)) as c:
        assert_error(c.post("/interactions", json=one), 401, "unauthorized")
        assert_error(c.post("/interactions", json=one, headers={"X-API-Key": "k3"}), 401)
        assert_error(c.post("/interactions", json=one, headers={"X-API-Key": "k1x"}), 401)
        assert c.post("/interactions", json=one, headers={"X-API-Key": "k2"}).status_code == 200
        bearer = {"Authorization": "Bearer k1"}
        assert c.post("/interactions", json=one, headers=bearer).status_code == 200
        assert_error(c.post("/admin/reload", headers={"X-API-Key": "k1"}), 401)
        assert c.post("/admin/reload", headers={"X-API-Key": "root"}).status_code == 200
        # reads stay open
        assert c.get("/recommend/u").status_code == 200


def test_api_keys_are_never_logged_or_echoed(
    tiny_artifact_dir: Path, sqlite_url: str, caplog: object
) -> None:
    settings = make_settings(tiny_artifact_dir, sqlite_url, api_keys="sekrit-key")
    assert "sekrit-key" not in repr(settings) and "sekrit-key" not in str(settings)
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/interactions",
            json={"user_id": "u", "item_id": "x"},
            headers={"X-API-Key": "sekrit-key-wrong"},
        )
        assert "sekrit" not in r.text
    assert "sekrit" not in caplog.text  # type: ignore[attr-defined]


def test_export_interactions_round_trips_through_the_training_reader(
    client: TestClient, loaded: LoadedArtifact, sqlite_url: str, tmp_path: Path
) -> None:
    from training.readers import read_log

    a, b = items(loaded, 2)
    client.post(
        "/interactions",
        json={
            "interactions": [
                {"user_id": "u,1", "item_id": a, "timestamp": 1_700_000_000, "weight": 5},
                {"user_id": 'u"2', "item_id": b, "timestamp": 1_700_000_100},
            ]
        },
    )
    first = export_interactions(sqlite_url, tmp_path / "log.csv")
    assert first.rows == 2
    inter = read_log(first.path)
    assert sorted(inter.users.to_list()) == ['u"2', "u,1"]
    assert sorted(inter.weights.tolist()) == [1.0, 5.0]
    assert inter.timestamps is not None and sorted(inter.timestamps) == [
        1_700_000_000,
        1_700_000_100,
    ]
    # incremental: only what came after the cursor
    client.post("/interactions", json={"user_id": "u3", "item_id": a})
    later = export_interactions(sqlite_url, tmp_path / "more.csv", after=first.last_cursor)
    assert later.rows == 1
    assert read_log(later.path).users.to_list() == ["u3"]
